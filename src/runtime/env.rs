//! The process's one ONNX Runtime environment, with one global intra-op thread pool that
//! every CPU session shares (ONNX Runtime allows one environment per process).
//!
//! The environment is released by [`shutdown`]: the CLI calls it before `main` returns, the
//! C ABI from `dv_shutdown()`, and an exit handler registered when the environment is
//! created calls it when the host never does (process exit or `dlclose`). Releasing it joins
//! the pool's threads; left running, they read memory that exit handlers free (valgrind:
//! invalid reads in `libonnxruntime.so` during `__run_exit_handlers`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ort::environment::{Environment, GlobalThreadPoolOptions};

use super::library;
use crate::{Error, ErrorKind, Result};

static EXPLICIT: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The library file ONNX Runtime was loaded from: loaded once per process and never
/// unloaded (the `ort` crate keeps it), so it outlives any one environment.
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static STATE: Mutex<State> = Mutex::new(State::NotStarted);
/// Releases every session built on the environment; [`shutdown`] calls it first. Set by
/// the owner of the sessions (the loader's registry), so the runtime does not reach up into it.
static RELEASE_SESSIONS: OnceLock<fn()> = OnceLock::new();

enum State {
    /// No environment yet. A failed creation stays here: after a wrong path, a later call
    /// (say after `dv_init` names the right library) tries again.
    NotStarted,
    Running(Environment),
    /// [`shutdown`] released it; `ort` 2.0.0-rc.15 refuses a second environment in the
    /// same process, so this is final.
    ShutDown,
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of every call that needs ONNX Runtime after [`shutdown`].
pub const SHUT_DOWN_MESSAGE: &str = "distorch-vision was shut down (dv_shutdown, or the process is exiting): ONNX Runtime's environment was released and cannot be created again in this process (the ort crate allows one environment per process); start a new process to encode again";

/// Names the ONNX Runtime library to load; must come before the first session.
pub fn set_library_path(path: &Path) -> Result<()> {
    if let Some(loaded) = LIBRARY.get() {
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(v) = std::env::var("DISTORCH_THREADS") else {
        return cores;
    };
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "DISTORCH_THREADS={v:?} is not a whole number of threads (valid: 1 or more, e.g. 1..={cores} on this machine); using every core ({cores})"
                )
            });
            cores
        }
    }
}

/// The environment, created on first use. Sessions keep their own handle to it, so it is
/// released only once [`shutdown`] has run and the last session is gone.
pub fn environment() -> Result<Environment> {
    let mut st = state();
    match &*st {
        State::Running(env) => Ok(env.clone()),
        State::ShutDown => Err(Error::runtime(SHUT_DOWN_MESSAGE)),
        State::NotStarted => {
            let env = create()?;
            *st = State::Running(env.clone());
            Ok(env)
        }
    }
}

/// Creates the environment again after [`shutdown`] (`dv_init`). With `ort` 2.0.0-rc.15 this
/// fails, as the crate refuses a second environment in one process; the error says so and
/// names the way out. Before any shutdown it is [`environment`].
pub fn restart() -> Result<()> {
    let mut st = state();
    if !matches!(*st, State::ShutDown) {
        drop(st);
        return environment().map(drop);
    }
    match create() {
        Ok(env) => {
            *st = State::Running(env);
            Ok(())
        }
        Err(e) => Err(Error::runtime(format!(
            "ONNX Runtime cannot be started again after dv_shutdown in the same process ({}); start a new process to encode again",
            e.message()
        ))),
    }
}

/// True once [`shutdown`] has run.
pub fn is_shut_down() -> bool {
    matches!(*state(), State::ShutDown)
}

/// Releases every model's sessions, then the environment (which joins the global thread
/// pool's threads). Calls that need ONNX Runtime fail with [`SHUT_DOWN_MESSAGE`] afterwards.
/// An encode still running on another thread keeps its sessions, and so the environment,
/// until it returns. Safe to call more than once, and before anything was loaded.
pub fn shutdown() {
    if let Some(release) = RELEASE_SESSIONS.get() {
        release();
    }
    let released = std::mem::replace(&mut *state(), State::ShutDown);
    // Plugin execution providers go before the environment, while this library is loaded.
    if let State::Running(env) = &released {
        super::openvino::unregister(env);
    }
    // Dropped outside the lock: ReleaseEnv joins the pool's threads.
    drop(released);
}

/// Names the function that releases every session; [`shutdown`] calls it before the
/// environment goes, as ONNX Runtime wants sessions released before their environment. The
/// first registration wins (there is one session owner per process).
pub fn on_shutdown_release(release: fn()) {
    let _ = RELEASE_SESSIONS.set(release);
}

/// Registers [`shutdown`] to run at process exit, or when this library is unloaded.
///
/// Called once the environment exists, so ONNX Runtime's own static destructors were
/// registered before (glibc runs exit handlers in reverse order): the pool is joined while
/// everything its threads touch is still alive. `__cxa_atexit` with this object's
/// `__dso_handle` (what C++ uses for statics) also runs it from `dlclose`, before the code
/// goes away; a plain `atexit` in a Rust library would not.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn register_exit_shutdown() {
    extern "C" {
        static __dso_handle: u8;
        fn __cxa_atexit(
            f: unsafe extern "C" fn(*mut std::ffi::c_void),
            arg: *mut std::ffi::c_void,
            dso: *const u8,
        ) -> i32;
    }
    unsafe extern "C" fn at_exit(_: *mut std::ffi::c_void) {
        // Never unwind into libc.
        let _ = std::panic::catch_unwind(shutdown);
    }
    // SAFETY: `at_exit` lives in this object, which `__dso_handle` names, so glibc runs it
    // (at exit or on dlclose) while the code is still mapped.
    let rc = unsafe { __cxa_atexit(at_exit, std::ptr::null_mut(), &raw const __dso_handle) };
    if rc != 0 {
        tracing::warn!("could not register the exit-time shutdown of ONNX Runtime");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn register_exit_shutdown() {}

fn create() -> Result<Environment> {
    let explicit = EXPLICIT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let path = library::find(explicit.as_deref())?;
    disable_one_ds_telemetry();
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
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(register_exit_shutdown);
    let _ = LIBRARY.set(path.clone());
    tracing::debug!("ONNX Runtime loaded from {}", path.display());
    Ok(env)
}

/// ONNX Runtime 1.29+ on Linux starts a 1DS telemetry client with the first environment: its
/// own thread, outside the pool, waking about every 10 s, which `with_telemetry(false)` (called
/// after creation) does not stop. It lives until ONNX Runtime's static destructors, and one of
/// them frees a string it copies before another joins it (valgrind: invalid reads during
/// `__run_exit_handlers`, a crash at exit now and then). `ORT_DISABLE_TELEMETRY`, read when the
/// client would start, keeps it from starting; a value the user set is left alone.
fn disable_one_ds_telemetry() {
    const VAR: &str = "ORT_DISABLE_TELEMETRY";
    if std::env::var_os(VAR).is_none() {
        // Set once, before ONNX Runtime is loaded, under the creation lock.
        std::env::set_var(VAR, "1");
    }
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
    LIBRARY.get().map(PathBuf::as_path)
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
