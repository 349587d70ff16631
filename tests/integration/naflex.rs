//! SigLIP2 naflex (contract §2.1b, §3, §4b): parity with Hugging Face's `Siglip2VisionModel`
//! given the same patches, grids and mask, at six aspect ratios (1:4 and 4:1 among them) in one
//! padded batch; a mixed batch equals each image alone; image-level parity with HF's processor
//! and model; ComfyUI's `siglip2_preprocess` reproduced bit for bit.

use crate::common::*;
use distorch_vision::image::{Grid, Pixels, PixelsView};
use distorch_vision::loader::{ClipVision, LoadOptions};
use distorch_vision::plan::LoaderOptions;

const NAME: &str = "siglip2_naflex_f32";
const TOL: f32 = 1e-4;

fn load(graphs: &std::path::Path) -> ClipVision {
    ClipVision::load(&LoadOptions {
        clip_vision: fixture(NAME)
            .join("model.safetensors")
            .display()
            .to_string(),
        loader: LoaderOptions {
            device: Some("cpu".into()),
            ..Default::default()
        },
        graphs_dir: Some(graphs.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

fn fixture_patches() -> (ndarray::Array3<f32>, Vec<Grid>) {
    let px = distorch_vision::job::output::read_pixels(&fixture(NAME).join("pixels.safetensors"))
        .unwrap();
    match px {
        Pixels::Patches { values, grids } => (values, grids),
        Pixels::Square(_) => panic!("the naflex fixture holds patches"),
    }
}

const ALL: [&str; 4] = [
    "last_hidden_state",
    "image_embeds",
    "penultimate_hidden_states",
    "all_hidden_states",
];

#[test]
fn library_encode_matches_hugging_face_in_mixed_and_single_batches() {
    let tmp = temp_dir("naflex_lib");
    let cv = load(&tmp);
    let (values, grids) = fixture_patches();
    // 1:1, 1:4, 4:1, 2:3, 7:5, 3:3 and one-column grids.
    assert_eq!(grids.len(), 7);
    for g in [Grid::new(4, 16), Grid::new(16, 4), Grid::new(12, 1)] {
        assert!(grids.contains(&g), "{g}");
    }
    let expected = read_tensors(&fixture(NAME).join("expected.safetensors"));
    let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    for batch in [7, 4, 1] {
        let px = PixelsView::Patches {
            values: values.view(),
            grids: &grids,
        };
        let res = cv.encode(px, &all, batch).unwrap();
        assert_eq!(res.grids.as_deref(), Some(&grids[..]));
        for (name, shape, want) in &expected {
            let got = res.get(name).unwrap();
            assert_eq!(got.shape(), &shape[..], "{name}");
            let got: Vec<f32> = got.iter().copied().collect();
            let d = max_abs_diff(&got, want);
            eprintln!("naflex batch {batch} {name}: max |diff| {d:.2e}");
            assert!(d <= TOL, "batch {batch} {name}: {d}");
        }
    }
}

#[test]
fn a_mixed_batch_equals_each_image_alone_whatever_the_padding_holds() {
    let tmp = temp_dir("naflex_alone");
    let cv = load(&tmp);
    let (values, grids) = fixture_patches();
    let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    // The padded rows hold garbage: it must not reach any valid token.
    let mut noisy = values.clone();
    for (i, g) in grids.iter().enumerate() {
        for (k, v) in noisy
            .slice_mut(ndarray::s![i, g.patches().., ..])
            .iter_mut()
            .enumerate()
        {
            *v = 50.0 * ((k % 7) as f32 - 3.0);
        }
    }
    let mixed = cv
        .encode(
            PixelsView::Patches {
                values: noisy.view(),
                grids: &grids,
            },
            &all,
            7,
        )
        .unwrap();
    for (i, g) in grids.iter().enumerate() {
        // Alone: only its own patch rows, no padding at all.
        let own = values.slice(ndarray::s![i..i + 1, ..g.patches(), ..]);
        let alone = cv
            .encode(
                PixelsView::Patches {
                    values: own,
                    grids: std::slice::from_ref(g),
                },
                &all,
                1,
            )
            .unwrap();
        for name in ALL {
            let a = mixed.get(name).unwrap();
            let b = alone.get(name).unwrap();
            assert_eq!(&a.shape()[1..], &b.shape()[1..], "{name}");
            let a: Vec<f32> = a.index_axis(ndarray::Axis(0), i).iter().copied().collect();
            let b: Vec<f32> = b.iter().copied().collect();
            let d = max_abs_diff(&a, &b);
            assert!(d <= 1e-5, "image {i} ({g}) {name}: {d}");
        }
    }
}

#[test]
fn comfyui_siglip2_preprocess_is_reproduced_bit_for_bit() {
    use distorch_vision::image::{self, Patching, PreprocessSpec, SIGLIP_MEAN, SIGLIP_STD};
    let refs = read_any_tensors(&fixture(NAME).join("comfy_pixels.safetensors"));
    let mut checked = 0;
    for (key, shape, q8) in refs.iter().filter(|t| t.0.ends_with("__q8")) {
        let (file, rest) = key.split_once("__").unwrap();
        let (p, n) = rest
            .trim_end_matches("__q8")
            .trim_start_matches('p')
            .split_once("_n")
            .unwrap();
        let patching = Patching {
            patch_size: p.parse().unwrap(),
            num_patches: n.parse().unwrap(),
        };
        let grid = &refs
            .iter()
            .find(|t| t.0 == key.replace("__q8", "__grid"))
            .unwrap()
            .2;
        let spec = PreprocessSpec {
            size: 0,
            mean: SIGLIP_MEAN,
            std: SIGLIP_STD,
            crop: Default::default(),
            patching: Some(patching),
        };
        let img = image::decode_file(&root().join("tests/fixtures/images").join(file)).unwrap();
        let got = image::prepare(&img, &spec).unwrap();
        let g = got.grid.unwrap();
        assert_eq!([g.rows as f64, g.cols as f64], [grid[0], grid[1]], "{key}");
        assert_eq!(shape, &vec![g.patches(), patching.patch_len()], "{key}");
        let rows = g.patches() * patching.patch_len();
        for (k, (&v, &q)) in got.values[..rows].iter().zip(q8).enumerate() {
            let want = ((q as f32) / 255.0 - 0.5) / 0.5;
            assert_eq!(v, want, "{key} value {k}");
        }
        assert!(
            got.values[rows..].iter().all(|&v| v == 0.0),
            "{key} padding"
        );
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn images_match_hugging_face_processor_and_model() {
    // Each image through our preprocessing (ComfyUI's) and graphs, against HF's own processor
    // and model: the same grids, and cosine ≥ 0.999 per image.
    use distorch_vision::image;
    let tmp = temp_dir("naflex_images");
    let cv = load(&tmp);
    let refs = read_any_tensors(&fixture(NAME).join("images_expected.safetensors"));
    let st = distorch_vision::model::SafeTensors::open(
        &fixture(NAME).join("images_expected.safetensors"),
    )
    .unwrap();
    let files: Vec<String> = serde_json::from_str(&st.metadata()["inputs"]).unwrap();
    let spec = cv.model().config.preprocess_spec(Default::default());
    let rows: Vec<_> = files
        .iter()
        .map(|f| {
            let img = image::decode_file(&root().join("tests/fixtures/images").join(f)).unwrap();
            image::prepare(&img, &spec).unwrap()
        })
        .collect();
    let px = Pixels::from_prepared(rows, &spec).unwrap();
    let res = cv.encode(px.view(), &[], 4).unwrap();
    let grids = res.grids.clone().unwrap();
    let want = |name: &str| &refs.iter().find(|t| t.0 == name).unwrap().2;
    let shapes = want("spatial_shapes");
    for (i, g) in grids.iter().enumerate() {
        assert_eq!(
            [g.rows as f64, g.cols as f64],
            [shapes[2 * i], shapes[2 * i + 1]],
            "{}",
            files[i]
        );
    }
    let last = res.get("last_hidden_state").unwrap();
    let (t, d) = (last.shape()[1], last.shape()[2]);
    let embeds = res.get("image_embeds").unwrap();
    for (i, g) in grids.iter().enumerate() {
        let n = g.patches() * d;
        let got: Vec<f32> = last.iter().skip(i * t * d).take(n).copied().collect();
        let ref_last = &want("last_hidden_state")[i * t * d..i * t * d + n];
        let c = cosine64(&got, ref_last);
        let e: Vec<f32> = embeds
            .index_axis(ndarray::Axis(0), i)
            .iter()
            .copied()
            .collect();
        let ce = cosine64(&e, &want("image_embeds")[i * d..(i + 1) * d]);
        eprintln!(
            "{} ({g}): last_hidden_state cosine {c:.6}, image_embeds cosine {ce:.6}",
            files[i]
        );
        assert!(c >= 0.999 && ce >= 0.999, "{}: {c} {ce}", files[i]);
    }
}

fn cosine64(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}
