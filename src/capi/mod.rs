//! The C ABI (`distorch_vision.h`): a plugin surface over [`crate::loader`].
//!
//! Rules every entry point follows:
//! - it returns a `dv_status` (or a static/borrowed string) and never unwinds: the body runs
//!   inside `catch_unwind`, a panic becomes `DV_ERR_PANIC`;
//! - on failure it stores a message for [`dv_last_error`](library::dv_last_error) (per
//!   thread) and leaves every handle/string/number out-parameter zeroed/NULL (a caller's
//!   `dv_tensor` is left as it was); on success the message is cleared;
//! - models and outputs are `u64` ids checked against a registry (see [`handles`]), so an
//!   unknown, freed or unloaded id is `DV_ERR_INVALID_HANDLE`, never undefined behaviour;
//! - after `dv_shutdown` (or the exit-time shutdown) calls that need ONNX Runtime return
//!   `DV_ERR_SHUT_DOWN`;
//! - buffers come with explicit element counts that must match the stated shape.
//!
//! All the work is the loader's: load is [`ClipVision::load`](crate::loader::ClipVision::load),
//! encode is [`ClipVision::encode`](crate::loader::ClipVision::encode), the plan is
//! [`crate::plan::Plan::to_json`].
//!
//! The entry points are grouped as the header groups them: [`library`] (versions, errors,
//! init and shutdown, devices, models on disk, strings), [`options`] (`dv_load_options`),
//! [`model`] (load, unload, plan), [`encode`] and [`outputs`]. What they share at the
//! boundary (status codes, `guard`, out-parameters, reading buffers) is in `ffi`.

pub mod encode;
mod ffi;
pub mod handles;
pub mod image;
pub mod library;
pub mod model;
pub mod options;
pub mod outputs;

pub use ffi::{status_name, status_of, DvStatus};
pub use ffi::{
    DV_ERR_DOES_NOT_FIT, DV_ERR_INVALID_ARGUMENT, DV_ERR_INVALID_HANDLE, DV_ERR_INVALID_MODEL,
    DV_ERR_IO, DV_ERR_NOT_FOUND, DV_ERR_NULL_POINTER, DV_ERR_PANIC, DV_ERR_RUNTIME,
    DV_ERR_SHUT_DOWN, DV_ERR_SIZE_MISMATCH, DV_ERR_STRUCT_SIZE, DV_OK,
};
pub use library::ABI_VERSION;
pub use options::DvLoadOptions;
pub use outputs::{DvTensor, DV_DTYPE_F32};
