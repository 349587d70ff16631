//! Ctrl-C (SIGINT) and SIGTERM during sharded encoding: the first signal asks the run to stop
//! after the batch in flight, write the finished rows as a shard and report how to resume; a
//! second one ends the process at once (finished shards are safe: they are written
//! atomically). Only programs that opt in (`enable`, the CLI does) get these handlers, and
//! only while a sharded run is encoding: a host embedding the library keeps its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static ENABLED: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Said by a one-file encode stopped by a signal (it has no finished rows to keep), naming the
/// option as the library does; `enable` takes the program's own wording of it.
pub const ONE_FILE_MESSAGE: &str = "interrupted; nothing was written: one-file mode writes at the end - use `shard_size` for resumable runs\n";
static ONE_FILE: OnceLock<Box<str>> = OnceLock::new();

/// Lets encodes of this process catch SIGINT/SIGTERM while they run; `one_file_message` is
/// [`ONE_FILE_MESSAGE`] as the program words it (the CLI names its flags).
pub fn enable(one_file_message: &str) {
    let _ = ONE_FILE.set(one_file_message.into());
    ENABLED.store(true, Ordering::SeqCst);
}

/// True once a caught signal asked the run to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and _exit on the second signal.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(130) }
    }
}

extern "C" fn on_signal_one_file(_: libc::c_int) {
    // A OnceLock once set is read with one atomic load: async-signal-safe.
    let message = ONE_FILE.get().map_or(ONE_FILE_MESSAGE, |m| m);
    // SAFETY: write and _exit are async-signal-safe; the message outlives the process.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(130)
    }
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// The handlers, installed while it lives (when enabled); the previous ones come back on drop.
pub(crate) struct Guard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Guard {
    pub(crate) fn install() -> Guard {
        Guard::install_handler(on_signal)
    }

    /// For a one-file encode: a signal ends the process at once, saying nothing was written.
    pub(crate) fn install_one_file() -> Guard {
        Guard::install_handler(on_signal_one_file)
    }

    fn install_handler(handler: extern "C" fn(libc::c_int)) -> Guard {
        let mut previous = Vec::new();
        if !ENABLED.load(Ordering::SeqCst) {
            return Guard { previous };
        }
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
            // only touches an atomic and calls _exit.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = handler as libc::sighandler_t;
                libc::sigemptyset(&mut act.sa_mask);
                act.sa_flags = libc::SA_RESTART;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        Guard { previous }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores the action saved by `install`.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}
