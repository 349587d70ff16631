//! The GPU path of the runtime, all of it: the pipeline holds an `Option<`[`GpuPath`]`>`
//! (`None` for CPU-only plans, which never come here) and hands it the blocks that execute
//! on a GPU.
//!
//! - [`driver`]: the one probe of the CUDA driver (also the planner's inventory).
//! - `unavailable`: one wording of why CUDA cannot run here.
//! - `libs`: the CUDA 13 / cuDNN 9 libraries: search and preload.
//! - `provider`: the CUDA execution provider: status, the check before loading, registering.
//! - `worker`: one thread per GPU, IoBinding, device copies.
//! - `pinned`, `staging`: streamed weights in pinned host memory, uploaded double-buffered.
//! - `memory`: where values live; tensor views of raw memory.
//!
//! UNVERIFIED: none of the CUDA paths has run on a GPU (the development machine has none);
//! `scripts/gpu_check.sh` exercises them on a GPU machine.

pub mod driver;
mod libs;
mod memory;
mod pinned;
mod provider;
mod staging;
mod unavailable;
mod worker;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::DynValue;

use crate::model::{BlockKind, DType};
use crate::plan::Device;
use crate::Result;

pub use libs::{LibStatus, REQUIRED_LIBS};
pub use provider::{check_usable, cuda_provider_available, provider_status, register, CudaStatus};
pub use staging::UploadStats;
pub use unavailable::Unavailable;

use pinned::{PinnedWeights, WeightSource};
use staging::Staging;
use worker::{GpuRunner, Staged};

/// One block as the GPU path sees it: where it executes, its session, and its input,
/// output and streamed-weight names.
pub struct Block<'a> {
    pub exec: Device,
    pub kind: BlockKind,
    pub session: &'a Mutex<Session>,
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    /// Weights fed as inputs each pass (streaming variant); empty for resident weights.
    pub weight_inputs: &'a [String],
}

/// A streamed weight as its graph input takes it: dtype, little-endian bytes and shape.
pub type StreamedWeight<'m> = (DType, Cow<'m, [u8]>, Vec<i64>);

/// The worker threads of the GPUs a plan executes on, its blocks' streamed weights in pinned
/// host memory, and their double-buffered uploads.
pub struct GpuPath {
    /// Double-buffered uploads of streamed weights, per GPU. Declared (so dropped) before
    /// `pinned`: dropping a staging waits for its copies, which read that pinned memory.
    staging: BTreeMap<u32, Mutex<Staging>>,
    /// Per block: its streamed weights in pinned host memory (GPU-executed blocks only).
    pinned: Vec<Option<PinnedWeights>>,
    /// For each streamed GPU block, the streamed block to prefetch while it runs.
    next_streamed: Vec<Option<usize>>,
    workers: GpuRunner,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GpuPath {
    /// The GPU path of a plan whose blocks are `blocks` (in order); `None` when no block
    /// executes on a GPU. Streamed weights of GPU blocks (`weight` gives each as its graph
    /// input takes it) go to pinned host memory once, here.
    pub fn for_blocks<'m>(
        blocks: &[Block<'_>],
        weight: impl Fn(&str) -> Result<StreamedWeight<'m>>,
    ) -> Result<Option<GpuPath>> {
        let pinned: Vec<Option<PinnedWeights>> = blocks
            .iter()
            .map(|b| match b.exec {
                Device::Cuda(n) if !b.weight_inputs.is_empty() => {
                    pin_weights(n, b.weight_inputs, &b.kind.name(), &weight)
                }
                _ => None,
            })
            .collect();
        let Some(workers) = GpuRunner::for_devices(blocks.iter().map(|b| b.exec))? else {
            return Ok(None);
        };
        let execs: Vec<Device> = blocks.iter().map(|b| b.exec).collect();
        let (staging, next_streamed) = staging_for(&execs, &pinned);
        Ok(Some(GpuPath {
            staging,
            pinned,
            next_streamed,
            workers,
        }))
    }

    /// Runs block `stage` (`b`, executing on GPU `n`) on that GPU's worker thread, outputs
    /// left on the GPU; `weight` gives a streamed weight from ordinary host memory when it
    /// could not be pinned. Returns the outputs and the seconds the run took.
    pub fn run(
        &self,
        n: u32,
        stage: usize,
        b: &Block<'_>,
        args: &[SessionInputValue],
        weight: impl Fn(&str) -> Result<DynValue>,
    ) -> Result<(Vec<DynValue>, f64)> {
        let mut named: Vec<(String, &DynValue)> = b
            .inputs
            .iter()
            .cloned()
            .zip(args.iter().map(|a| &**a))
            .collect();
        let pinned = &self.pinned[stage];
        let staged = match (pinned, self.staging.get(&n)) {
            (Some(weights), Some(staging)) => Some(Staged {
                staging,
                stage,
                weights,
                next: self.next_streamed[stage].and_then(|j| {
                    let w = self.pinned[j].as_ref()?;
                    Some((j, w))
                }),
            }),
            _ => None,
        };
        // Without a staging buffer, pinned weights are bound as host inputs for ORT to upload.
        let pinned_inputs = match (pinned, &staged) {
            (Some(p), None) => p.tensors()?,
            _ => Vec::new(),
        };
        let unpinned: Vec<(String, DynValue)> = if pinned.is_none() {
            b.weight_inputs
                .iter()
                .map(|k| Ok((k.clone(), weight(k)?)))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        named.extend(pinned_inputs.iter().map(|(k, v)| (k.clone(), &**v)));
        named.extend(unpinned.iter().map(|(k, v)| (k.clone(), v)));
        let t = std::time::Instant::now();
        let out = self
            .workers
            .run_stage(n, &b.kind.name(), b.session, named, b.outputs, staged)?;
        Ok((out, t.elapsed().as_secs_f64()))
    }

    /// `v` copied to host memory when it lives on a GPU; `None` when already on the host.
    pub fn to_host(&self, v: &DynValue) -> Result<Option<DynValue>> {
        self.workers.to_host(v)
    }

    /// Brings the inputs of a CPU-executed block to the host (those that live on a GPU).
    pub fn inputs_to_host(&self, args: &mut [SessionInputValue]) -> Result<()> {
        for a in args.iter_mut() {
            if let Some(h) = self.to_host(a)? {
                *a = SessionInputValue::from(h);
            }
        }
        Ok(())
    }

    /// Bytes of block `stage`'s pinned streamed weights, if they are pinned.
    pub fn pinned_bytes(&self, stage: usize) -> Option<u64> {
        self.pinned.get(stage)?.as_ref().map(|p| p.bytes())
    }

    /// Uploads of streamed weights through the staging buffers since the last reset.
    pub fn upload_stats(&self) -> UploadStats {
        let mut total = UploadStats::default();
        for s in self.staging.values() {
            total.add(&lock(s).stats());
        }
        total
    }

    pub fn reset_upload_stats(&self) {
        for s in self.staging.values() {
            lock(s).reset_stats();
        }
    }

    /// Copies between devices made so far, by kind.
    pub fn copy_counts(&self) -> BTreeMap<&'static str, u64> {
        self.workers.copy_counts()
    }
}

/// A double-buffered staging per GPU that executes streamed blocks, and for each such block
/// the streamed block after it on the same GPU (wrapping to the first: the next batch).
/// A GPU whose staging cannot be made falls back to ORT's own uploads, with a warning.
#[allow(clippy::type_complexity)]
fn staging_for(
    execs: &[Device],
    pinned: &[Option<PinnedWeights>],
) -> (BTreeMap<u32, Mutex<Staging>>, Vec<Option<usize>>) {
    use staging::layout;
    let mut next = vec![None; execs.len()];
    let mut map = BTreeMap::new();
    let mut gpus: Vec<u32> = (0..execs.len())
        .filter(|&i| pinned[i].is_some())
        .filter_map(|i| match execs[i] {
            Device::Cuda(n) => Some(n),
            Device::Cpu | Device::Xpu(_) => None,
        })
        .collect();
    gpus.sort_unstable();
    gpus.dedup();
    for n in gpus {
        let on_n: Vec<usize> = (0..execs.len())
            .filter(|&i| execs[i] == Device::Cuda(n) && pinned[i].is_some())
            .collect();
        let capacity = on_n
            .iter()
            .filter_map(|&i| pinned[i].as_ref())
            .map(|p| layout(p.parts().map(|w| w.bytes.len())).1)
            .max()
            .unwrap_or(0);
        match Staging::new(n, capacity) {
            Ok(s) => {
                map.insert(n, Mutex::new(s));
                for (k, &i) in on_n.iter().enumerate() {
                    next[i] = Some(on_n[(k + 1) % on_n.len()]);
                }
            }
            Err(e) => tracing::warn!("{e}; streamed weights are uploaded without overlap"),
        }
    }
    (map, next)
}

/// Pinned host copies of a GPU block's streamed weights; `None` (weights then come from
/// ordinary host memory each pass) when pinning fails, with a warning.
fn pin_weights<'m>(
    device: u32,
    keys: &[String],
    block: &str,
    weight: impl Fn(&str) -> Result<StreamedWeight<'m>>,
) -> Option<PinnedWeights> {
    let mut sources = Vec::with_capacity(keys.len());
    for key in keys {
        let (dtype, bytes, shape) = match weight(key) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("block {block}: {e}; streaming from pageable memory");
                return None;
            }
        };
        sources.push(WeightSource {
            name: key.clone(),
            dtype,
            shape,
            bytes,
        });
    }
    match PinnedWeights::new(device, sources) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("block {block}: {e}; streaming from pageable memory");
            None
        }
    }
}
