//! Outputs objects: the tensors of one encode, registered under an id, read by name or index
//! as borrowed `dv_tensor` views, freed by the host.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use super::ffi::{guard, guard_out, opt_str, put, DvStatus, Fail, R};
use super::ffi::{DV_ERR_INVALID_ARGUMENT, DV_ERR_NOT_FOUND, DV_ERR_STRUCT_SIZE};
use super::handles;
use crate::model::Outputs;

/// `DV_DTYPE_F32`: every model output.
pub const DV_DTYPE_F32: i32 = 1;
/// `DV_DTYPE_I64`: a naflex model's `spatial_shapes` (each image's patch grid).
pub const DV_DTYPE_I64: i32 = 2;

/// `dv_tensor` (version 1 layout).
#[repr(C)]
pub struct DvTensor {
    pub struct_size: usize,
    pub name: *const c_char,
    pub data: *const std::ffi::c_void,
    pub dtype: i32,
    pub ndim: usize,
    pub shape: *const i64,
    pub numel: usize,
    pub nbytes: usize,
}

/// Copies the loader's outputs into an outputs object and registers it; a naflex model's
/// grids come last, as the int64 tensor `spatial_shapes` `[B, 2]`.
pub(super) fn register(res: Outputs) -> u64 {
    let grids = res.grids.as_deref().map(|g| handles::Tensor {
        name: crate::job::output::SPATIAL_SHAPES.to_string(),
        c_name: CString::new(crate::job::output::SPATIAL_SHAPES).unwrap_or_default(),
        data: handles::TensorData::I64(crate::image::naflex::spatial_shapes(g)),
        shape: vec![g.len() as i64, 2],
    });
    let mut tensors: Vec<handles::Tensor> = res
        .tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.shape().iter().map(|&d| d as i64).collect();
            let n = t.len();
            let data = if t.is_standard_layout() {
                // Contiguous: reuse the storage when the elements are all of it.
                match t.into_raw_vec_and_offset() {
                    (v, Some(0)) if v.len() == n => v,
                    (v, Some(off)) => v[off..off + n].to_vec(),
                    (_, None) => Vec::new(),
                }
            } else {
                t.iter().copied().collect()
            };
            handles::Tensor {
                c_name: CString::new(name.clone()).unwrap_or_default(),
                name,
                data: handles::TensorData::F32(data),
                shape,
            }
        })
        .collect();
    tensors.extend(grids);
    handles::insert_outputs(handles::OutputSet { tensors })
}

/// The live outputs object `id`.
fn live(id: u64) -> R<Arc<handles::OutputSet>> {
    handles::outputs(id).ok_or_else(|| Fail::handle("outputs", id))
}

/// `dv_status dv_outputs_count(dv_outputs outputs, size_t *count_out)`.
///
/// # Safety
/// `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_count(outputs: u64, count_out: *mut usize) -> DvStatus {
    guard_out(count_out, "count_out", 0, || {
        Ok(live(outputs)?.tensors.len())
    })
}

/// Fills a caller's `dv_tensor` with borrowed views into `t`.
///
/// # Safety
/// `out` is non-NULL and points to `out->struct_size` writable bytes.
unsafe fn fill_tensor(out: *mut DvTensor, t: &handles::Tensor) -> R {
    let size = std::ptr::read_unaligned(out.cast::<usize>());
    let v1 = std::mem::size_of::<DvTensor>();
    if size < v1 {
        return Err(Fail::new(
            DV_ERR_STRUCT_SIZE,
            format!("tensor_out->struct_size is {size}; this library needs at least {v1} (set it to sizeof(dv_tensor))"),
        ));
    }
    let (data, dtype, numel, nbytes) = match &t.data {
        handles::TensorData::F32(v) => (v.as_ptr().cast(), DV_DTYPE_F32, v.len(), v.len() * 4),
        handles::TensorData::I64(v) => (v.as_ptr().cast(), DV_DTYPE_I64, v.len(), v.len() * 8),
    };
    put(
        out,
        DvTensor {
            struct_size: size,
            name: t.c_name.as_ptr(),
            data,
            dtype,
            ndim: t.shape.len(),
            shape: t.shape.as_ptr(),
            numel,
            nbytes,
        },
    );
    Ok(())
}

/// `dv_status dv_outputs_get(dv_outputs outputs, const char *name, dv_tensor *tensor_out)`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `tensor_out` is NULL or points to
/// `tensor_out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_get(
    outputs: u64,
    name: *const c_char,
    tensor_out: *mut DvTensor,
) -> DvStatus {
    guard(|| {
        if tensor_out.is_null() {
            return Err(Fail::null("tensor_out"));
        }
        let set = live(outputs)?;
        let name = opt_str(name, "name")?.ok_or_else(|| Fail::null("name"))?;
        let t = set.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
            let have: Vec<&str> = set.tensors.iter().map(|t| t.name.as_str()).collect();
            Fail::new(
                DV_ERR_NOT_FOUND,
                format!("no output {name:?} (have: {})", have.join(", ")),
            )
        })?;
        fill_tensor(tensor_out, t)
    })
}

/// `dv_status dv_outputs_get_index(dv_outputs outputs, size_t index, dv_tensor *tensor_out)`.
///
/// # Safety
/// As [`dv_outputs_get`].
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_get_index(
    outputs: u64,
    index: usize,
    tensor_out: *mut DvTensor,
) -> DvStatus {
    guard(|| {
        if tensor_out.is_null() {
            return Err(Fail::null("tensor_out"));
        }
        let set = live(outputs)?;
        let t = set.tensors.get(index).ok_or_else(|| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!(
                    "index {index} is out of range (count {})",
                    set.tensors.len()
                ),
            )
        })?;
        fill_tensor(tensor_out, t)
    })
}

/// `dv_status dv_outputs_free(dv_outputs outputs)`.
#[no_mangle]
pub extern "C" fn dv_outputs_free(outputs: u64) -> DvStatus {
    guard(|| {
        if outputs == 0 || handles::remove_outputs(outputs) {
            Ok(())
        } else {
            Err(Fail::handle("outputs", outputs))
        }
    })
}
