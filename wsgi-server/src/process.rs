//! Process-level chores of a Unix daemon: pidfile, detaching, dropping
//! privileges, process titles, systemd's socket activation and readiness
//! notification, dying with the master, and re-executing the binary for
//! an upgrade (USR2) with the listening sockets passed by descriptor.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Writes our pid to `path` (atomically: a temporary file renamed).
///
/// # Errors
/// The file could not be written.
pub fn write_pidfile(path: &Path) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, format!("{}\n", std::process::id()))?;
    std::fs::rename(&temporary, path)
}

/// Removes the pidfile at `path` if it names `pid` (gunicorn's
/// `Pidfile.unlink`): after an upgrade another master may own the name.
pub fn remove_pidfile_of(path: &Path, pid: i32) {
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    if named == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// The pidfile of a master started by USR2 while the old one runs:
/// `PIDFILE.2`, renamed to `PIDFILE` when it is promoted (gunicorn's).
pub fn upgrade_pidfile(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".2");
    name.into()
}

/// The environment variable naming the listening descriptors a new master
/// inherits from the old one (gunicorn's `GUNICORN_FD`).
pub const UPGRADE_FDS_VAR: &str = "WSGI_SERVER_FD";
/// The environment variable with the old master's pid (gunicorn's
/// `GUNICORN_PID`): its presence makes this master the new one of an
/// upgrade until the old one is gone.
pub const UPGRADE_PID_VAR: &str = "WSGI_SERVER_PID";

/// What a master started by an old master's USR2 inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The old master (our parent until it exits).
    pub old_master: i32,
    /// The listening sockets, in the old master's order.
    pub fds: Vec<RawFd>,
}

/// Reads (and removes, so our workers and our own later upgrades do not
/// see them) the variables an old master set for us.
pub fn take_upgrade() -> Option<Upgrade> {
    let fds = std::env::var(UPGRADE_FDS_VAR).ok();
    let old_master = std::env::var(UPGRADE_PID_VAR).ok();
    std::env::remove_var(UPGRADE_FDS_VAR);
    std::env::remove_var(UPGRADE_PID_VAR);
    let fds: Vec<RawFd> = fds?
        .split(',')
        .filter_map(|fd| fd.trim().parse().ok())
        .collect();
    let old_master: i32 = old_master?.trim().parse().ok()?;
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    // A stale variable from a shell (not our parent's doing) is ignored.
    (parent == old_master && !fds.is_empty()).then_some(Upgrade { old_master, fds })
}

/// How this process was started: what a USR2 re-executes.
#[derive(Debug)]
struct StartContext {
    cwd: std::path::PathBuf,
    args: Vec<CString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

static START: std::sync::OnceLock<StartContext> = std::sync::OnceLock::new();

/// Remembers the command line, environment and directory of this start,
/// first thing in `main`: process titles later overwrite the argv area,
/// and `--env` and `--chdir` change the others.
pub fn remember_start() {
    use std::os::unix::ffi::OsStrExt;
    let _ = START.get_or_init(|| StartContext {
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        args: std::env::args_os()
            .filter_map(|arg| CString::new(arg.as_bytes()).ok())
            .collect(),
        env: std::env::vars_os().collect(),
    });
}

/// USR2: forks a child that executes this program again (same argv, same
/// environment as at start, same directory), handing it `fds` (the
/// listening sockets) through [`UPGRADE_FDS_VAR`]. Returns the child's pid.
/// Call only from a process without other threads (the master).
///
/// # Errors
/// The start was not remembered, or the fork failed.
pub fn reexec(fds: &[RawFd]) -> io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let start = START
        .get()
        .ok_or_else(|| io::Error::other("the command line was not remembered"))?;
    let program = start
        .args
        .first()
        .cloned()
        .ok_or_else(|| io::Error::other("no argv[0]"))?;
    // Everything the child needs is built before the fork: after it, only
    // async-signal-safe calls.
    let master = std::process::id();
    let fd_list = fds
        .iter()
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut env: Vec<CString> = start
        .env
        .iter()
        .filter(|(key, _)| {
            let key = key.as_bytes();
            key != UPGRADE_FDS_VAR.as_bytes()
                && key != UPGRADE_PID_VAR.as_bytes()
                && !key.starts_with(b"LISTEN_")
        })
        .filter_map(|(key, value)| {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            CString::new(pair).ok()
        })
        .collect();
    env.push(CString::new(format!("{UPGRADE_FDS_VAR}={fd_list}")).expect("no NUL"));
    env.push(CString::new(format!("{UPGRADE_PID_VAR}={master}")).expect("no NUL"));
    let mut argv: Vec<*const libc::c_char> = start.args.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|pair| pair.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = CString::new(start.cwd.as_os_str().as_bytes()).unwrap_or_else(|_| c"/".into());
    // SAFETY: the master has no other threads; the child only makes
    // async-signal-safe calls (fcntl, sigaction, sigprocmask, chdir,
    // execvpe, _exit) on data prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: see above; in the child.
    unsafe {
        for &fd in fds {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
        }
        // Dispositions the master set (ignored signals survive exec) and
        // its mask go back to the defaults a fresh start has.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::chdir(cwd.as_ptr());
        libc::execvpe(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127);
    }
}

/// Detaches from the terminal: fork, new session, fork again, standard
/// streams to /dev/null. Only the grandchild returns.
///
/// # Errors
/// A fork or `setsid` failed.
pub fn daemonize() -> io::Result<()> {
    for round in 0..2 {
        // SAFETY: called before any thread exists (the master has none).
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            // SAFETY: the parent leaves without running destructors that
            // could touch state now owned by the child.
            _ => unsafe { libc::_exit(0) },
        }
        // SAFETY: plain setsid in the first child.
        if round == 0 && unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let null = CString::new("/dev/null").expect("no NUL");
    // SAFETY: opening /dev/null and duplicating it over 0, 1 and 2.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// Drops to `group` and `user` (names or numbers), group first. The
/// supplementary groups become `user`'s own with `initgroups` (gunicorn's
/// `--initgroups`), else only the group.
///
/// # Errors
/// Unknown names, or the system refused.
pub fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
    initgroups: bool,
) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let user_entry = match user {
        Some(name) => {
            Some(lookup_user(name).ok_or_else(|| invalid(&format!("unknown user {name:?}")))?)
        }
        None => None,
    };
    let gid = match group {
        Some(name) => {
            Some(lookup_group(name).ok_or_else(|| invalid(&format!("unknown group {name:?}")))?)
        }
        None => user_entry.as_ref().map(|entry| entry.1),
    };
    if let Some(gid) = gid {
        // SAFETY: plain setgroups/setgid calls with valid arguments.
        unsafe {
            match &user_entry {
                Some((_, _, name)) if initgroups => {
                    let name = CString::new(name.as_str()).map_err(|_| invalid("user name"))?;
                    if libc::initgroups(name.as_ptr(), gid) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                _ => {
                    if libc::setgroups(1, &gid) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            if libc::setgid(gid) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some((uid, _, _)) = user_entry {
        // SAFETY: plain setuid.
        if unsafe { libc::setuid(uid) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn lookup_user(name: &str) -> Option<(libc::uid_t, libc::gid_t, String)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // copy what we need at once (the master has no other threads).
    let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
    if !entry.is_null() {
        // SAFETY: non-null entry from getpwnam.
        let entry = unsafe { &*entry };
        return Some((entry.pw_uid, entry.pw_gid, name.to_owned()));
    }
    let uid: libc::uid_t = name.parse().ok()?;
    // SAFETY: as above, by uid.
    let entry = unsafe { libc::getpwuid(uid) };
    let gid = if entry.is_null() {
        uid
    } else {
        // SAFETY: non-null entry from getpwuid.
        unsafe { (*entry).pw_gid }
    };
    Some((uid, gid, name.to_owned()))
}

fn lookup_group(name: &str) -> Option<libc::gid_t> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getgrnam returns static storage or null; read at once.
    let entry = unsafe { libc::getgrnam(cname.as_ptr()) };
    if !entry.is_null() {
        // SAFETY: non-null entry from getgrnam.
        return Some(unsafe { (*entry).gr_gid });
    }
    name.parse().ok()
}

/// Sets the umask.
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Asks the kernel to send `signal` to this process when its parent dies,
/// and returns false if the parent is already gone.
pub fn die_with_parent(signal: libc::c_int, parent: libc::pid_t) -> bool {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() == parent }
}

/// The argv area, for process titles: (start, length), found once.
static ARGV_AREA: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();

extern "C" {
    /// glibc's pointer to argv[0].
    static program_invocation_name: *mut libc::c_char;
}

/// Sets the process title shown by `ps` (by overwriting the argv area, as
/// setproctitle does, within its original length) and the thread name
/// shown by `top` and `ps -o comm` (15 bytes).
pub fn set_title(title: &str) {
    let area = *ARGV_AREA.get_or_init(|| {
        let length = std::fs::read("/proc/self/cmdline").ok()?.len();
        // SAFETY: glibc sets program_invocation_name to argv[0] before main.
        let start = unsafe { program_invocation_name } as usize;
        (start != 0 && length > 1).then_some((start, length))
    });
    if let Some((start, length)) = area {
        let bytes = title.as_bytes();
        let copy = bytes.len().min(length - 1);
        // SAFETY: [start, start + length) is the kernel-provided argv block
        // of this process (its length read from /proc/self/cmdline); we
        // write within it and keep a NUL at the end.
        unsafe {
            let area = std::slice::from_raw_parts_mut(start as *mut u8, length);
            area[..copy].copy_from_slice(&bytes[..copy]);
            area[copy..].fill(0);
        }
    }
    let short: Vec<u8> = title
        .bytes()
        .filter(|&byte| byte != 0)
        .take(15)
        .chain(std::iter::once(0))
        .collect();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, short.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Listening sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`): fds
/// 3.., if they are meant for us. The variables are removed so children do
/// not take them for theirs.
pub fn systemd_listen_fds() -> Vec<RawFd> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|count| count.parse::<RawFd>().ok())
        .unwrap_or(0);
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !ours {
        return Vec::new();
    }
    (3..3 + count.max(0)).collect()
}

/// Sends a state line to systemd (`READY=1`, `STATUS=...`) when
/// `NOTIFY_SOCKET` is set; does nothing otherwise.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(_) => return,
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let _ = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|address| socket.send_to_addr(state.as_bytes(), &address))
    } else {
        socket.send_to(state.as_bytes(), Path::new(&path))
    };
}

/// Resident memory of `pid` in bytes (from /proc).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf cannot fail for _SC_PAGESIZE.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(pages * page)
}

/// Unmaps the pages of this process's read-only file mappings that hold
/// no private copies (`Anonymous: 0` in /proc/self/smaps): the master's
/// start-up read them (the loader's relocation tables and symbol lookups,
/// library initialisers) and its loop never does again, while a worker
/// forked from it does not inherit them (fork copies no page table entries
/// for such mappings). Clean page cache: a page read again is faulted back
/// with the same contents. Returns the kB that were resident.
pub fn drop_clean_file_pages() -> u64 {
    use std::io::{BufRead, BufReader};

    let Ok(smaps) = std::fs::File::open("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    // The mapping being read and its resident kB.
    let mut current: Option<(usize, usize)> = None;
    let mut resident = 0;
    let mut line = String::new();
    // Line by line through a small buffer: the master keeps what it
    // allocates (its allocator has nothing that returns freed pages).
    let mut reader = BufReader::with_capacity(4096, smaps);
    while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(start), Ok(end))
                    if path.starts_with('/') && perms.starts_with("r-") && perms.ends_with('p') =>
                {
                    Some((start, end))
                }
                _ => None,
            };
        } else if first == "Rss:" {
            resident = fields
                .next()
                .and_then(|kb| kb.parse::<u64>().ok())
                .unwrap_or(0);
        } else if first == "Anonymous:" {
            if let Some((start, end)) = current.take() {
                if fields.next() == Some("0") && resident > 0 {
                    // SAFETY: a private, read-only file mapping without
                    // private copies: its pages are the file's, and one read
                    // again is faulted back from it unchanged.
                    unsafe {
                        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                    };
                    dropped += resident;
                }
            }
        }
        line.clear();
    }
    dropped
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Rss kB of the mapping that starts at `start` (/proc/self/smaps).
    fn resident(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&header));
        lines
            .find_map(|line| line.strip_prefix("Rss:"))
            .map(|kb| kb.trim().trim_end_matches(" kB").parse().unwrap())
            .unwrap()
    }

    #[test]
    fn clean_file_pages_are_dropped_and_read_back() {
        let len = 64 * 1024;
        let path = std::env::temp_dir().join(format!("wsgi-clean-{}", std::process::id()));
        let contents: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&contents)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: mapping our own file, private and read-only.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(start, libc::MAP_FAILED);
        // SAFETY: inside our mapping, which stays until munmap below.
        let mapped = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        assert_eq!(
            mapped.iter().map(|&byte| u64::from(byte)).sum::<u64>(),
            contents.iter().map(|&byte| u64::from(byte)).sum::<u64>()
        );
        assert!(resident(start as usize) > 0);
        assert!(super::drop_clean_file_pages() >= 64);
        assert_eq!(resident(start as usize), 0);
        assert!(mapped == contents.as_slice());
        // SAFETY: unmapping what we mapped; `mapped` is not used after.
        unsafe { libc::munmap(start, len) };
        std::fs::remove_file(&path).unwrap();
    }
}
