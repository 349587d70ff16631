//! A quick regression guard on a tiny model: the block pipeline must not be grossly slower
//! than one whole-model session (it fails only below half, never on noise). On MLAS, named:
//! it guards our runner, and on a model this small OpenVINO's fixed cost per session run
//! (about 0.5 ms, measured here: blocks 0.18× the whole session) is all there is to time.

mod common;

use common::*;
use distorch_vision::loader::LoadOptions;
use distorch_vision::plan::LoaderOptions;

#[test]
fn block_pipeline_is_not_grossly_slower_than_the_whole_model() {
    let tmp = temp_dir("bench_guard");
    let opts = LoadOptions {
        clip_vision: fixture("clip_gelu_f16")
            .join("model.safetensors")
            .display()
            .to_string(),
        loader: LoaderOptions {
            device: Some("cpu".into()),
            cpu_engine: distorch_vision::plan::CpuEngine::Mlas,
            ..Default::default()
        },
        graphs_dir: Some(tmp),
        ..Default::default()
    };
    let r = distorch_vision::bench::run(&opts, 8, 40, true).unwrap();
    let ratio = r.split_ratio.unwrap();
    eprintln!(
        "blocks {:.0} img/s, whole {:.0} img/s, ratio {ratio:.3}",
        r.blocks.images_per_s,
        r.whole.as_ref().unwrap().images_per_s
    );
    assert!(
        ratio > 0.5,
        "block pipeline at {ratio:.3}× the whole-model session"
    );
    assert_eq!(r.per_block_median_ms.len(), 5);
}
