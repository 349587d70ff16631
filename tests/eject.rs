//! eject_models through the library API with two models (one test: the registry is
//! process-wide).

mod common;

use common::*;
use distorch_vision::loader::{inventory, plan_model, ClipVision, LoadOptions};
use distorch_vision::model::Model;
use distorch_vision::plan::{Device, LoaderOptions};
use distorch_vision::ErrorKind;

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
    drop((a, b, d));

    // contract §5.6: the fit check counts what ejecting frees. A simulated cpu that holds either
    // model but not both: the second load fits only once the first is ejected.
    let resident = |name: &str| {
        let m = Model::open(&fixture(name).join("model.safetensors")).unwrap();
        let inv = inventory(Some("cpu=64GiB")).unwrap();
        let p = plan_model(&m, &opts(name, true).loader, &inv).unwrap();
        p.devices
            .iter()
            .find(|d| d.device == Device::Cpu)
            .unwrap()
            .resident_bytes
    };
    let (ra, rb) = (resident("siglip_f32"), resident("clip_quickgelu_f32"));
    let budget = ra.max(rb) + ra.min(rb) / 2;
    let tight = |name: &str, eject: bool| LoadOptions {
        simulate_devices: Some(format!("cpu={budget}b")),
        ..opts(name, eject)
    };
    let a = ClipVision::load(&tight("siglip_f32", true)).unwrap();
    // Without eject the second model does not fit beside the first, and the first stays.
    let e = ClipVision::load(&tight("clip_quickgelu_f32", false))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::DoesNotFit, "{e}");
    assert!(
        e.message().contains("the plan does not fit: cpu needs"),
        "{e}"
    );
    assert!(a.is_loaded());
    // With eject it loads: the first is released before the check.
    let b = ClipVision::load(&tight("clip_quickgelu_f32", true)).unwrap();
    assert!(b.is_loaded() && !a.is_loaded());
    // The ejected model reloads on its next encode, with the same results.
    let again = a.encode(px.view(), &[], 8).unwrap();
    assert!(a.is_loaded());
    assert_eq!(
        again.get("last_hidden_state").unwrap(),
        out.get("last_hidden_state").unwrap()
    );
}
