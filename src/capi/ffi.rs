//! What every entry point shares at the boundary: status codes and their names, `Fail` (a
//! status with a message), `guard` (no unwinding, the per-thread last error), writing
//! out-parameters, and reading strings and buffers a caller passes in.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{Error, ErrorKind};

use super::handles;

pub type DvStatus = i32;
pub const DV_OK: DvStatus = 0;
pub const DV_ERR_INVALID_ARGUMENT: DvStatus = 1;
pub const DV_ERR_NOT_FOUND: DvStatus = 2;
pub const DV_ERR_IO: DvStatus = 3;
pub const DV_ERR_INVALID_MODEL: DvStatus = 4;
pub const DV_ERR_DOES_NOT_FIT: DvStatus = 5;
pub const DV_ERR_RUNTIME: DvStatus = 6;
pub const DV_ERR_NULL_POINTER: DvStatus = 7;
pub const DV_ERR_INVALID_HANDLE: DvStatus = 8;
pub const DV_ERR_SIZE_MISMATCH: DvStatus = 9;
pub const DV_ERR_STRUCT_SIZE: DvStatus = 10;
pub const DV_ERR_PANIC: DvStatus = 11;
pub const DV_ERR_SHUT_DOWN: DvStatus = 12;

/// Every status code with its header name, NUL-terminated for C.
const STATUS_NAMES: &[(DvStatus, &str)] = &[
    (DV_OK, "DV_OK\0"),
    (DV_ERR_INVALID_ARGUMENT, "DV_ERR_INVALID_ARGUMENT\0"),
    (DV_ERR_NOT_FOUND, "DV_ERR_NOT_FOUND\0"),
    (DV_ERR_IO, "DV_ERR_IO\0"),
    (DV_ERR_INVALID_MODEL, "DV_ERR_INVALID_MODEL\0"),
    (DV_ERR_DOES_NOT_FIT, "DV_ERR_DOES_NOT_FIT\0"),
    (DV_ERR_RUNTIME, "DV_ERR_RUNTIME\0"),
    (DV_ERR_NULL_POINTER, "DV_ERR_NULL_POINTER\0"),
    (DV_ERR_INVALID_HANDLE, "DV_ERR_INVALID_HANDLE\0"),
    (DV_ERR_SIZE_MISMATCH, "DV_ERR_SIZE_MISMATCH\0"),
    (DV_ERR_STRUCT_SIZE, "DV_ERR_STRUCT_SIZE\0"),
    (DV_ERR_PANIC, "DV_ERR_PANIC\0"),
    (DV_ERR_SHUT_DOWN, "DV_ERR_SHUT_DOWN\0"),
];

/// The header's name of a status code (`"DV_ERR_NOT_FOUND"`), `None` for an unknown one.
pub fn status_name(status: DvStatus) -> Option<&'static str> {
    status_name_c(status).map(|n| n.trim_end_matches('\0'))
}

/// As [`status_name`], NUL-terminated for C.
pub(super) fn status_name_c(status: DvStatus) -> Option<&'static str> {
    STATUS_NAMES
        .iter()
        .find(|(c, _)| *c == status)
        .map(|(_, n)| *n)
}

/// The status code of a library error kind.
pub fn status_of(kind: ErrorKind) -> DvStatus {
    match kind {
        ErrorKind::InvalidArgument => DV_ERR_INVALID_ARGUMENT,
        ErrorKind::NotFound => DV_ERR_NOT_FOUND,
        ErrorKind::Io => DV_ERR_IO,
        ErrorKind::InvalidModel => DV_ERR_INVALID_MODEL,
        ErrorKind::DoesNotFit => DV_ERR_DOES_NOT_FIT,
        ErrorKind::Runtime => DV_ERR_RUNTIME,
    }
}

/// A failure on its way to C: a status code and a message.
pub(super) struct Fail {
    pub code: DvStatus,
    pub message: String,
}

impl Fail {
    pub fn new(code: DvStatus, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }
    pub fn null(what: &str) -> Fail {
        Fail::new(DV_ERR_NULL_POINTER, format!("{what} is NULL"))
    }
    pub fn handle(kind: &str, id: u64) -> Fail {
        Fail::new(
            DV_ERR_INVALID_HANDLE,
            format!("{kind} handle {id} is not valid (never issued, already freed or unloaded, or another kind of object)"),
        )
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(status_of(e.kind()), e.message())
    }
}

pub(super) type R<T = ()> = std::result::Result<T, Fail>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = c;
        }
    });
}

/// The message of this thread's last failed call ("" after a success), valid until this
/// thread's next call.
pub(super) fn last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|e| e.try_borrow().map(|s| s.as_ptr()).ok())
            .ok()
            .flatten()
    })
    .ok()
    .flatten()
    .unwrap_or(EMPTY.as_ptr().cast())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs one entry point's body: catches panics, maps failures to status codes, records
/// the message of the last failure for this thread.
pub(super) fn guard(f: impl FnOnce() -> R) -> DvStatus {
    let (code, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => (DV_OK, String::new()),
        Ok(Err(fail)) => (fail.code, fail.message),
        Err(p) => (
            DV_ERR_PANIC,
            format!(
                "internal error (a bug in distorch-vision): {}",
                panic_message(p.as_ref())
            ),
        ),
    };
    // Setting the message cannot unwind (no allocation failure handling aside), but keep
    // even that on this side of the boundary.
    let _ = catch_unwind(|| set_last_error(&message));
    code
}

/// An entry point with one out-parameter `out` (named `name` in messages): `out` is set to
/// `zero` first, so it reads as nothing on any failure, then to what `f` returns.
pub(super) fn guard_out<T>(out: *mut T, name: &str, zero: T, f: impl FnOnce() -> R<T>) -> DvStatus {
    if !out.is_null() {
        put(out, zero);
    }
    guard(|| {
        if out.is_null() {
            return Err(Fail::null(name));
        }
        put(out, f()?);
        Ok(())
    })
}

/// As [`guard_out`] for a `char **` out-parameter: the string `f` returns, handed out to be
/// freed with `dv_string_free`.
pub(super) fn guard_string_out(
    out: *mut *mut c_char,
    name: &str,
    f: impl FnOnce() -> R<String>,
) -> DvStatus {
    guard_out(out, name, std::ptr::null_mut(), || {
        Ok(handles::string_into_raw(f()?))
    })
}

/// Writes the first `size` bytes of `value` (a caller's older, shorter struct version) to an
/// out-parameter that was already checked for NULL.
pub(super) fn put_prefix<T>(out: *mut T, size: usize, value: T) {
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: the caller checked `out` for NULL; the C contract makes `size` bytes writable.
    unsafe { std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), out.cast::<u8>(), n) }
}

/// Writes `value` to an out-parameter that was already checked for NULL.
pub(super) fn put<T>(out: *mut T, value: T) {
    // SAFETY: every caller checked `out` for NULL; the C contract makes it writable.
    unsafe { out.write(value) }
}

/// Reads an optional C string: NULL → None; invalid UTF-8 is an error naming the field.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string readable for the duration of the call.
pub(super) unsafe fn opt_str(p: *const c_char, field: &str) -> R<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p)
        .to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("{field} is not valid UTF-8"),
            )
        })
}

/// Fails with `DV_ERR_SHUT_DOWN` once the library was shut down (calls that need ONNX Runtime).
pub(super) fn running() -> R {
    if crate::runtime::env::is_shut_down() {
        return Err(Fail::new(
            DV_ERR_SHUT_DOWN,
            crate::runtime::env::SHUT_DOWN_MESSAGE,
        ));
    }
    Ok(())
}

/// Checks a caller's f32 buffer against its stated shape and borrows it.
///
/// # Safety
/// `data` is NULL or points to `count` readable f32 values for the duration of the call.
pub(super) unsafe fn f32_buffer<'a>(
    data: *const f32,
    count: usize,
    dims: &[(&str, usize)],
) -> R<&'a [f32]> {
    if data.is_null() {
        return Err(Fail::null("data"));
    }
    let shape = dims
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some((n, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            format!("{n} is 0 ({shape}); every dimension must be at least 1"),
        ));
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(*v))
        .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize));
    if expected != Some(count) {
        return Err(Fail::new(
            DV_ERR_SIZE_MISMATCH,
            format!(
                "buffer holds {count} f32 values but the shape ({shape}) needs {}",
                expected.map_or("more than can be addressed".to_string(), |n| n.to_string())
            ),
        ));
    }
    if (data as usize) % std::mem::align_of::<f32>() != 0 {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            "data is not aligned for f32",
        ));
    }
    Ok(std::slice::from_raw_parts(data, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_message() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, DV_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(guard(|| Ok(())), DV_OK);
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert_eq!(msg, "");
    }

    #[test]
    fn every_error_kind_has_its_own_status_named_after_it() {
        let mut codes: Vec<_> = ErrorKind::ALL.iter().map(|&k| status_of(k)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        assert!(!codes.contains(&DV_OK));
        // One name per kind: the status is DV_ERR_ and the kind's name in capitals (Python's
        // DistorchError.kind reads the kind back from it).
        for k in ErrorKind::ALL {
            let want = format!("DV_ERR_{}", k.as_str().to_uppercase());
            assert_eq!(status_name(status_of(k)), Some(want.as_str()), "{k:?}");
        }
    }
}
