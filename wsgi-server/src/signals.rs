//! Signals for the master: handlers only write the signal number into a
//! self-pipe, and the master's loop reads it (no work in signal context, no
//! async runtime in the master, so a fork inherits nothing half-done).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The signals the master handles. Besides gunicorn's, those whose default
/// action would stop or kill the master and leave its workers serving
/// without it (TSTP, ALRM, ...): the master logs and ignores them.
/// Synchronous faults (SEGV, BUS, FPE, ILL, ABRT, SYS, TRAP) keep their
/// default: ignoring them would loop on the fault.
pub const MASTER_SIGNALS: [libc::c_int; 19] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
    libc::SIGWINCH,
    libc::SIGTSTP,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSTKFLT,
];

/// The signals a worker ignores: they are meant for the master (HUP, TTIN,
/// TTOU, WINCH, USR2 until a runtime arms its stack dump on it), or their
/// default would stop or kill the worker mid-request (TSTP, ALRM, ...). A
/// worker acts on TERM, INT, QUIT and USR1 only.
pub const WORKER_IGNORED: [libc::c_int; 14] = [
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGWINCH,
    libc::SIGUSR2,
    libc::SIGTSTP,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSTKFLT,
];

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored
        // so the interrupted code does not see it change.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The read end of the self-pipe.
#[derive(Debug)]
pub struct SignalPipe {
    read: RawFd,
    write: RawFd,
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers.
    ///
    /// # Errors
    /// `pipe2` or `sigaction` failed.
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        PIPE_WRITE.store(fds[1], Ordering::Relaxed);
        for signal in MASTER_SIGNALS {
            set_handler(
                signal,
                on_signal as extern "C" fn(libc::c_int) as usize,
                libc::SA_RESTART,
            )?;
        }
        Ok(SignalPipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// Waits up to `timeout_ms` for signals; returns those that arrived.
    pub fn wait(&self, timeout_ms: i32) -> Vec<libc::c_int> {
        self.wait_with(&[], timeout_ms).0
    }

    /// Waits up to `timeout_ms` for signals or for one of `fds` to be
    /// readable; returns the signals that arrived and the indexes of the
    /// readable `fds`.
    pub fn wait_with(&self, fds: &[RawFd], timeout_ms: i32) -> (Vec<libc::c_int>, Vec<usize>) {
        let mut polls: Vec<libc::pollfd> = std::iter::once(self.read)
            .chain(fds.iter().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds, its length given.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
        let ready: Vec<usize> = polls[1..]
            .iter()
            .enumerate()
            .filter(|(_, poll)| poll.revents != 0)
            .map(|(index, _)| index)
            .collect();
        let mut signals = Vec::new();
        let mut buffer = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer of the given size.
            let read = unsafe { libc::read(self.read, buffer.as_mut_ptr().cast(), buffer.len()) };
            if read <= 0 {
                break;
            }
            signals.extend(
                buffer[..read as usize]
                    .iter()
                    .map(|&byte| libc::c_int::from(byte)),
            );
        }
        (signals, ready)
    }

    /// In a freshly forked worker: default dispositions, [`WORKER_IGNORED`]
    /// ignored, and the pipe closed.
    pub fn reset_in_child(&self) {
        PIPE_WRITE.store(-1, Ordering::Relaxed);
        for signal in MASTER_SIGNALS {
            let _ = set_handler(signal, libc::SIG_DFL, 0);
        }
        for signal in WORKER_IGNORED {
            let _ = set_handler(signal, libc::SIG_IGN, 0);
        }
        // SAFETY: closing our own pipe's descriptors in the child.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

fn set_handler(signal: libc::c_int, handler: usize, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: sigaction is plain old data; a zeroed one with an empty mask
    // and the handler set is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal's name, for logs (`SIGKILL`).
pub fn name(signal: libc::c_int) -> String {
    let known = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    known
        .iter()
        .find(|(number, _)| *number == signal)
        .map(|(_, name)| (*name).to_owned())
        .unwrap_or_else(|| format!("signal {signal}"))
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn send(pid: i32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) on a pid we forked.
        unsafe { libc::kill(pid, signal) };
    }
}
