//! SIGCHLD as a readable pipe (the self-pipe trick), so the monitor's poll loop wakes up when
//! a container exits.
//!
//! Not a signalfd: that needs SIGCHLD blocked, and a blocked mask is inherited through
//! fork and exec by every container process. A handler is reset to the default by exec.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    // Only async-signal-safe calls here; errno is preserved for the interrupted code.
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"c".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// The read end of the self-pipe; readable whenever a child changed state.
pub struct ChildSignals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl ChildSignals {
    /// Installs the SIGCHLD handler (once per process).
    pub fn install() -> nix::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_sigchld),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        unsafe { sigaction(Signal::SIGCHLD, &action) }?;
        Ok(ChildSignals { read, _write: write })
    }

    /// Empties the pipe; call before reaping so no wake-up is lost.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for ChildSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Puts every signal disposition the monitor changed back to the default; for children
/// that run container code (signal dispositions other than "handled" survive exec).
pub fn reset_for_child() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGCHLD, Signal::SIGPIPE] {
        let _ = unsafe { sigaction(sig, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
