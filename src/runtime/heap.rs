//! Returning freed heap memory to the operating system.
//!
//! While a session is built, ONNX Runtime reads each weight into a malloc'd buffer, packs it
//! for its GEMM kernels into another and frees the first. glibc keeps such freed blocks in
//! its heap (after the first large free it raises its mmap threshold, so later weight-sized
//! buffers come from the heap too), which left some 30–45 MB of a ViT-B's freed weight
//! buffers resident. `malloc_trim` hands whole free pages back; it only releases memory
//! nobody holds, so calling it from a library is harmless to the host.

/// Releases free heap pages (glibc only; elsewhere nothing to do).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; no pointer of ours is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
