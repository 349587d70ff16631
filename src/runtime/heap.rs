//! Returning freed heap memory to the operating system.
//!
//! While a session is built, ONNX Runtime reads each weight into a malloc'd buffer, packs it
//! for its GEMM kernels into another and frees the first (for f16 files there is an f32 cast
//! in between). glibc keeps such freed blocks in its heap, and with sizes that keep changing
//! it reuses them poorly: loading a ViT-L/14 f16 file peaked 300 MB higher without trimming.
//! `malloc_trim` hands whole free pages back; it only releases memory nobody holds, so
//! calling it from a library is harmless to the host. Trimming costs a page fault later for
//! every page released, so it is done only once enough is free to matter.

/// Free heap bytes worth giving back.
const TRIM_ABOVE: usize = 64 << 20;

/// Releases free heap pages when more than [`TRIM_ABOVE`] bytes are free (glibc only;
/// elsewhere nothing to do).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 and malloc_trim only read and adjust glibc's own free lists; no
    // pointer of ours is involved.
    unsafe {
        if libc::mallinfo2().fordblks > TRIM_ABOVE {
            libc::malloc_trim(0);
        }
    }
}
