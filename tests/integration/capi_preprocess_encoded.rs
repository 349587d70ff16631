//! `dv_preprocess_encoded`: image file bytes → the pixels the CLI's `encode --images` makes
//! (the Python Ray encoder's decoder), and its errors.

use std::ffi::c_char;

use crate::common::capi::*;
use distorch_vision::image::Crop;
use distorch_vision::job::batch::preprocess_file;
use distorch_vision::model::Model;

type PreprocessFn =
    unsafe extern "C" fn(u64, *const u8, usize, *const c_char, i32, *mut f32, usize) -> Status;

fn preprocess_fn() -> PreprocessFn {
    api(); // loads and initialises the plugin first
           // SAFETY: the plugin is our own cdylib; the type mirrors distorch_vision.h.
    let lib = Box::leak(Box::new(
        unsafe { libloading::Library::new(plugin_path()) }.expect("load plugin"),
    ));
    *unsafe { lib.get::<PreprocessFn>(b"dv_preprocess_encoded\0") }
        .expect("symbol dv_preprocess_encoded")
}

#[test]
fn equals_the_cli_preprocessing_and_names_bad_images() {
    let api = api();
    let f = preprocess_fn();
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let h = api.load(&model);
    let m = Model::open(&model).unwrap();
    let s = m.config.image_size;
    let mut px = vec![0f32; 3 * s * s];
    let name = cstring("the-name.png");
    for (image, crop, code) in [
        ("exif6_40x24.jpg", Crop::Center, DV_CROP_CENTER),
        ("rgba_33x50.png", Crop::None, DV_CROP_NONE),
        ("lossy_37x29.webp", Crop::Center, DV_CROP_CENTER),
    ] {
        let path = root().join("tests/fixtures/images").join(image);
        let bytes = std::fs::read(&path).unwrap();
        let st = unsafe {
            f(
                h,
                bytes.as_ptr(),
                bytes.len(),
                name.as_ptr(),
                code,
                px.as_mut_ptr(),
                px.len(),
            )
        };
        assert_eq!(st, DV_OK, "{image}: {}", api.last_error());
        let cli = preprocess_file(&path, &m.config.preprocess_spec(crop))
            .unwrap()
            .values;
        assert_eq!(px, cli, "{image}");
    }
    let junk = b"not an image at all";
    let st = unsafe {
        f(
            h,
            junk.as_ptr(),
            junk.len(),
            name.as_ptr(),
            0,
            px.as_mut_ptr(),
            px.len(),
        )
    };
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(
        api.last_error().contains("the-name.png"),
        "{}",
        api.last_error()
    );
    let st = unsafe {
        f(
            h,
            junk.as_ptr(),
            junk.len(),
            name.as_ptr(),
            0,
            px.as_mut_ptr(),
            px.len() - 1,
        )
    };
    assert_eq!(st, DV_ERR_SIZE_MISMATCH, "{}", api.last_error());
    let st = unsafe {
        f(
            h,
            junk.as_ptr(),
            junk.len(),
            name.as_ptr(),
            7,
            px.as_mut_ptr(),
            px.len(),
        )
    };
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(
        api.last_error().contains("crop is 7"),
        "{}",
        api.last_error()
    );
    let st = unsafe {
        f(
            h,
            std::ptr::null(),
            0,
            name.as_ptr(),
            0,
            px.as_mut_ptr(),
            px.len(),
        )
    };
    assert_eq!(st, DV_ERR_NULL_POINTER);
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    let st = unsafe {
        f(
            h,
            junk.as_ptr(),
            junk.len(),
            name.as_ptr(),
            0,
            px.as_mut_ptr(),
            px.len(),
        )
    };
    assert_eq!(st, DV_ERR_INVALID_HANDLE);
}
