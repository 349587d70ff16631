//! Parity of the image pipeline with ComfyUI's LoadImage + clip_preprocess run in PyTorch.
//!
//! The references in tests/fixtures/images/ were made by scripts/make_image_fixtures.py (see
//! its docstring for what each tensor is); these tests only read them.

use std::path::{Path, PathBuf};

use distorch_vision::image::{
    decode_bytes, decode_file, expand_inputs, preprocess, preprocess_comfy_batch,
    resize_bicubic_aa, Crop, PreprocessSpec, RgbImage, CLIP_MEAN, CLIP_STD, SIGLIP_MEAN,
    SIGLIP_STD,
};
use distorch_vision::ErrorKind;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

struct Refs {
    bytes: Vec<u8>,
    cases: Vec<Value>,
}

impl Refs {
    fn load() -> Refs {
        let dir = fixtures();
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        let cases = info["cases"].as_array().unwrap().clone();
        Refs { bytes, cases }
    }

    fn tensor(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, dtype, data) = self.tensor(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        let v = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (shape, v)
    }

    fn u8s(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let (shape, dtype, data) = self.tensor(name);
        assert_eq!(dtype, Dtype::U8, "{name}");
        (shape, data)
    }

    fn u16s(&self, name: &str) -> (Vec<usize>, Vec<u16>) {
        let (shape, dtype, data) = self.tensor(name);
        assert_eq!(dtype, Dtype::U16, "{name}");
        let v = data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        (shape, v)
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.cases.iter().filter(|c| c["kind"] == kind).collect()
    }
}

/// Files whose reference pipeline is known to differ from ours on purpose.
/// grey16: Pillow opens 16-bit grey PNGs as "I;16", ComfyUI's `mode == "I"` check misses it and
/// convert("RGB") clips every sample to 255 (white); we keep the high byte instead.
const KNOWN_DIVERGENT: [&str; 1] = ["grey16_21x17.png"];

fn spec(size: u32, crop: &str, family: &str) -> PreprocessSpec {
    let (mean, std) = match family {
        "clip" => (CLIP_MEAN, CLIP_STD),
        "siglip" => (SIGLIP_MEAN, SIGLIP_STD),
        f => panic!("family {f}"),
    };
    PreprocessSpec {
        size,
        mean,
        std,
        crop: crop.parse().unwrap(),
        patching: None,
    }
}

/// Deviation statistics between our normalised output and the reference, per the contract:
/// fraction within 1e-5, and the largest deviation in quanta (1/255/std of its channel).
struct Dev {
    n: usize,
    within: usize,
    max_abs: f32,
    max_quanta: f32,
}

fn deviation(ours: &[f32], theirs: &[f32], std: [f32; 3]) -> Dev {
    assert_eq!(ours.len(), theirs.len());
    let plane = ours.len() / 3;
    let mut d = Dev {
        n: ours.len(),
        within: 0,
        max_abs: 0.0,
        max_quanta: 0.0,
    };
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        let diff = (a - b).abs();
        assert!(diff.is_finite(), "non-finite value at {i}: {a} vs {b}");
        if diff <= 1e-5 {
            d.within += 1;
        }
        d.max_abs = d.max_abs.max(diff);
        let quantum = 1.0 / 255.0 / std[i / plane];
        d.max_quanta = d.max_quanta.max(diff / quantum);
    }
    d
}

fn check(label: &str, d: &Dev, lossless: bool) {
    let frac = d.within as f64 / d.n as f64;
    println!(
        "{label:<52} within 1e-5: {:>8.4}%  max |diff| {:.3e} = {:.3} quanta",
        100.0 * frac,
        d.max_abs,
        d.max_quanta
    );
    if lossless {
        assert!(
            frac >= 0.999,
            "{label}: only {:.4}% within 1e-5",
            100.0 * frac
        );
        assert!(
            d.max_quanta <= 1.0 + 1e-3,
            "{label}: deviation of {} quanta",
            d.max_quanta
        );
    } else {
        // Lossy formats: libjpeg-turbo / libwebp (PIL) and the Rust decoders round differently.
        assert!(
            d.max_quanta <= 8.0 + 1e-3,
            "{label}: deviation of {} quanta",
            d.max_quanta
        );
    }
}

fn decode_fixture(file: &str) -> RgbImage {
    decode_file(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn preprocess_matches_torch_q8() {
    let refs = Refs::load();
    let cases = refs.of_kind("q8");
    assert!(cases.len() >= 40, "only {} q8 cases", cases.len());
    let mut worst_lossy: f32 = 0.0;
    for case in cases {
        let file = case["file"].as_str().unwrap();
        if KNOWN_DIVERGENT.contains(&file) {
            continue;
        }
        let size = case["size"].as_u64().unwrap() as u32;
        let crop = case["crop"].as_str().unwrap();
        let lossless = case["lossless"].as_bool().unwrap();
        let (shape, q) = refs.u8s(case["tensor"].as_str().unwrap());
        assert_eq!(shape, vec![3, size as usize, size as usize]);
        let img = decode_fixture(file);
        let hw = case["decoded_hw"].as_array().unwrap();
        assert_eq!(
            (img.height as u64, img.width as u64),
            (hw[0].as_u64().unwrap(), hw[1].as_u64().unwrap()),
            "{file}: decoded size (EXIF orientation applied?)"
        );
        for family in ["clip", "siglip"] {
            let sp = spec(size, crop, family);
            let ours = preprocess(&img, &sp).unwrap();
            let plane = (size * size) as usize;
            // torch: (q / 255.0 - mean) / std, all in f32.
            let theirs: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as f32 / 255.0 - sp.mean[i / plane]) / sp.std[i / plane])
                .collect();
            let d = deviation(&ours, &theirs, sp.std);
            check(&format!("{file} {size} {crop} {family}"), &d, lossless);
            if !lossless {
                worst_lossy = worst_lossy.max(d.max_quanta);
            }
        }
    }
    println!("worst lossy-format deviation: {worst_lossy:.3} quanta");
}

#[test]
fn preprocess_matches_torch_f32() {
    let refs = Refs::load();
    let cases = refs.of_kind("f32");
    assert!(!cases.is_empty());
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as u32;
        let crop = case["crop"].as_str().unwrap();
        let family = case["family"].as_str().unwrap();
        let (shape, theirs) = refs.f32s(case["tensor"].as_str().unwrap());
        assert_eq!(shape, vec![3, size as usize, size as usize]);
        let sp = spec(size, crop, family);
        let ours = preprocess(&decode_fixture(file), &sp).unwrap();
        let d = deviation(&ours, &theirs, sp.std);
        check(
            &format!("{file} {size} {crop} {family} (f32)"),
            &d,
            case["lossless"].as_bool().unwrap(),
        );
        // The normalisation arithmetic itself is the same as torch's: bit-identical whenever
        // the quantised value agrees.
        assert!(d.within == d.n || d.max_quanta <= 1.0 + 1e-3);
    }
}

#[test]
fn resize_matches_torch_interpolate() {
    let refs = Refs::load();
    let cases = refs.of_kind("raw");
    assert!(!cases.is_empty());
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let hw = case["out_hw"].as_array().unwrap();
        let (oh, ow) = (
            hw[0].as_u64().unwrap() as u32,
            hw[1].as_u64().unwrap() as u32,
        );
        let (shape, theirs) = refs.f32s(case["tensor"].as_str().unwrap());
        assert_eq!(shape, vec![oh as usize, ow as usize, 3]);
        let ours = resize_bicubic_aa(&decode_fixture(file), oh, ow).unwrap();
        let mut max = 0.0f32;
        let mut exact = 0usize;
        for (&a, &b) in ours.data.iter().zip(&theirs) {
            max = max.max((a - b).abs());
            exact += (a == b) as usize;
        }
        println!(
            "{file:<24} -> {ow}x{oh}: bit-exact {:>7.3}%  max |diff| {max:.3e}",
            100.0 * exact as f64 / theirs.len() as f64
        );
        // Bit-identical: same weights, same operation order, same fused multiply-adds.
        assert_eq!(
            exact,
            theirs.len(),
            "{file}: raw interpolation differs by up to {max}"
        );
    }
}

#[test]
fn decoded_pixels_match_pil() {
    let refs = Refs::load();
    for case in refs.of_kind("pixels") {
        let file = case["file"].as_str().unwrap();
        if KNOWN_DIVERGENT.contains(&file) {
            continue;
        }
        let (shape, theirs) = refs.u8s(case["tensor"].as_str().unwrap());
        let img = decode_fixture(file);
        assert_eq!(
            shape,
            vec![img.height as usize, img.width as usize, 3],
            "{file}"
        );
        let mut max = 0i32;
        let mut differ = 0usize;
        for (&a, &b) in img.data.iter().zip(&theirs) {
            let a = (a * 255.0).round() as i32;
            let d = (a - b as i32).abs();
            max = max.max(d);
            differ += (d != 0) as usize;
        }
        println!(
            "{file:<24} decoded: {differ} of {} values differ from PIL, max {max}/255",
            theirs.len()
        );
        if case["lossless"].as_bool().unwrap() {
            assert_eq!(max, 0, "{file}");
        } else {
            assert!(max <= 8, "{file}: max {max}");
        }
    }
}

#[test]
fn sixteen_bit_pngs_keep_the_high_byte() {
    let refs = Refs::load();
    for case in refs.of_kind("source16") {
        let file = case["file"].as_str().unwrap();
        let (shape, src) = refs.u16s(case["tensor"].as_str().unwrap());
        let img = decode_fixture(file);
        assert_eq!(shape[0], img.height as usize);
        assert_eq!(shape[1], img.width as usize);
        let channels = if shape.len() == 3 { shape[2] } else { 1 };
        for (p, px) in img.data.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                let s = src[p * channels + if channels == 3 { c } else { 0 }];
                assert_eq!(v, (s >> 8) as f32 / 255.0, "{file} pixel {p} channel {c}");
            }
        }
    }
}

// ---------------------------------------------------------------- errors and edge cases

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("image_parity_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `w`×`h`, with one tiny (invalid-length) IDAT.
fn png_header(w: u32, h: u32, bit_depth: u8, color_type: u8) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |tag: &[u8], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let mut td = tag.to_vec();
        td.extend(data);
        png.extend(&td);
        png.extend(crc32(&td).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([bit_depth, color_type, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn decoding_bombs_are_refused() {
    let e = decode_bytes(&png_header(100_000, 100_000, 8, 2), "bomb.png").unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("bomb.png"), "{e}");
    assert!(e.message().contains("100000x100000"), "{e}");
    assert!(e.message().contains("16384x16384"), "{e}");

    // Within the side limit, but 16000×16000 RGBA at 16 bits is 2 GB.
    let e = decode_bytes(&png_header(16_000, 16_000, 16, 6), "wide.png").unwrap_err();
    println!("{e}");
    assert!(e.message().contains("wide.png"), "{e}");
    assert!(e.message().contains("MiB"), "{e}");

    // A header that is plausible but whose pixel data is missing: an error, not a panic.
    let e = decode_bytes(&png_header(64, 64, 8, 2), "short.png").unwrap_err();
    println!("{e}");
    assert!(e.message().contains("short.png"), "{e}");
}

#[test]
fn corrupt_and_empty_files_are_clear_errors() {
    let dir = scratch("corrupt");
    let good = std::fs::read(fixtures().join("down_97x61.png")).unwrap();

    for (name, bytes) in [
        ("truncated.png", good[..good.len() / 2].to_vec()),
        ("header_only.png", good[..40].to_vec()),
        (
            "garbage.png",
            b"\x89PNG\r\n\x1a\nthis is not a png at all".to_vec(),
        ),
        (
            "truncated.jpg",
            std::fs::read(fixtures().join("plain_64x48.jpg")).unwrap()[..300].to_vec(),
        ),
        ("empty.png", Vec::new()),
        ("notes.txt", b"hello, not an image".to_vec()),
        ("noext", b"GIF89a\x01".to_vec()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        match decode_file(&p) {
            Err(e) => {
                println!("{e}");
                assert!(e.message().contains(name), "{e}");
                assert_ne!(e.kind(), ErrorKind::NotFound);
            }
            // A truncated JPEG may decode (zune-jpeg fills what is missing); it must be sane.
            Ok(img) => {
                assert!(name.ends_with(".jpg"), "{name} decoded");
                assert_eq!(img.data.len(), (img.width * img.height * 3) as usize);
            }
        }
    }
    let e = decode_file(&dir.join("empty.png")).unwrap_err();
    assert!(e.message().contains("empty"), "{e}");
    let e = decode_file(&dir.join("notes.txt")).unwrap_err();
    assert!(e.message().contains("not a recognised image"), "{e}");

    // The extension does not matter when the content is an image.
    std::fs::write(dir.join("photo.dat"), &good).unwrap();
    let img = decode_file(&dir.join("photo.dat")).unwrap();
    assert_eq!((img.width, img.height), (97, 61));

    let e = decode_file(&dir.join("missing.png")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("missing.png"), "{e}");
}

#[test]
fn every_prefix_of_every_fixture_decodes_or_errors() {
    // No panics on any truncation of any supported format.
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") || name.ends_with(".safetensors") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let step = (bytes.len() / 40).max(1);
        for n in (0..bytes.len()).step_by(step) {
            if let Ok(img) = decode_bytes(&bytes[..n], &name) {
                let _ = preprocess(&img, &PreprocessSpec::clip(16)).unwrap();
            }
        }
    }
}

#[test]
fn folder_expansion_order() {
    let dir = scratch("expand");
    for f in [
        "b.png",
        "a.JPG",
        "sub/c.webp",
        "sub/deeper/a.tiff",
        "Z.gif",
        "notes.md",
        "x.bmp",
        "sub/skip.json",
        "y.Tif",
        "q.jpeg",
    ] {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    // A file given explicitly is kept whatever its extension; a .txt is a list of paths
    // (relative to it); a file reached twice (b.png: through the folder, then by name) once.
    std::fs::write(dir.join("list.txt"), "# picked\nsub/c.webp\n\nq.jpeg\n").unwrap();
    let explicit = dir.join("notes.md");
    let got = expand_inputs(&[
        explicit.clone(),
        dir.join("list.txt"),
        dir.clone(),
        dir.join("b.png"),
    ])
    .unwrap();
    let rel: Vec<String> = got
        .iter()
        .map(|p| {
            p.strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    assert_eq!(
        rel,
        vec![
            "notes.md",
            "sub/c.webp",
            "q.jpeg",
            "Z.gif",
            "a.JPG",
            "b.png",
            "sub/deeper/a.tiff",
            "x.bmp",
            "y.Tif",
        ]
    );
    let e = expand_inputs(&[dir.join("nope")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("nope"), "{e}");
    assert!(expand_inputs(&[]).unwrap().is_empty());
}

#[test]
fn comfy_batch_channels_and_shapes() {
    let (b, h, w) = (2usize, 37usize, 53usize);
    let rgb: Vec<f32> = (0..b * h * w * 3)
        .map(|i| ((i * 7919) % 1000) as f32 / 999.0)
        .collect();
    let rgba: Vec<f32> = rgb
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 0.123])
        .collect();
    for crop in [Crop::Center, Crop::None] {
        let sp = PreprocessSpec::clip(32).with_crop(crop);
        let a = preprocess_comfy_batch(&rgb, b, h, w, 3, &sp).unwrap();
        let c = preprocess_comfy_batch(&rgba, b, h, w, 4, &sp).unwrap();
        assert_eq!(a.shape(), &[2, 3, 32, 32]);
        assert_eq!(a, c);
        // Each batch item equals the single-image path.
        for i in 0..b {
            let img = RgbImage {
                width: w as u32,
                height: h as u32,
                data: rgb[i * h * w * 3..(i + 1) * h * w * 3].to_vec(),
            };
            let one = preprocess(&img, &sp).unwrap();
            assert_eq!(
                a.index_axis(ndarray::Axis(0), i)
                    .iter()
                    .copied()
                    .collect::<Vec<_>>(),
                one
            );
        }
    }
    // Grey: C = 1 is the same as the value repeated over RGB.
    let grey: Vec<f32> = (0..h * w).map(|i| (i % 255) as f32 / 254.0).collect();
    let grey3: Vec<f32> = grey.iter().flat_map(|&v| [v, v, v]).collect();
    let sp = PreprocessSpec::siglip(16);
    assert_eq!(
        preprocess_comfy_batch(&grey, 1, h, w, 1, &sp).unwrap(),
        preprocess_comfy_batch(&grey3, 1, h, w, 3, &sp).unwrap()
    );

    // Errors: wrong length, bad channel count, zero sides, overflow.
    let e = preprocess_comfy_batch(&rgb[1..], b, h, w, 3, &sp).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("2x37x53x3"), "{e}");
    assert!(preprocess_comfy_batch(&rgb, b, h, w * 3, 1, &sp).is_ok());
    let e = preprocess_comfy_batch(&rgb, b, h, w * 3 / 2, 2, &sp).unwrap_err();
    assert!(e.message().contains("channels"), "{e}");
    assert!(preprocess_comfy_batch(&[], 1, 0, 5, 3, &sp).is_err());
    assert!(preprocess_comfy_batch(&[], 3, 0, 0, 3, &sp).is_err());
    assert!(preprocess_comfy_batch(&[], usize::MAX, usize::MAX, 2, 3, &sp).is_err());
    let empty = preprocess_comfy_batch(&[], 0, 10, 10, 3, &sp).unwrap();
    assert_eq!(empty.shape(), &[0, 3, 16, 16]);
    // NaN and out-of-range input: no panic.
    let odd = vec![f32::NAN, f32::INFINITY, -3.0, 7.0, 0.5, 0.25];
    assert!(preprocess_comfy_batch(&odd, 1, 1, 2, 3, &sp).is_ok());
}

#[test]
fn rgba_and_grey_files_drop_alpha_and_replicate() {
    let img = decode_fixture("grey_40x30.png");
    assert!(img
        .data
        .chunks_exact(3)
        .all(|p| p[0] == p[1] && p[1] == p[2]));
    let img = decode_fixture("rgba_33x50.png");
    assert_eq!(img.data.len(), 33 * 50 * 3);
}

#[test]
fn corrupted_bytes_never_panic() {
    // Deterministic byte flips in every fixture: each must decode to something sane or fail
    // with an error naming the file.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") || name.ends_with(".safetensors") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        for _ in 0..60 {
            let mut b = bytes.clone();
            for _ in 0..(1 + next() % 4) {
                let i = (next() as usize) % b.len();
                b[i] ^= (next() % 255 + 1) as u8;
            }
            match decode_bytes(&b, &name) {
                Ok(img) => {
                    assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
                    let _ = preprocess(&img, &PreprocessSpec::clip(8)).unwrap();
                }
                Err(e) => assert!(e.message().contains(&name), "{e}"),
            }
        }
    }
}

#[test]
fn palette_tiffs_decode_as_pillow_does() {
    // Reference pixels from Pillow (scripts/make_palette_tiff_fixtures.py).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiff");
    for name in ["palette_lzw_24x16.tif", "palette_raw_16colours_19x13.tif"] {
        let path = dir.join(name);
        let meta: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.rgb.json"))).unwrap(),
        )
        .unwrap();
        let want = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
        let img = decode_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (img.height as u64, img.width as u64),
            (
                meta["height"].as_u64().unwrap(),
                meta["width"].as_u64().unwrap()
            ),
            "{name}"
        );
        let got: Vec<u8> = img.data.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(got, want, "{name}: pixels differ from Pillow's");
        // Any truncation is an error or a sane image, never a panic.
        let bytes = std::fs::read(&path).unwrap();
        for n in (0..bytes.len()).step_by(7) {
            if let Ok(img) = decode_bytes(&bytes[..n], name) {
                assert_eq!(img.data.len(), (img.width * img.height * 3) as usize);
            }
        }
    }
}

#[test]
fn decoder_messages_stay_on_one_line() {
    // An APP0 marker with a length below 2: zune-jpeg's message ends in a newline.
    let e = decode_bytes(b"\xff\xd8\xff\xe0\x00\x01\x00\x00", "bad.jpg").unwrap_err();
    assert!(!e.message().contains('\n'), "{e:?}");
    assert!(!e.message().contains("\\n"), "{e:?}");
    assert!(e.message().contains("invalid length:1"), "{e}");
}
