//! The process's one ONNX Runtime environment, with one global intra-op thread pool that
//! every CPU session shares (ONNX Runtime allows one environment per process).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::{Environment, GlobalThreadPoolOptions};

use super::library;
use crate::{Error, ErrorKind, Result};

static EXPLICIT: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Set once creation succeeds. A failure is not kept: after a wrong path, a later call
/// (say after `dv_init` names the right library) tries again.
static ENV: OnceLock<(Environment, PathBuf)> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Names the ONNX Runtime library to load; must come before the first session.
pub fn set_library_path(path: &Path) -> Result<()> {
    if let Some((_, loaded)) = ENV.get() {
        if loaded != path {
            return Err(Error::invalid(format!(
                "ONNX Runtime is already loaded from {}; it cannot be switched to {} in the same process",
                loaded.display(),
                path.display()
            )));
        }
        return Ok(());
    }
    *EXPLICIT.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
    Ok(())
}

/// Threads of the shared pool: `DISTORCH_THREADS`, else every core.
pub(crate) fn threads() -> usize {
    std::env::var("DISTORCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The environment, created on first use.
pub fn environment() -> Result<&'static Environment> {
    if let Some((env, _)) = ENV.get() {
        return Ok(env);
    }
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if ENV.get().is_none() {
        let created = create()?;
        let _ = ENV.set(created);
    }
    ENV.get()
        .map(|(env, _)| env)
        .ok_or_else(|| Error::runtime("the ONNX Runtime environment could not be kept"))
}

fn create() -> Result<(Environment, PathBuf)> {
    let explicit = EXPLICIT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let path = library::find(explicit.as_deref())?;
    let builder = ort::init_from(&path).map_err(|e| {
        Error::new(
            ErrorKind::Runtime,
            format!(
                "cannot load ONNX Runtime from {}: {e}; {}",
                path.display(),
                library::INSTALL_HINT
            ),
        )
    })?;
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(threads())?
        .with_inter_threads(1)?;
    let env = builder
        .with_name("distorch-vision")
        .with_telemetry(false)
        .with_global_thread_pool(pool)
        .build()?;
    // ort's logger asks ONNX Runtime for every message (verbose) and filters in tracing:
    // lower ONNX Runtime's own level to what the tracing filter lets through for `ort`, so
    // the session dumps of its info/verbose levels are never even formatted.
    env.set_log_level(ort_log_level());
    // Without the shared arena each session keeps its own: more memory, same results.
    if let Err(e) = register_shared_cpu_arena(&env) {
        tracing::warn!("{e}");
    }
    tracing::debug!("ONNX Runtime loaded from {}", path.display());
    Ok((env, path))
}

/// The most verbose ONNX Runtime level whose messages the tracing filter would show (ort
/// forwards them under the target `ort::logging`); `Error` when no subscriber listens.
fn ort_log_level() -> ort::logging::LogLevel {
    use ort::logging::LogLevel;
    use tracing::Level;
    if tracing::enabled!(target: "ort::logging", Level::TRACE) {
        LogLevel::Verbose
    } else if tracing::enabled!(target: "ort::logging", Level::INFO) {
        LogLevel::Info
    } else if tracing::enabled!(target: "ort::logging", Level::WARN) {
        LogLevel::Warning
    } else {
        LogLevel::Error
    }
}

/// The library file in use, once loaded.
pub fn loaded_library() -> Option<&'static Path> {
    ENV.get().map(|(_, p)| p.as_path())
}

/// Registers one CPU arena in the environment for every session (`session.use_env_allocators`):
/// blocks run one after another, so they can reuse the same activation memory instead of
/// each session keeping an arena as large as its own peak (which multiplied RSS by the
/// number of blocks and kept caches cold).
fn register_shared_cpu_arena(env: &Environment) -> Result<()> {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    use ort::AsPointer;
    let mem = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )?;
    let api = ort::api();
    // SAFETY: both pointers are live ONNX Runtime objects; a null arena config means defaults.
    let status = unsafe {
        (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), mem.ptr(), std::ptr::null())
    };
    check_status(status, "registering the shared CPU allocator")
}

/// An `OrtStatus` from a raw C API call as a result (`what` names the call in the error).
pub(crate) fn check_status(status: ort::sys::OrtStatusPtr, what: &str) -> Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status owns a NUL-terminated message until released, once.
    let msg = unsafe { std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)) }
        .to_string_lossy()
        .into_owned();
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(Error::runtime(format!("{what}: {msg}")))
}
