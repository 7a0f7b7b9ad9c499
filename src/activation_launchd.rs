//! launchd socket activation (macOS): the `agent` and `control` entries of the LaunchAgent's
//! `Sockets` dictionary, fetched with `launch_activate_socket(3)`.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::raw::{c_char, c_int};

use super::{AGENT, Activated, ActivationError, CONTROL, listener};

unsafe extern "C" {
    /// `int launch_activate_socket(const char *name, int **fds, size_t *cnt);` from libSystem.
    fn launch_activate_socket(name: *const c_char, fds: *mut *mut c_int, cnt: *mut usize) -> c_int;
}

/// The sockets launchd holds for this job; none when the daemon was not started by launchd.
pub(super) fn take() -> Result<Activated, ActivationError> {
    let mut activated = Activated::default();
    for name in [AGENT, CONTROL] {
        let Some(fd) = activate(name)? else {
            continue;
        };
        let listener = listener(fd.0, fd.1, name)?;
        if name == AGENT {
            activated.agent = Some(listener);
        } else {
            activated.control = Some(listener);
        }
    }
    Ok(activated)
}

/// The first descriptor launchd passes for `name`; `None` when the job has no such socket or was
/// not started by launchd (ESRCH, ENOENT).
fn activate(name: &str) -> Result<Option<(OwnedFd, c_int)>, ActivationError> {
    let c_name = CString::new(name).expect("socket names have no NUL");
    let mut fds: *mut c_int = std::ptr::null_mut();
    let mut count: usize = 0;
    // SAFETY: `c_name` is a valid C string for the call; `fds` and `count` are valid out
    // pointers. On success launchd stores a malloc'd array of `count` descriptors we now own.
    let rc = unsafe { launch_activate_socket(c_name.as_ptr(), &raw mut fds, &raw mut count) };
    if rc != 0 {
        return match rc {
            libc::ESRCH | libc::ENOENT => Ok(None),
            errno => Err(ActivationError::Launchd {
                name: name.to_owned(),
                source: io::Error::from_raw_os_error(errno),
            }),
        };
    }
    if fds.is_null() {
        return Ok(None);
    }
    // SAFETY: launchd returned `count` descriptors in `fds`; each is ours to own once. We keep
    // the first (one path per socket in our plist), close any others, and free the array.
    let first = unsafe {
        let all: Vec<c_int> = std::slice::from_raw_parts(fds, count).to_vec();
        libc::free(fds.cast());
        let mut owned = all.into_iter().map(|fd| (OwnedFd::from_raw_fd(fd), fd));
        owned.next()
    };
    Ok(first)
}
