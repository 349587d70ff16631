//! Page-locked (pinned) host copies of the weights of blocks that are homed on the CPU but
//! execute on a GPU (donor policy `stream`). Each pass binds them as session inputs, and
//! ONNX Runtime uploads them to the GPU; from pinned memory that upload is a DMA copy at
//! full PCIe speed instead of a staged copy from pageable memory.
//!
//! Each pass `staging` copies them into one of two device buffers on a side stream, the
//! next block's copy overlapping the current block's compute. Without a staging (its device
//! buffers could not be allocated) they are bound as host inputs and ONNX Runtime uploads
//! them on its own stream, without overlap.
//!
//! UNVERIFIED: nothing here has run on a GPU; the allocation goes through the CUDA driver
//! (cudarc), which this development machine does not have.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, PinnedHostSlice};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::value::{DynValueTypeMarker, ValueRefMut};

use super::memory::weight_view;
use crate::model::DType;
use crate::{Error, Result};

struct Buffer {
    name: String,
    dtype: DType,
    shape: Vec<i64>,
    data: PinnedHostSlice<u8>,
    /// The buffer's address (fixed for its life; read once after the initial fill).
    ptr: *mut u8,
    /// Bytes of the weight (the allocation is at least 1 byte).
    len: usize,
}

/// One pinned weight, as the staging uploads see it.
pub struct Part<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [i64],
    pub bytes: &'a [u8],
}

// SAFETY: `ptr` points into `data`, which is Send + Sync; it is only read from.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

/// One block's weights in pinned host memory.
pub struct PinnedWeights {
    buffers: Vec<Buffer>,
    _ctx: Arc<CudaContext>,
}

/// One weight to pin: input name, dtype and shape as the graph takes it, little-endian bytes.
pub struct WeightSource<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

impl PinnedWeights {
    /// Copies `weights` into pinned host memory through GPU `device`'s primary context
    /// (the one ONNX Runtime also uses).
    pub fn new(device: u32, weights: Vec<WeightSource<'_>>) -> Result<PinnedWeights> {
        let err = |e: String| Error::runtime(format!("pinned host memory for cuda:{device}: {e}"));
        let ctx = std::panic::catch_unwind(|| CudaContext::new(device as usize))
            .map_err(|_| err("the CUDA driver panicked".into()))?
            .map_err(|e| err(e.to_string()))?;
        let mut buffers = Vec::with_capacity(weights.len());
        for w in weights {
            // SAFETY: filled completely right below before any read.
            let mut data = unsafe {
                ctx.alloc_pinned_with_flags::<u8>(
                    w.bytes.len().max(1),
                    sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_WRITECOMBINED,
                )
            }
            .map_err(|e| err(e.to_string()))?;
            let slice = data.as_mut_slice().map_err(|e| err(e.to_string()))?;
            slice[..w.bytes.len()].copy_from_slice(&w.bytes);
            let ptr = slice.as_mut_ptr();
            buffers.push(Buffer {
                name: w.name,
                dtype: w.dtype,
                shape: w.shape,
                data,
                ptr,
                len: w.bytes.len(),
            });
        }
        Ok(PinnedWeights { buffers, _ctx: ctx })
    }

    /// The weights in input order.
    pub fn parts(&self) -> impl Iterator<Item = Part<'_>> {
        self.buffers.iter().map(|b| Part {
            name: &b.name,
            dtype: b.dtype,
            shape: &b.shape,
            // SAFETY: `ptr` addresses `len` initialised bytes of `data`, never written again.
            bytes: unsafe { std::slice::from_raw_parts(b.ptr, b.len) },
        })
    }

    /// Bytes held (= bytes uploaded per pass).
    pub fn bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.data.num_bytes() as u64).sum()
    }

    /// Tensors viewing the pinned buffers, by input name, for one pass.
    pub fn tensors(&self) -> Result<Vec<(String, ValueRefMut<'_, DynValueTypeMarker>)>> {
        // Labelled as host memory: ORT copies host → device, and the driver recognises the
        // page-locked range and DMAs directly from it.
        let info = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?;
        let mut out = Vec::with_capacity(self.buffers.len());
        for b in &self.buffers {
            // SAFETY: the buffer holds exactly `shape` elements of `dtype` and outlives the
            // returned views (they borrow `self`).
            let v = unsafe { weight_view(&info, b.ptr.cast(), b.dtype, &b.shape, &b.name)? };
            out.push((b.name.clone(), v));
        }
        Ok(out)
    }
}
