//! The runner: one ONNX Runtime session per block, activations handed from each block's
//! output to the next as ONNX Runtime values (no copies), the penultimate state kept on the
//! way, and only the blocks the requested outputs need are run.

use std::sync::{Arc, Mutex};

use ndarray::ArrayD;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use prost::Message;

use super::engine::Engines;
use super::env::environment;
use super::gpu::{self, GpuPath};
use super::pass_input::{pad_tokens, PassInput};
use super::route::{Pass, Route};
use crate::export::{blocks, Export};
use crate::image::{Grid, PixelsView};
use crate::model::{BlockKind, DType, Model, Outputs};
use crate::plan::{Device, Engine};
use crate::{Error, Result};

struct Stage {
    kind: BlockKind,
    engine: Engine,
    /// Seconds of each run, recorded while profiling is on (`bench`).
    times: Mutex<Vec<f64>>,
    session: Mutex<Session>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Weights fed as inputs each pass (streaming variant); empty for resident weights.
    weight_inputs: Vec<String>,
    exec: Device,
}

impl Stage {
    fn gpu_block(&self) -> gpu::Block<'_> {
        gpu::Block {
            exec: self.exec,
            kind: self.kind,
            session: &self.session,
            inputs: &self.inputs,
            outputs: &self.outputs,
            weight_inputs: &self.weight_inputs,
        }
    }
}

/// Where one block's session runs, on which engine, and whether its weights are streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagePlan {
    pub exec: Device,
    /// What runs it there (the plan's engine for the block).
    pub engine: Engine,
    /// Weights are graph inputs fed from host memory on every pass (home ≠ exec device).
    pub streamed: bool,
}

pub struct Pipeline {
    model: Arc<Model>,
    export: Export,
    stages: Vec<Stage>,
    profiling: std::sync::atomic::AtomicBool,
    /// The GPU path of the blocks that execute on a GPU; `None` for CPU-only plans.
    gpu: Option<GpuPath>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    /// Builds one session per block of `export`, each on its planned device and engine.
    pub fn build(
        model: Arc<Model>,
        export: Export,
        plan: &[StagePlan],
        engines: &Engines,
    ) -> Result<Pipeline> {
        let env = environment()?;
        if plan.len() != export.manifest.blocks.len() {
            return Err(Error::runtime(format!(
                "plan has {} blocks but the export has {}",
                plan.len(),
                export.manifest.blocks.len()
            )));
        }
        let n = export.manifest.blocks.len();
        let build = |i: usize| {
            let stage = build_stage(&env, &model, &export, i, plan[i], engines);
            // The weights' unpacked copies are freed by now; give their pages back before the
            // next session reads its own, so loading peaks near the weights' size.
            super::heap::release_free();
            stage
        };
        // CPU sessions are built on every core at once (most of a large model's load time is
        // ONNX Runtime folding and pre-packing weights, one session at a time); GPU sessions are
        // built in order on this thread, as ONNX Runtime's CUDA provider prefers.
        let workers = std::thread::available_parallelism()
            .map_or(1, |w| w.get())
            .min(n);
        // OpenVINO compiles one block at a time (`openvino::locale`), using every core itself.
        let parallel = plan
            .iter()
            .all(|p| p.exec == Device::Cpu && p.engine == Engine::Mlas);
        let stages: Vec<Stage> = if workers > 1 && parallel {
            let mut slots: Vec<Option<Result<Stage>>> = (0..n).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let build = &build;
                        scope.spawn(move || {
                            (w..n)
                                .step_by(workers)
                                .map(|i| (i, build(i)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in handles {
                    let built = h.join().unwrap_or_else(|_| {
                        vec![(0, Err(Error::runtime("building a session panicked")))]
                    });
                    for (i, r) in built {
                        slots[i] = Some(r);
                    }
                }
            });
            slots
                .into_iter()
                .map(|s| s.unwrap_or_else(|| Err(Error::runtime("a session was not built"))))
                .collect::<Result<_>>()?
        } else {
            (0..n).map(build).collect::<Result<_>>()?
        };
        let fp16 = export.manifest.dtype == crate::export::ComputeDtype::Fp16;
        let blocks: Vec<gpu::Block> = stages.iter().map(Stage::gpu_block).collect();
        let gpu = GpuPath::for_blocks(&blocks, |k| streamed_weight(&model, k, fp16))?;
        if gpu.is_some() {
            // Pinning made temporary (fp16-converted) copies of streamed weights; give their
            // pages back, as after each session build.
            super::heap::release_free();
        }
        Ok(Pipeline {
            model,
            export,
            stages,
            profiling: Default::default(),
            gpu,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn export(&self) -> &Export {
        &self.export
    }
    /// Starts (or stops) recording each block's run time, clearing what was recorded.
    pub fn set_profiling(&self, on: bool) {
        for st in &self.stages {
            lock(&st.times).clear();
        }
        self.profiling
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pauses (or resumes) recording without clearing what was recorded.
    pub fn pause_profiling(&self, paused: bool) {
        self.profiling
            .store(!paused, std::sync::atomic::Ordering::Relaxed);
    }

    /// Recorded run times (seconds) per block, in block order.
    pub fn profile(&self) -> Vec<(String, Vec<f64>)> {
        self.stages
            .iter()
            .map(|st| (st.kind.name(), lock(&st.times).clone()))
            .collect()
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> Vec<BlockKind> {
        self.stages.iter().map(|s| s.kind).collect()
    }

    /// Encodes `pixels` (checked by the caller: `ClipVision::encode`) in batches of
    /// `batch_size`, returning the requested outputs. A naflex batch runs padded to its largest
    /// grid, with a key mask (contract §3.1).
    pub fn encode<'a>(
        &self,
        pixels: impl Into<PixelsView<'a>>,
        outputs: &[String],
        batch_size: usize,
    ) -> Result<Outputs> {
        let pixels = pixels.into();
        let route = Route::new(&self.model, outputs)?;
        let mut parts: Vec<Vec<ArrayD<f32>>> = vec![Vec::new(); route.outputs.len()];
        for chunk in pixels.chunks(batch_size) {
            let out = self.encode_batch(PassInput::new(chunk)?, &route)?;
            for (i, t) in out.into_iter().enumerate() {
                parts[i].push(t);
            }
        }
        Outputs::from_batches(route.names(), parts, pixels.grids())
    }

    /// One batch through the blocks `route` needs; its outputs in route order (naflex token
    /// outputs padded to `num_patches`).
    fn encode_batch(&self, input: PassInput<'_>, route: &Route) -> Result<Vec<ArrayD<f32>>> {
        let mut pass = route.pass::<DynValue>();
        pass.mask = input.mask;
        let mut embed = input.embed;
        for stage in route.blocks() {
            self.advance(route, stage, &mut pass, &mut embed)?;
        }
        // Outputs left on a GPU come back to the host here, at the end.
        let out = route.collect(&pass, |v| self.extract_host(v))?;
        Ok(self.pad_outputs(out, input.grids.as_deref()))
    }

    /// naflex token outputs of a pass padded to the model's `num_patches` (see `pass_input`).
    pub(crate) fn pad_outputs(
        &self,
        out: Vec<ArrayD<f32>>,
        grids: Option<&[Grid]>,
    ) -> Vec<ArrayD<f32>> {
        match grids {
            Some(g) => out
                .into_iter()
                .map(|t| pad_tokens(t, g, self.model.config.num_patches))
                .collect(),
            None => out,
        }
    }

    /// Runs block `stage` of a pass, by its kind: the embed block takes the pass's embed
    /// inputs (taken from `embed`), a layer the current state, the head the current (and, for
    /// LLaVA, the penultimate) state; with a naflex key mask, every block after the embedding
    /// takes it too. Both the plain and the micro-batch runner step through a route with this.
    pub(crate) fn advance(
        &self,
        route: &Route,
        stage: usize,
        pass: &mut Pass<DynValue>,
        embed: &mut Vec<SessionInputValue>,
    ) -> Result<()> {
        let kind = self.stages[stage].kind;
        let missing = || Error::runtime(format!("block {kind}: an input is missing from the pass"));
        let mut args = match kind {
            BlockKind::Embed => {
                if embed.is_empty() {
                    return Err(missing());
                }
                let e = self
                    .run_values(stage, std::mem::take(embed))?
                    .into_iter()
                    .next();
                pass.set_embed(e.ok_or_else(missing)?);
                return Ok(());
            }
            BlockKind::Layer { .. } | BlockKind::Head => {
                vec![SessionInputValue::from(pass.current().ok_or_else(missing)?)]
            }
        };
        if kind == BlockKind::Head && route.head_takes_penult {
            args.push(SessionInputValue::from(
                pass.penultimate().ok_or_else(missing)?,
            ));
        }
        if route.masked {
            args.push(SessionInputValue::from(
                pass.mask.as_ref().ok_or_else(missing)?,
            ));
        }
        let out = self.run_values(stage, args)?;
        if kind == BlockKind::Head {
            pass.head = out;
        } else {
            pass.push_layer(out.into_iter().next().ok_or_else(missing)?);
        }
        Ok(())
    }

    /// Runs one block: activation inputs in order, then its streamed weights if any.
    fn run_values(&self, stage: usize, mut args: Vec<SessionInputValue>) -> Result<Vec<DynValue>> {
        let st = &self.stages[stage];
        if let Some(gpu) = &self.gpu {
            if let Device::Cuda(n) = st.exec {
                let block = st.gpu_block();
                let (out, secs) = gpu.run(n, stage, &block, &args, |k| self.weight_tensor(k))?;
                self.record(st, secs);
                return Ok(out);
            }
            // A CPU-executed block after GPU blocks: its inputs come to the host first.
            gpu.inputs_to_host(&mut args)?;
        }
        let mut named: Vec<(String, SessionInputValue)> =
            st.inputs.iter().cloned().zip(args.drain(..)).collect();
        for key in &st.weight_inputs {
            named.push((
                key.clone(),
                SessionInputValue::from(self.weight_tensor(key)?),
            ));
        }
        let mut session = lock(&st.session);
        let keep = (st.engine == Engine::OpenVino).then(super::openvino::KeepLocale::new);
        let t = std::time::Instant::now();
        let out = session.run(named);
        drop(keep);
        let mut out = out.map_err(|e| Error::runtime(format!("block {}: {e}", st.kind)))?;
        self.record(st, t.elapsed().as_secs_f64());
        st.outputs
            .iter()
            .map(|name| {
                out.remove(name.as_str())
                    .ok_or_else(|| Error::runtime(format!("block {} gave no {name}", st.kind)))
            })
            .collect()
    }

    /// The graphs compute in f16 (their streamed weights are fed as f16).
    fn fp16(&self) -> bool {
        self.export.manifest.dtype == crate::export::ComputeDtype::Fp16
    }

    /// Records one run of `st` while profiling is on.
    fn record(&self, st: &Stage, secs: f64) {
        if self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            lock(&st.times).push(secs);
        }
    }

    /// Bytes of weights uploaded from host memory to a GPU on every full pass (blocks homed
    /// on the CPU and executed on a GPU, donor policy `stream`).
    pub fn streamed_bytes_per_pass(&self) -> u64 {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.exec.is_gpu())
            .map(
                |(i, s)| match self.gpu.as_ref().and_then(|g| g.pinned_bytes(i)) {
                    Some(b) => b,
                    None => s
                        .weight_inputs
                        .iter()
                        .map(|k| {
                            let info = &self.model.weight(k).info;
                            let size = if self.fp16() { 2 } else { info.dtype.size() };
                            info.shape.iter().product::<usize>() as u64 * size
                        })
                        .sum(),
                },
            )
            .sum()
    }

    /// Uploads of streamed weights through the staging buffers since the last reset.
    pub fn upload_stats(&self) -> gpu::UploadStats {
        self.gpu
            .as_ref()
            .map(|g| g.upload_stats())
            .unwrap_or_default()
    }

    pub fn reset_upload_stats(&self) {
        if let Some(g) = &self.gpu {
            g.reset_upload_stats();
        }
    }

    /// What block `i` is.
    pub(crate) fn stage_kind(&self, i: usize) -> BlockKind {
        self.stages[i].kind
    }
    /// Where block `i` executes.
    pub(crate) fn stage_exec(&self, i: usize) -> Device {
        self.stages[i].exec
    }
    /// `v` as a host f32 array (copied off its GPU first when it lives on one).
    pub(crate) fn extract_host(&self, v: &DynValue) -> Result<ArrayD<f32>> {
        if let Some(gpu) = &self.gpu {
            if let Some(h) = gpu.to_host(v)? {
                return Ok(h.try_extract_array::<f32>()?.to_owned());
            }
        }
        Ok(v.try_extract_array::<f32>()?.to_owned())
    }

    /// Copies between devices made so far (GPU plans only), by kind.
    pub fn copy_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.gpu
            .as_ref()
            .map(|g| g.copy_counts())
            .unwrap_or_default()
    }

    /// A streamed weight as the graph takes it, copied from the mapped file.
    fn weight_tensor(&self, key: &str) -> Result<DynValue> {
        let (dtype, bytes, shape) = streamed_weight(&self.model, key, self.fp16())?;
        let bytes = &bytes[..];
        Ok(match dtype {
            DType::F16 => Tensor::from_array((
                shape,
                le_values(bytes, |b| half::f16::from_le_bytes([b[0], b[1]])),
            ))?
            .into_dyn(),
            DType::BF16 => Tensor::from_array((
                shape,
                le_values(bytes, |b| half::bf16::from_le_bytes([b[0], b[1]])),
            ))?
            .into_dyn(),
            _ => Tensor::from_array((
                shape,
                le_values(bytes, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ))?
            .into_dyn(),
        })
    }
}

/// Builds the session of block `i` on its planned device.
fn build_stage(
    env: &ort::environment::Environment,
    model: &Arc<Model>,
    export: &Export,
    i: usize,
    sp: StagePlan,
    engines: &Engines,
) -> Result<Stage> {
    let block = &export.manifest.blocks[i];
    // The manifest is read from disk: a name that is no block of this model, or not the
    // block at this position, is an error (the runner relies on model order).
    let manifest = export.dir.join("manifest.json");
    let kind = BlockKind::parse(&block.name, model.config.num_layers)
        .map_err(|e| e.context(manifest.display()))?;
    let want = model.blocks.get(i).map(|b| b.kind);
    if want != Some(kind) {
        return Err(Error::runtime(format!(
            "{}: block {i} is {kind}, but block {i} of the model is {}",
            manifest.display(),
            want.map_or("missing".to_string(), |k| k.name())
        )));
    }
    let streamed = sp.streamed;
    // One OpenVINO compile at a time, the host's locale kept (see `openvino::locale`).
    let _one = (sp.engine == Engine::OpenVino).then(super::openvino::build_lock);
    let _keep = (sp.engine == Engine::OpenVino).then(super::openvino::KeepLocale::new);
    let builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_env_allocators()?
        // A memory pattern makes each CPU run take its whole planned peak as one block of the
        // shared arena, next to the other sessions' patterns (+33 MB for ViT-B at batch 8,
        // no speed gained); the arena already reuses freed tensors across blocks.
        .with_memory_pattern(sp.exec.is_gpu())?;
    let builder = super::dtype::configure(builder, export.manifest.dtype)?;
    let mut builder = super::engine::configure(builder, sp.exec, sp.engine, engines, &export.dir)?;
    let (session, weight_inputs) = if streamed {
        let (proto, weights) = blocks::block_graph(
            model,
            kind,
            crate::export::WEIGHTS_FILE,
            true,
            export.manifest.dtype,
        );
        (builder.commit_from_memory(&proto.encode_to_vec()), weights)
    } else {
        (
            builder.commit_from_file(export.dir.join(&block.file)),
            Vec::new(),
        )
    };
    let session = session.map_err(|e| {
        Error::runtime(format!(
            "building the session of block {} on {} ({}): {e}",
            block.name, sp.exec, sp.engine
        ))
    })?;
    Ok(Stage {
        kind,
        engine: sp.engine,
        times: Mutex::new(Vec::new()),
        session: Mutex::new(session),
        inputs: block.inputs.clone(),
        outputs: block.outputs.clone(),
        weight_inputs,
        exec: sp.exec,
    })
}

/// A streamed weight as its graph input takes it: dtype, little-endian bytes and shape. The
/// file's bytes as they are, or (`fp16` graphs) converted to f16 when the file holds
/// another float type.
fn streamed_weight<'m>(
    model: &'m Model,
    key: &str,
    fp16: bool,
) -> Result<(DType, std::borrow::Cow<'m, [u8]>, Vec<i64>)> {
    let w = model.weight(key);
    let bytes = model.file.data(&w.info)?;
    let mut shape: Vec<i64> = w.info.shape.iter().map(|&d| d as i64).collect();
    if w.layout == crate::model::Layout::InOut {
        shape.reverse();
    }
    if !fp16 || w.info.dtype == DType::F16 {
        return Ok((w.info.dtype, bytes.into(), shape));
    }
    let values = w.info.dtype.to_f32(bytes).ok_or_else(|| {
        Error::invalid(format!(
            "weight {key}: {:?} is not a float type",
            w.info.dtype
        ))
    })?;
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    Ok((DType::F16, f16.into(), shape))
}

fn le_values<T>(bytes: &[u8], f: impl Fn(&[u8]) -> T) -> Vec<T> {
    let n = std::mem::size_of::<T>();
    bytes.chunks_exact(n).map(f).collect()
}
