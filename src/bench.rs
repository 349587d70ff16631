//! `bench`: the block pipeline against one whole-model session on the same weights and
//! pixels, in one process, so the split overhead is a ratio rather than two noisy numbers.
//! For a naflex model the batch mixes aspect ratios, and the padded batch (one pass, a key
//! mask) is also timed against encoding each image alone, interleaved.

use std::time::Instant;

use ndarray::{Array3, Array4};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use serde::Serialize;

use crate::export::{self, Granularity};
use crate::image::{Grid, Patching, Pixels};
use crate::loader::{activation_bytes, ClipVision, LoadOptions};
use crate::runtime::environment;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub session_build_s: f64,
    pub first_output_s: f64,
    pub images_per_s: f64,
    pub median_batch_s: f64,
}

impl Figures {
    /// The figures of `batch` images a pass, from the timed passes' seconds.
    fn of(session_build_s: f64, first_output_s: f64, batch: usize, times: &mut [f64]) -> Figures {
        let med = median(times);
        Figures {
            session_build_s,
            first_output_s,
            images_per_s: batch as f64 / med,
            median_batch_s: med,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub family: String,
    pub batch_size: usize,
    pub iters: usize,
    pub threads: usize,
    /// The compute dtype, and the engine of the CPU blocks (and of the whole-model session).
    pub dtype: crate::export::ComputeDtype,
    pub cpu_engine: crate::plan::Engine,
    pub blocks: Figures,
    pub per_block_median_ms: Vec<(String, f64)>,
    pub whole: Option<Figures>,
    /// blocks images/s ÷ whole images/s.
    pub split_ratio: Option<f64>,
    /// Peak RSS once the block pipeline has run (before the whole-model session exists).
    pub blocks_peak_rss_bytes: u64,
    /// Peak RSS of the process at the end (both sessions).
    pub peak_rss_bytes: u64,
    pub model_bytes: u64,
    /// What the blocks' peak RSS should stay under: 1.25 × the fp32 weight bytes plus
    /// [`activation_bytes`] (the fit check's activation estimate) for this batch.
    pub rss_budget_bytes: u64,
    /// RSS once ONNX Runtime is loaded, before the model: the runtime's own footprint.
    pub baseline_rss_bytes: u64,
    /// `within` / `over` the budget, or `not_applicable` when the budget is below the
    /// runtime's own footprint (tiny models), where the comparison means nothing.
    pub rss_verdict: String,
    /// Weight bytes uploaded host → GPU on every pass (CPU-homed blocks executed on a GPU).
    pub streamed_bytes_per_pass: u64,
    /// Uploads through the staging double buffer over the timed passes (all zero when
    /// nothing is streamed, or streamed without a staging).
    pub uploads: crate::runtime::gpu::UploadStats,
    /// Micro-batch size of the timed passes (`--micro-batch`), if any.
    pub micro_batch: Option<usize>,
    /// Device copies made during the whole run, by kind (GPU plans only).
    pub device_copies: std::collections::BTreeMap<String, u64>,
    /// naflex: the batch's patch grids (mixed aspect ratios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grids: Option<Vec<Grid>>,
    /// naflex: the same images encoded one at a time (no padding, no mask), timed
    /// interleaved with the padded batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_image: Option<Figures>,
    /// naflex: padded-batch images/s ÷ per-image images/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padded_over_per_image: Option<f64>,
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (VmHWM).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size of this process now (VmRSS).
pub fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The budget holds the model's weights and activations, not the runtime itself: when it is
/// smaller than what the process held before the model was loaded, "over" would only say
/// the model is tiny.
pub fn rss_verdict(peak: u64, budget: u64, baseline: u64) -> &'static str {
    if budget < baseline {
        "not_applicable"
    } else if peak <= budget {
        "within"
    } else {
        "over"
    }
}

/// Deterministic pseudo-random pixels in about [-2, 2] (xorshift; no RNG dependency).
pub fn pixels(batch: usize, size: usize) -> Array4<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    Array4::from_shape_fn((batch, 3, size, size), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    })
}

/// Image sizes (height, width) whose naflex grids a bench batch cycles through: square,
/// 4:3 and 3:4, 16:9 and 9:16, 3:2, and 1:4 and 4:1.
const ASPECTS: [(usize, usize); 8] = [
    (1024, 1024),
    (480, 640),
    (640, 480),
    (1080, 1920),
    (1920, 1080),
    (333, 500),
    (300, 1200),
    (1200, 300),
];

/// A naflex batch of `batch` images of mixed aspect ratios (square, 4:3, 16:9, 3:2, 1:4 and
/// their transposes, cycled): pseudo-random patch values in about [-2, 2], zero padding after
/// each grid.
pub fn patches(batch: usize, patching: Patching) -> Pixels {
    let grids: Vec<Grid> = (0..batch)
        .map(|i| {
            let (h, w) = ASPECTS[i % ASPECTS.len()];
            patching.grid_for(h, w)
        })
        .collect();
    let noise = pixels(1, 1).into_raw_vec_and_offset().0;
    let mut k = 0usize;
    let values = Array3::from_shape_fn(
        (batch, patching.num_patches, patching.patch_len()),
        |(b, t, _)| {
            k += 1;
            if t < grids[b].patches() {
                noise[k % noise.len()] * ((k % 13) as f32 / 6.5 - 1.0)
            } else {
                0.0
            }
        },
    );
    Pixels::Patches { values, grids }
}

/// Runs the benchmark: warm-up, then `iters` timed batches, for the blocks and (with
/// `whole`) for one whole-model session.
pub fn run(opts: &LoadOptions, batch: usize, iters: usize, whole: bool) -> Result<BenchReport> {
    run_micro(opts, batch, iters, whole, None)
}

/// [`run`], with the timed passes cut into micro-batches of `micro` (`--micro-batch`).
pub fn run_micro(
    opts: &LoadOptions,
    batch: usize,
    iters: usize,
    whole: bool,
    micro: Option<usize>,
) -> Result<BenchReport> {
    let batch = batch.max(1);
    let iters = iters.max(1);
    let mut opts = opts.clone();
    if whole {
        opts.granularity = Granularity::Whole;
    }
    environment()?;
    let baseline_rss = current_rss();
    let t = Instant::now();
    let cv = ClipVision::load(&opts)?;
    let build = t.elapsed().as_secs_f64();
    let config = &cv.model().config;
    let px = match config.patching() {
        Some(p) => patches(batch, p),
        None => Pixels::Square(pixels(batch, config.image_size)),
    };
    let naflex = config.kind.is_naflex();
    let wanted: Vec<String> = Vec::new();
    let encode = |cv: &ClipVision| -> Result<()> {
        match micro {
            Some(m) => cv.encode_micro(px.view(), &wanted, m).map(drop),
            None => cv.encode(px.view(), &wanted, batch).map(drop),
        }
    };
    // naflex: the same images one at a time, each at its own token count.
    let one_by_one = |cv: &ClipVision| -> Result<()> { cv.encode(px.view(), &wanted, 1).map(drop) };
    let t = Instant::now();
    encode(&cv)?;
    let first = t.elapsed().as_secs_f64();
    let blocks_rss = peak_rss();
    // The whole-model session is timed interleaved with the blocks, iteration by iteration,
    // so drift in the machine's speed falls on both sides of the ratio alike.
    let mut whole_session = if whole {
        Some(WholeSession::build(&cv, &px)?)
    } else {
        None
    };
    let compare = naflex && batch > 1 && micro.is_none();
    // Warmed up before profiling starts, as the batch is.
    let first_alone = if compare {
        let t = Instant::now();
        one_by_one(&cv)?;
        t.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let pipeline = cv.pipeline()?;
    pipeline.set_profiling(true);
    pipeline.reset_upload_stats();
    let (mut times, mut whole_times, mut alone_times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        encode(&cv)?;
        times.push(t.elapsed().as_secs_f64());
        if let Some(w) = whole_session.as_mut() {
            whole_times.push(w.run()?);
        }
        if compare {
            // The per-block figures are the batches' alone.
            pipeline.pause_profiling(true);
            let t = Instant::now();
            one_by_one(&cv)?;
            alone_times.push(t.elapsed().as_secs_f64());
            pipeline.pause_profiling(false);
        }
    }
    let per_block = pipeline
        .profile()
        .into_iter()
        .map(|(name, mut v)| (name, median(&mut v) * 1e3))
        .collect();
    pipeline.set_profiling(false);
    let blocks = Figures::of(build, first, batch, &mut times);
    let whole_fig =
        whole_session.map(|w| Figures::of(w.build_s, w.first_s, batch, &mut whole_times));
    let per_image = compare.then(|| Figures::of(build, first_alone, batch, &mut alone_times));
    let rss_budget =
        cv.model().fp32_weight_bytes() * 5 / 4 + activation_bytes(&cv.model().config, batch as u64);
    Ok(BenchReport {
        rss_verdict: rss_verdict(blocks_rss, rss_budget, baseline_rss).into(),
        baseline_rss_bytes: baseline_rss,
        model: cv.model().path().display().to_string(),
        family: cv.model().config.family.clone(),
        batch_size: batch,
        iters,
        threads: crate::runtime::env::threads(),
        dtype: opts.dtype,
        cpu_engine: cv.cpu_engine(),
        split_ratio: whole_fig
            .as_ref()
            .map(|w| blocks.images_per_s / w.images_per_s),
        padded_over_per_image: per_image
            .as_ref()
            .map(|p| blocks.images_per_s / p.images_per_s),
        per_image,
        grids: px.view().grids().map(<[Grid]>::to_vec),
        blocks,
        per_block_median_ms: per_block,
        whole: whole_fig,
        blocks_peak_rss_bytes: blocks_rss,
        peak_rss_bytes: peak_rss(),
        model_bytes: cv.model().model_bytes(),
        rss_budget_bytes: rss_budget,
        streamed_bytes_per_pass: pipeline.streamed_bytes_per_pass(),
        uploads: pipeline.upload_stats(),
        micro_batch: micro,
        device_copies: pipeline
            .copy_counts()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    })
}

/// One session of `whole.onnx` (CPU, on the CPU blocks' engine) on the same pixels.
struct WholeSession {
    session: Session,
    px: Pixels,
    build_s: f64,
    first_s: f64,
}

impl WholeSession {
    fn build(cv: &ClipVision, px: &Pixels) -> Result<WholeSession> {
        let file = cv.export().dir.join(export::WHOLE_FILE);
        let t = Instant::now();
        let env = environment()?;
        let builder = Session::builder(&env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_env_allocators()?;
        let builder = crate::runtime::dtype::configure(builder, cv.export().manifest.dtype)?;
        // On the engine of the CPU blocks, so the ratio is the split's cost alone.
        let (exec, engine) = (crate::plan::Device::Cpu, cv.cpu_engine());
        let export_dir = &cv.export().dir;
        let session =
            crate::runtime::engine::configure(builder, exec, engine, cv.engines(), export_dir)?
                .commit_from_file(&file)
                .map_err(|e| Error::runtime(format!("{}: {e}", file.display())))?;
        let mut w = WholeSession {
            session,
            px: px.clone(),
            build_s: t.elapsed().as_secs_f64(),
            first_s: 0.0,
        };
        w.first_s = w.run()?;
        Ok(w)
    }

    /// One timed pass, doing what the pipeline's encode does: pixels in place, every output
    /// copied out into an owned array. A naflex batch goes in whole, padded to
    /// `num_patches`, with its grids (the graph makes the key mask).
    fn run(&mut self) -> Result<f64> {
        let t = Instant::now();
        let out = match &self.px {
            Pixels::Square(a) => {
                let input = ort::value::TensorRef::from_array_view(a.view())?;
                self.session
                    .run(ort::inputs![export::blocks::PIXELS => input])?
            }
            Pixels::Patches { values, grids } => {
                let input = ort::value::TensorRef::from_array_view(values.view())?;
                let shapes = crate::image::naflex::spatial_shapes(grids);
                let shapes = ort::value::Tensor::from_array(([grids.len(), 2], shapes))?;
                self.session.run(ort::inputs![
                    export::naflex::PATCHES => input,
                    export::naflex::SPATIAL_SHAPES => shapes
                ])?
            }
        };
        for (_, v) in out.iter() {
            let _owned = v.try_extract_array::<f32>()?.to_owned();
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::rss_verdict;

    #[test]
    fn a_budget_below_the_runtime_footprint_is_not_a_verdict() {
        let mib = 1u64 << 20;
        assert_eq!(rss_verdict(300 * mib, 2 * mib, 80 * mib), "not_applicable");
        assert_eq!(rss_verdict(300 * mib, 400 * mib, 80 * mib), "within");
        assert_eq!(rss_verdict(500 * mib, 400 * mib, 80 * mib), "over");
    }
}
