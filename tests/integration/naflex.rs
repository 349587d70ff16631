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
    // 1:1, 1:4, 4:1, 2:3, 7:5 and 3:3 grids.
    assert_eq!(grids.len(), 6);
    assert!(grids.contains(&Grid::new(4, 16)) && grids.contains(&Grid::new(16, 4)));
    let expected = read_tensors(&fixture(NAME).join("expected.safetensors"));
    let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    for batch in [6, 4, 1] {
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
