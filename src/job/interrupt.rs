//! Ctrl-C (SIGINT) and SIGTERM during encoding. In a sharded run (`watch`) the first signal
//! asks the run to stop after the batch in flight (said at once, on stderr), write the finished
//! rows as a shard and report how to resume; a second one stops at once but still writes the
//! rows already encoded (the batch in flight is dropped: resume encodes it again); a third ends
//! the process without writing. A one-file run (`Guard::install_one_file`) has nothing
//! finished to keep: a signal ends it, saying so. Only programs that opt in (`enable`, the CLI
//! does) get these handlers, and only while a run is encoding: a host embedding the library
//! keeps its own.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Signals caught so far.
static SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);
/// Write end of the pipe the handler tells the watcher thread through (-1: no watcher).
static WATCHER_PIPE: AtomicI32 = AtomicI32::new(-1);

/// What the watcher reads from its pipe.
const STOP_AFTER_BATCH: u8 = 1;
const STOP_NOW: u8 = 2;
const QUIT: u8 = 0;

/// Said by a one-file encode stopped by a signal (it has no finished rows to keep), naming the
/// option as the library does.
pub const ONE_FILE_MESSAGE: &str = "interrupted; nothing was written: one-file mode writes at the end - use `shard_size` for resumable runs\n";
/// [`ONE_FILE_MESSAGE`] in the program's wording, made once: the signal handler only reads it.
static ONE_FILE: OnceLock<Box<str>> = OnceLock::new();

/// How the program words library messages it prints as they happen (the CLI names its flags).
pub type Wording = Box<dyn Fn(&str) -> String + Send + Sync>;
static WORDING: OnceLock<Wording> = OnceLock::new();

/// Lets encodes of this process catch SIGINT/SIGTERM while they run; `wording` turns the
/// library's option names in what is said then into the program's.
pub fn enable(wording: Wording) {
    let _ = ONE_FILE.set(wording(ONE_FILE_MESSAGE).into());
    let _ = WORDING.set(wording);
    ENABLED.store(true, Ordering::SeqCst);
}

/// True once a caught signal asked the run to stop.
pub fn requested() -> bool {
    SIGNALS_SEEN.load(Ordering::SeqCst) > 0
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: atomics, write to a pipe, _exit.
    let n = SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    let fd = WATCHER_PIPE.load(Ordering::SeqCst);
    if fd >= 0 && n <= 2 {
        let b = if n == 1 { STOP_AFTER_BATCH } else { STOP_NOW };
        // SAFETY: write is async-signal-safe; one byte from a local.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    } else if n >= 2 {
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
            // only touches atomics, writes to a pipe and calls _exit.
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

/// Runs `body` (a sharded run's encoding) with SIGINT/SIGTERM caught, when enabled. A watcher
/// thread answers the signals, so the user hears back at once however long a batch takes: on
/// the first it prints `first_message` (the loop in `body` sees [`requested`] between batches);
/// on the second it runs `stop_now` (which writes the rows already encoded) and ends the
/// process with status 130. `stop_now` runs while `body` is still encoding, so what it touches
/// must be shared with `body` under a lock.
pub(crate) fn watch<R>(
    first_message: &str,
    stop_now: impl Fn() + Sync,
    body: impl FnOnce() -> R,
) -> R {
    if !ENABLED.load(Ordering::SeqCst) {
        return body();
    }
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two descriptors of a new pipe.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        // No pipe, no watcher: the first signal still stops between batches, a second ends
        // the process.
        let _guard = Guard::install_handler(on_signal);
        return body();
    }
    let [read_end, write_end] = fds;
    WATCHER_PIPE.store(write_end, Ordering::SeqCst);
    let guard = Guard::install_handler(on_signal);
    let result = std::thread::scope(|s| {
        s.spawn(|| loop {
            let mut b = QUIT;
            // SAFETY: reads one byte into a local from the pipe this function owns.
            let n = unsafe { libc::read(read_end, (&mut b as *mut u8).cast(), 1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            match (n, b) {
                (1, STOP_AFTER_BATCH) => say(first_message),
                (1, STOP_NOW) => {
                    stop_now();
                    // SAFETY: ends the process now; finished shards and the index are written.
                    unsafe { libc::_exit(130) }
                }
                _ => break,
            }
        });
        let r = body();
        drop(guard);
        WATCHER_PIPE.store(-1, Ordering::SeqCst);
        // SAFETY: one byte to the pipe this function owns: the watcher ends.
        unsafe { libc::write(write_end, (&QUIT as *const u8).cast(), 1) };
        r
    });
    // SAFETY: the watcher has ended (the scope joined it); nothing else uses these.
    unsafe {
        libc::close(read_end);
        libc::close(write_end);
    }
    result
}

/// A line on stderr, on a line of its own when a progress line is being redrawn.
pub(crate) fn say(message: &str) {
    use std::io::{IsTerminal, Write};
    let mut err = std::io::stderr().lock();
    if std::io::stderr().is_terminal() {
        let _ = write!(err, "\r\x1b[2K");
    }
    let message = WORDING
        .get()
        .map_or_else(|| message.to_string(), |w| w(message));
    let _ = writeln!(err, "{message}");
    let _ = err.flush();
}
