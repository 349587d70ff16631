//! The device-resident path for blocks that execute on a GPU.
//!
//! - One OS thread per GPU ([`DeviceWorker`]) runs every session of that GPU, and every copy
//!   out of it, so no two threads drive one GPU's sessions (docs/architecture.md: this
//!   avoids known ORT multi-GPU bugs). The GPU path hands it closures and waits for the result.
//! - A GPU block runs through an `IoBinding` whose outputs are bound to that GPU's CUDA
//!   memory, so activations stay on the device from block to block.
//! - An input on another GPU is copied device to device (ORT's identity-session copy,
//!   `Value::to`) and the copy's `memory_info().device_id()` is checked; when it does not
//!   land on the right GPU, or `DISTORCH_P2P=0`, it goes through host memory instead.
//! - Host round-trips happen only at the ends ([`GpuRunner::to_host`]) and at CPU-executed blocks.
//!
//! CPU-only plans never create a [`GpuRunner`] and never come here.
//!
//! UNVERIFIED: nothing in this file has run on a GPU (the development machine has none);
//! `scripts/gpu_check.sh` exercises it on a GPU machine.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Mutex;

use ort::memory::AllocationDevice;
use ort::session::Session;
use ort::value::DynValue;

use super::memory::{cuda_memory, value_device};
use super::pinned::PinnedWeights;
use super::staging::Staging;
use crate::plan::Device;
use crate::{Error, Result};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// One OS thread that runs the closures it is given, in order.
pub struct DeviceWorker {
    name: String,
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DeviceWorker {
    pub fn spawn(name: &str) -> Result<DeviceWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name(format!("dv-{name}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking job must not take the worker down; its caller sees the
                    // dropped result channel and reports it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start the {name} worker thread: {e}")))?;
        Ok(DeviceWorker {
            name: name.to_string(),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Runs `f` on the worker thread and waits for its result. `f` may borrow from the
    /// caller: this call does not return before `f` has finished or been dropped.
    pub fn run<'a, R: Send + 'a>(&self, f: impl FnOnce() -> R + Send + 'a) -> Result<R> {
        let (rtx, rrx) = mpsc::sync_channel::<R>(1);
        let job: Box<dyn FnOnce() + Send + 'a> = Box::new(move || {
            let _ = rtx.send(f());
        });
        // SAFETY: the job's borrows outlive its execution because we block below until the
        // job has sent its result or has been dropped (the sender `rtx` lives inside the
        // job, so `recv` returns only after the job ran to completion, panicked and was
        // dropped, or was dropped unrun when the worker is gone).
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(job) };
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::runtime(format!("the {} worker has stopped", self.name)))?;
        if tx.send(job).is_err() {
            // The job came back inside the error and was dropped with it: no borrow remains.
            return Err(Error::runtime(format!(
                "the {} worker has stopped",
                self.name
            )));
        }
        rrx.recv()
            .map_err(|_| Error::runtime(format!("a job on the {} worker panicked", self.name)))
    }
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn p2p_enabled() -> bool {
    std::env::var("DISTORCH_P2P").map_or(true, |v| v != "0")
}

/// Binds a view of memory we own (a staging buffer) as it is. `IoBinding::bind_input` would
/// clone a borrowed tensor that is already on the session's device (one identity-session
/// copy per weight per pass), which is exactly the copy staging exists to avoid.
fn bind_in_place(
    binding: &mut ort::session::IoBinding,
    name: &str,
    value: &ort::value::ValueRefMut<'_, ort::value::DynValueTypeMarker>,
) -> Result<()> {
    use ort::AsPointer;
    let name = std::ffi::CString::new(name)
        .map_err(|_| Error::runtime(format!("input name {name:?} has a NUL byte")))?;
    let api = ort::api();
    // SAFETY: both pointers are live ORT objects; ORT keeps its own reference to the value
    // (not to our buffer's contents) until the inputs are cleared, which the caller does
    // before the buffer can be reused.
    let status = unsafe { (api.BindInput)(binding.ptr_mut(), name.as_ptr(), value.ptr()) };
    crate::runtime::env::check_status(status, &format!("binding {name:?}"))
}

/// A block whose streamed weights go through a [`Staging`] double buffer.
pub struct Staged<'a> {
    pub staging: &'a Mutex<Staging>,
    pub stage: usize,
    pub weights: &'a PinnedWeights,
    /// The streamed block expected to run next on this GPU, to prefetch.
    pub next: Option<(usize, &'a PinnedWeights)>,
}

/// The worker threads of the GPUs a pipeline uses.
pub struct GpuRunner {
    workers: BTreeMap<u32, DeviceWorker>,
    /// Host↔device and device↔device copies made, for the report: (kind, count).
    copies: Mutex<BTreeMap<&'static str, u64>>,
}

impl GpuRunner {
    /// A worker per GPU in `devices`; `None` when there is none (CPU-only plans).
    pub fn for_devices(devices: impl IntoIterator<Item = Device>) -> Result<Option<GpuRunner>> {
        let mut workers = BTreeMap::new();
        for d in devices {
            if let Device::Cuda(n) = d {
                if let std::collections::btree_map::Entry::Vacant(e) = workers.entry(n) {
                    e.insert(DeviceWorker::spawn(&format!("cuda{n}"))?);
                }
            }
        }
        Ok((!workers.is_empty()).then(|| GpuRunner {
            workers,
            copies: Mutex::new(BTreeMap::new()),
        }))
    }

    fn worker(&self, n: u32) -> Result<&DeviceWorker> {
        self.workers
            .get(&n)
            .ok_or_else(|| Error::runtime(format!("no worker thread for cuda:{n}")))
    }

    fn count(&self, kind: &'static str) {
        *self
            .copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Copies made so far, by kind.
    pub fn copy_counts(&self) -> BTreeMap<&'static str, u64> {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `v` in host memory: itself when it already is, else a copy made on its GPU's thread.
    pub fn to_host(&self, v: &DynValue) -> Result<Option<DynValue>> {
        let Some(n) = value_device(v) else {
            return Ok(None);
        };
        self.count("device_to_host");
        let out = self.worker(n)?.run(|| -> Result<DynValue> {
            let t = v
                .view()
                .downcast::<ort::value::DynTensorValueType>()
                .map_err(|e| Error::runtime(format!("not a tensor: {e}")))?;
            Ok(t.to(AllocationDevice::CPU, 0)?.into_dyn())
        })??;
        Ok(Some(out))
    }

    /// `v` made ready as an input on GPU `n`: device-resident values of another GPU are
    /// copied over (checked), host values are left for the binding to upload.
    fn for_device(&self, v: &DynValue, n: u32) -> Result<Option<DynValue>> {
        match value_device(v) {
            None => Ok(None),
            Some(m) if m == n => Ok(None),
            Some(m) => {
                if p2p_enabled() {
                    // Runs on the source GPU's thread; ORT's identity copy into cuda:n.
                    let copied = self.worker(m)?.run(|| -> Result<DynValue> {
                        let t = v
                            .view()
                            .downcast::<ort::value::DynTensorValueType>()
                            .map_err(|e| Error::runtime(format!("not a tensor: {e}")))?;
                        Ok(t.to(AllocationDevice::CUDA, n as i32)?.into_dyn())
                    })?;
                    match copied {
                        Ok(c) if value_device(&c) == Some(n) => {
                            self.count("device_to_device");
                            return Ok(Some(c));
                        }
                        Ok(c) => tracing::warn!(
                            "copy cuda:{m} → cuda:{n} landed on {:?}; going through host memory",
                            value_device(&c)
                        ),
                        Err(e) => tracing::warn!(
                            "copy cuda:{m} → cuda:{n} failed ({e}); going through host memory"
                        ),
                    }
                }
                // Through the host; the binding uploads it to cuda:n.
                Ok(self.to_host(v)?)
            }
        }
    }

    /// Runs one block's session on GPU `n`: inputs bound (host values are uploaded, values
    /// on another GPU copied first), every output bound to cuda:`n` memory. Returns the
    /// outputs in the order of `outputs`, resident on the GPU. With `staged`, the block's
    /// streamed weights are bound from the staging buffer and the next streamed block's
    /// upload starts before this one runs.
    pub fn run_stage(
        &self,
        n: u32,
        block: &str,
        session: &Mutex<Session>,
        inputs: Vec<(String, &DynValue)>,
        outputs: &[String],
        staged: Option<Staged<'_>>,
    ) -> Result<Vec<DynValue>> {
        // Cross-GPU hand-offs first (they run on the source GPU's thread).
        let mut moved: Vec<(String, Option<DynValue>)> = Vec::with_capacity(inputs.len());
        for (name, v) in &inputs {
            moved.push((name.clone(), self.for_device(v, n)?));
        }
        if moved.iter().any(|(_, m)| m.is_some()) {
            tracing::trace!("block {block}: inputs moved onto cuda:{n}");
        }
        self.worker(n)?.run(|| -> Result<Vec<DynValue>> {
            let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
            let mut binding = session.create_binding()?;
            for ((name, v), (_, m)) in inputs.iter().zip(&moved) {
                binding.bind_input(name.as_str(), m.as_ref().unwrap_or(v))?;
            }
            let mut staging = staged
                .as_ref()
                .map(|s| s.staging.lock().unwrap_or_else(|e| e.into_inner()));
            if let (Some(s), Some(g)) = (&staged, staging.as_mut()) {
                let slot = g.ensure(s.stage, s.weights)?;
                // The binding keeps its own reference to each view's tensor, so the views
                // themselves can go right away.
                for (name, v) in &g.views(slot, s.weights)? {
                    bind_in_place(&mut binding, name, v)?;
                }
            }
            let mem = cuda_memory(n)?;
            for o in outputs {
                binding.bind_output_to_device(o.as_str(), &mem)?;
            }
            // ORT's input synchronisation is a whole-device synchronise (CUDA provider's
            // Sync), so the next block's upload starts only after it, to overlap this run.
            binding.synchronize_inputs()?;
            if let (Some(s), Some(g)) = (&staged, staging.as_mut()) {
                if let Some((next, w)) = s.next {
                    if let Err(e) = g.prefetch(next, w, s.stage) {
                        // Only an optimisation: the next block uploads when it runs.
                        tracing::warn!("block {block}: prefetching the next weights: {e}");
                    }
                }
            }
            let vals: Result<Vec<DynValue>> = match session.run_binding(&binding) {
                Ok(mut out) => outputs
                    .iter()
                    .map(|o| {
                        out.remove(o.as_str())
                            .ok_or_else(|| Error::runtime(format!("block {block} gave no {o}")))
                    })
                    .collect(),
                Err(e) => Err(Error::runtime(format!("block {block} on cuda:{n}: {e}"))),
            };
            // The staging buffer may be overwritten once its lock is released; the binding
            // must not keep referring to it.
            binding.clear_inputs();
            drop(staging);
            vals
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_runs_borrowing_closures_in_order_and_survives_panics() {
        let w = DeviceWorker::spawn("test").unwrap();
        let data = [1, 2, 3];
        let sum = w.run(|| data.iter().sum::<i32>()).unwrap();
        assert_eq!(sum, 6);
        let tid = w
            .run(|| std::thread::current().name().map(String::from))
            .unwrap();
        assert_eq!(tid.as_deref(), Some("dv-test"));
        let r = w.run(|| -> i32 { panic!("boom") });
        assert!(r.is_err());
        assert_eq!(w.run(|| 7).unwrap(), 7);
    }

    /// The identity-session copy `Value::to` works inside our environment (with its global
    /// thread pool): checked host → host here; host ↔ GPU only on a GPU machine.
    #[test]
    fn identity_copy_works_with_the_global_thread_pool() {
        // The tests run after scripts/setup.sh (scripts/test.sh does both): a missing ONNX
        // Runtime is a failure here, not a reason to pass without checking.
        if let Err(e) = crate::runtime::environment() {
            panic!("ONNX Runtime is needed (scripts/setup.sh installs it): {e}");
        }
        let t = ort::value::Tensor::from_array(([2usize, 3], vec![1f32, 2., 3., 4., 5., 6.]))
            .unwrap()
            .into_dyn();
        assert_eq!(value_device(&t), None);
        let c = t
            .view()
            .downcast::<ort::value::DynTensorValueType>()
            .unwrap()
            .to(AllocationDevice::CPU, 0)
            .unwrap()
            .into_dyn();
        let (_, v) = c.try_extract_tensor::<f32>().unwrap();
        assert_eq!(v, &[1., 2., 3., 4., 5., 6.]);
    }
}
