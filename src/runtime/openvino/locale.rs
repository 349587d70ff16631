//! Keeping the host's C locale across calls into OpenVINO. `ov::Core::compile_model` sets the
//! process-wide locale to "C" and back (seen with gdb); two compiles at once on two threads
//! interleave those calls and leave "C" behind (seen in a Python host: after a load on OpenVINO
//! its default text encoding had become ASCII, and reading a UTF-8 file without naming the
//! encoding failed). So OpenVINO sessions are built one at a time ([`build_lock`]), and every
//! call into the plugin (registering it, building a session, running one) holds a
//! [`KeepLocale`], which puts the locale back if it changed anyway.

use std::ffi::{CStr, CString};
use std::sync::{Mutex, MutexGuard};

static BUILD: Mutex<()> = Mutex::new(());

/// Held while an OpenVINO session is built (compiled), process-wide.
pub(crate) fn build_lock() -> MutexGuard<'static, ()> {
    BUILD.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct KeepLocale(Option<CString>);

impl KeepLocale {
    pub(crate) fn new() -> KeepLocale {
        KeepLocale(current())
    }
}

/// The process's locale as `setlocale` names it (all categories).
fn current() -> Option<CString> {
    // SAFETY: a NULL locale only queries; the returned string is copied before any other
    // setlocale call could overwrite it.
    let p = unsafe { libc::setlocale(libc::LC_ALL, std::ptr::null()) };
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_owned())
}

impl Drop for KeepLocale {
    fn drop(&mut self) {
        let Some(saved) = &self.0 else { return };
        if current().as_ref() != Some(saved) {
            // SAFETY: a locale string setlocale itself returned.
            unsafe { libc::setlocale(libc::LC_ALL, saved.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_locale_is_put_back() {
        let before = current();
        {
            let _keep = KeepLocale::new();
            let c = CString::new("C").unwrap();
            unsafe { libc::setlocale(libc::LC_ALL, c.as_ptr()) };
        }
        assert_eq!(current(), before);
    }
}
