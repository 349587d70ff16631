//! Double-buffered uploads of streamed weights (donor policy `stream`): while block i runs on
//! the GPU from one device buffer, the weights of the next streamed block are copied from
//! pinned host memory into the other buffer on a side stream, so the PCIe copy hides behind
//! block i's compute instead of adding to it.
//!
//! Why two buffers are enough: every block's run is synchronous (ONNX Runtime synchronises
//! its stream at the end of `Run`), and all runs on one GPU go through that GPU's worker
//! thread. So while block i runs, only block i's buffer is read; the other one is free to be
//! overwritten. Before a block runs, the host waits on the event recorded after its copy;
//! that wait (the stall) is what the overlap did not hide, and it is measured.
//!
//! The copies go through the CUDA driver API (cudarc's raw bindings) on a non-blocking
//! stream of the primary context, which ONNX Runtime's CUDA provider also uses, so the
//! device pointers are valid in its sessions.
//!
//! UNVERIFIED: nothing here has run on a GPU (this development machine has none); the CPU
//! test suite only checks the layout arithmetic. `scripts/gpu_check.sh` prints the stall
//! and overlap figures on a GPU machine.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys, CudaContext};
use ort::value::{DynValueTypeMarker, ValueRefMut};

use super::memory::{cuda_memory, weight_view};
use super::pinned::PinnedWeights;
use crate::{Error, Result};

/// Device allocations are handed out at this alignment (cudaMalloc's own guarantee).
const ALIGN: usize = 256;

/// Byte offsets of each weight inside a staging buffer, and the total size.
pub fn layout(sizes: impl IntoIterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut end = 0usize;
    for n in sizes {
        offsets.push(end);
        end = (end + n).div_ceil(ALIGN) * ALIGN;
    }
    (offsets, end)
}

/// Upload figures since the last reset.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct UploadStats {
    pub uploads: u64,
    pub bytes: u64,
    /// GPU time of the copies (CUDA events on the side stream).
    pub copy_s: f64,
    /// Host time spent waiting for a copy to finish before its block could run.
    pub stall_s: f64,
}

impl UploadStats {
    /// Share of the copy time hidden behind compute: 1 − stall / copy.
    pub fn overlap(&self) -> Option<f64> {
        (self.copy_s > 0.0).then(|| (1.0 - self.stall_s / self.copy_s).clamp(0.0, 1.0))
    }
    pub fn add(&mut self, o: &UploadStats) {
        self.uploads += o.uploads;
        self.bytes += o.bytes;
        self.copy_s += o.copy_s;
        self.stall_s += o.stall_s;
    }
}

struct Slot {
    ptr: sys::CUdeviceptr,
    /// The stage whose weights are (being) copied in.
    holds: Option<usize>,
    start: sys::CUevent,
    done: sys::CUevent,
    bytes: u64,
    /// The copy's events have not been read into the stats yet.
    pending: bool,
}

/// The two device buffers and the side stream of one GPU.
pub struct Staging {
    device: u32,
    ctx: Arc<CudaContext>,
    stream: sys::CUstream,
    capacity: usize,
    slots: [Slot; 2],
    stats: UploadStats,
}

// SAFETY: the raw handles belong to the primary context, which any thread may use; the
// pipeline keeps each `Staging` behind a mutex and uses it from its GPU's worker thread.
unsafe impl Send for Staging {}

fn check(r: sys::CUresult, what: &str, device: u32) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::runtime(format!(
            "staging streamed weights on cuda:{device}: {what} failed ({r:?})"
        )))
    }
}

impl Staging {
    /// Two device buffers of `capacity` bytes each and a non-blocking side stream on GPU
    /// `device`.
    pub fn new(device: u32, capacity: usize) -> Result<Staging> {
        let err = |e: String| Error::runtime(format!("staging on cuda:{device}: {e}"));
        let ctx = std::panic::catch_unwind(|| CudaContext::new(device as usize))
            .map_err(|_| err("the CUDA driver panicked".into()))?
            .map_err(|e| err(e.to_string()))?;
        ctx.bind_to_thread().map_err(|e| err(e.to_string()))?;
        let mut stream: sys::CUstream = std::ptr::null_mut();
        // SAFETY: plain driver calls with out-pointers to locals; the context is current.
        unsafe {
            check(
                sys::cuStreamCreate(
                    &mut stream,
                    sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                ),
                "cuStreamCreate",
                device,
            )?;
        }
        let mut staging = Staging {
            device,
            ctx,
            stream,
            capacity,
            slots: [Slot::empty(), Slot::empty()],
            stats: UploadStats::default(),
        };
        for i in 0..2 {
            let slot = &mut staging.slots[i];
            // SAFETY: as above; every handle made here is released in `Drop`.
            unsafe {
                check(
                    sys::cuMemAlloc_v2(&mut slot.ptr, capacity.max(ALIGN)),
                    "cuMemAlloc",
                    device,
                )?;
                // Blocking sync: the host sleeps on a copy instead of spinning a core.
                let flags = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC as u32;
                let start = sys::cuEventCreate(&mut slot.start, flags);
                check(start, "cuEventCreate", device)?;
                let done = sys::cuEventCreate(&mut slot.done, flags);
                check(done, "cuEventCreate", device)?;
            }
        }
        Ok(staging)
    }

    pub fn stats(&self) -> UploadStats {
        self.stats
    }
    pub fn reset_stats(&mut self) {
        self.stats = UploadStats::default();
    }

    /// Starts copying `stage`'s weights into the slot that does not hold `current` (the
    /// block about to run), unless they are already there or on their way.
    pub fn prefetch(
        &mut self,
        stage: usize,
        weights: &PinnedWeights,
        current: usize,
    ) -> Result<()> {
        if self.slots.iter().any(|s| s.holds == Some(stage)) {
            return Ok(());
        }
        let free = if self.slots[0].holds == Some(current) {
            1
        } else {
            0
        };
        self.upload(free, stage, weights)
    }

    /// Makes sure `stage`'s weights are on the device (copying them now when no prefetch
    /// brought them) and waits for the copy; returns the slot.
    pub fn ensure(&mut self, stage: usize, weights: &PinnedWeights) -> Result<usize> {
        let slot = match self.slots.iter().position(|s| s.holds == Some(stage)) {
            Some(i) => i,
            None => {
                // Prefer an empty slot, then one whose copy was already used (keeping a
                // prefetch that has not run yet), then slot 0.
                let i = (self.slots.iter().position(|s| s.holds.is_none()))
                    .or_else(|| self.slots.iter().position(|s| !s.pending))
                    .unwrap_or(0);
                self.upload(i, stage, weights)?;
                i
            }
        };
        let t = Instant::now();
        let s = &mut self.slots[slot];
        // SAFETY: `done` was recorded on our stream by `upload`.
        unsafe {
            check(
                sys::cuEventSynchronize(s.done),
                "cuEventSynchronize",
                self.device,
            )?
        };
        self.stats.stall_s += t.elapsed().as_secs_f64();
        if s.pending {
            let mut ms = 0f32;
            // SAFETY: both events are recorded and complete.
            let r = unsafe { sys::cuEventElapsedTime(&mut ms, s.start, s.done) };
            if r == sys::CUresult::CUDA_SUCCESS {
                self.stats.copy_s += f64::from(ms) / 1e3;
            }
            self.stats.uploads += 1;
            self.stats.bytes += s.bytes;
            s.pending = false;
        }
        Ok(slot)
    }

    /// Device tensors viewing `slot`'s copy of `weights`, by input name, for one run.
    pub fn views(
        &self,
        slot: usize,
        weights: &PinnedWeights,
    ) -> Result<Vec<(String, ValueRefMut<'_, DynValueTypeMarker>)>> {
        let mem = cuda_memory(self.device)?;
        let (offsets, _) = layout(weights.parts().map(|p| p.bytes.len()));
        let base = self.slots[slot].ptr;
        let mut out = Vec::new();
        for (p, off) in weights.parts().zip(offsets) {
            let ptr = (base + off as u64) as usize as *mut std::ffi::c_void;
            // SAFETY: the slot holds exactly these bytes at this offset (same layout as the
            // upload) and lives as long as `self`, which the views borrow.
            let v = unsafe { weight_view(&mem, ptr, p.dtype, p.shape, p.name)? };
            out.push((p.name.to_string(), v));
        }
        Ok(out)
    }

    fn upload(&mut self, slot: usize, stage: usize, weights: &PinnedWeights) -> Result<()> {
        let (offsets, total) = layout(weights.parts().map(|p| p.bytes.len()));
        if total > self.capacity {
            return Err(Error::runtime(format!(
                "staging on cuda:{}: block needs {total} bytes, buffers hold {}",
                self.device, self.capacity
            )));
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::runtime(format!("staging on cuda:{}: {e}", self.device)))?;
        let (dev, stream) = (self.device, self.stream);
        let s = &mut self.slots[slot];
        // Until every copy is queued the slot holds nothing usable.
        s.holds = None;
        s.pending = false;
        // SAFETY: sources are pinned host buffers that outlive the pipeline; destinations lie
        // inside this slot (offsets + sizes ≤ capacity, checked above); all handles are ours.
        unsafe {
            check(sys::cuEventRecord(s.start, stream), "cuEventRecord", dev)?;
            for (p, off) in weights.parts().zip(offsets) {
                check(
                    sys::cuMemcpyHtoDAsync_v2(
                        s.ptr + off as u64,
                        p.bytes.as_ptr().cast(),
                        p.bytes.len(),
                        stream,
                    ),
                    "cuMemcpyHtoDAsync",
                    dev,
                )?;
            }
            check(sys::cuEventRecord(s.done, stream), "cuEventRecord", dev)?;
        }
        s.holds = Some(stage);
        s.bytes = weights.parts().map(|p| p.bytes.len() as u64).sum();
        s.pending = true;
        Ok(())
    }
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            ptr: 0,
            holds: None,
            start: std::ptr::null_mut(),
            done: std::ptr::null_mut(),
            bytes: 0,
            pending: false,
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: copies still in flight finish before their buffers are freed; null/zero
        // handles (a failed `new`) are skipped.
        unsafe {
            if !self.stream.is_null() {
                let _ = sys::cuStreamSynchronize(self.stream);
            }
            for s in &self.slots {
                if s.ptr != 0 {
                    let _ = sys::cuMemFree_v2(s.ptr);
                }
                for e in [s.start, s.done] {
                    if !e.is_null() {
                        let _ = sys::cuEventDestroy_v2(e);
                    }
                }
            }
            if !self.stream.is_null() {
                let _ = sys::cuStreamDestroy_v2(self.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_laid_out_at_aligned_offsets() {
        let (off, total) = layout([10, 256, 1, 0, 300]);
        assert_eq!(off, vec![0, 256, 512, 768, 768]);
        assert_eq!(total, 768 + 512);
        assert_eq!(layout([]), (vec![], 0));
    }

    #[test]
    fn overlap_is_the_hidden_share_of_copy_time() {
        let s = UploadStats {
            uploads: 4,
            bytes: 100,
            copy_s: 0.4,
            stall_s: 0.1,
        };
        assert!((s.overlap().unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(UploadStats::default().overlap(), None);
    }
}
