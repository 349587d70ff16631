//! eject_models through the library API with two models (one test: the registry is
//! process-wide).

mod common;

use common::*;
use distorch_vision::loader::{ClipVision, LoadOptions};
use distorch_vision::plan::LoaderOptions;

#[test]
fn loading_with_eject_releases_other_models_and_they_reload() {
    let tmp = temp_dir("eject");
    let opts = |name: &str, eject: bool| LoadOptions {
        clip_vision: fixture(name)
            .join("model.safetensors")
            .display()
            .to_string(),
        loader: LoaderOptions {
            device: Some("cpu".into()),
            eject_models: eject,
            ..Default::default()
        },
        graphs_dir: Some(tmp.clone()),
        ..Default::default()
    };
    let px = distorch_vision::job::output::read_pixels(
        &fixture("siglip_f32").join("pixels.safetensors"),
    )
    .unwrap();
    let a = ClipVision::load(&opts("siglip_f32", true)).unwrap();
    assert!(a.is_loaded());
    let b = ClipVision::load(&opts("clip_quickgelu_f32", true)).unwrap();
    assert!(b.is_loaded());
    assert!(!a.is_loaded(), "loading b with eject_models released a");
    // a stays valid: its next encode reloads it, with the same results.
    let out = a.encode(px.view(), &[], 8).unwrap();
    assert!(a.is_loaded());
    let expected = read_tensors(&fixture("siglip_f32").join("expected.safetensors"));
    let got: Vec<f32> = out
        .get("last_hidden_state")
        .unwrap()
        .iter()
        .copied()
        .collect();
    let want = &expected
        .iter()
        .find(|t| t.0 == "last_hidden_state")
        .unwrap()
        .2;
    assert!(max_abs_diff(&got, want) < 1e-4);
    // Without eject, loading another model leaves the others alone.
    let c = ClipVision::load(&opts("clip_bf16", false)).unwrap();
    assert!(a.is_loaded() && b.is_loaded() && c.is_loaded());
    // A dropped model leaves the registry.
    drop(c);
    let d = ClipVision::load(&opts("clip_gelu_f16", true)).unwrap();
    assert!(!a.is_loaded() && !b.is_loaded() && d.is_loaded());
}
