//! Where ONNX Runtime values live: the CUDA memory of a GPU as ORT names it, which GPU (if
//! any) a value is on, and tensor views of raw weight bytes in host or device memory (used
//! by the pinned copies and the staging buffers).

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::value::{DynValue, DynValueTypeMarker, TensorRefMut, ValueRefMut};

use crate::model::DType;
use crate::{Error, Result};

/// The CUDA memory of GPU `n`, as ORT names it.
pub fn cuda_memory(n: u32) -> Result<MemoryInfo<'static>> {
    Ok(MemoryInfo::new(
        AllocationDevice::CUDA,
        n as i32,
        AllocatorType::Device,
        MemoryType::Default,
    )?)
}

/// Where a value lives: `None` for host-accessible memory, `Some(n)` for GPU `n`.
pub fn value_device(v: &DynValue) -> Option<u32> {
    let t = v.view().downcast::<ort::value::DynTensorValueType>().ok()?;
    let mi = t.memory_info();
    if mi.is_cpu_accessible() || mi.allocation_device() != AllocationDevice::CUDA {
        None
    } else {
        Some(mi.device_id().max(0) as u32)
    }
}

/// A tensor view of a weight's bytes at `ptr` in the memory `info` names.
///
/// # Safety
/// `ptr` addresses `shape` elements of `dtype` in that memory, valid for `'a`.
pub(crate) unsafe fn weight_view<'a>(
    info: &MemoryInfo,
    ptr: *mut std::ffi::c_void,
    dtype: DType,
    shape: &[i64],
    name: &str,
) -> Result<ValueRefMut<'a, DynValueTypeMarker>> {
    let shape = ort::value::Shape::new(shape.iter().copied());
    let info = info.clone();
    // SAFETY: as the caller promises.
    Ok(unsafe {
        match dtype {
            DType::F16 => TensorRefMut::<half::f16>::from_raw(info, ptr, shape)?.into_dyn(),
            DType::BF16 => TensorRefMut::<half::bf16>::from_raw(info, ptr, shape)?.into_dyn(),
            DType::F32 => TensorRefMut::<f32>::from_raw(info, ptr, shape)?.into_dyn(),
            other => {
                return Err(Error::runtime(format!(
                    "streamed weight {name}: dtype {other:?} is not a float weight"
                )))
            }
        }
    })
}
