//! The `wsgi-server` binary: parse the command line, bind every listener,
//! then either supervise workers (the default: a master and `--workers`
//! processes) or serve in this process (`--no-master`).
//!
//! Exit codes: 0 clean stop, 1 bad usage, configuration or bind failure,
//! 4 the application could not be loaded (gunicorn's `APP_LOAD_ERROR`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use wsgi_core::Application;
use wsgi_server::cli::Cli;
use wsgi_server::config::{AppSource, ServerConfig};
use wsgi_server::listener::{bind, BindAddr, BindOptions, BindSpec, BoundListener, Protocol};
use wsgi_server::master::{ForkHooks, Master, WorkerContext};
use wsgi_server::scoreboard::WorkerSlot;
use wsgi_server::server::run;
use wsgi_server::worker::{wait_for_stop, Recycle};
use wsgi_server::{log, log as log_module, process};

const EXIT_USAGE: u8 = 1;

/// mimalloc rather than glibc's malloc: a request makes ~20 short-lived
/// allocations on the I/O and application threads, which cost ~3,000
/// instructions more per request in glibc (free lists, `malloc_consolidate`
/// on the larger ones) than in mimalloc's thread-local pages (callgrind,
/// hello at 16 connections; docs/performance.md). Python's own objects keep
/// CPython's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults trade memory for speed in a way a server with many
/// small worker processes should not: it commits its arenas eagerly and
/// keeps freed pages for a second. Worker RSS under 128 connections: 13.5 MiB
/// with glibc, 22.5 MiB with mimalloc's defaults, 14.4 MiB without
/// transparent huge pages (the `no_thp` feature, Cargo.toml), ~12.5-14.5 MiB
/// with these options as well, at the same speed. Freed pages are returned
/// after 100 ms, not at once: returning them at once made every 64 KiB
/// request-body buffer a `madvise` plus 16 page faults (64 KiB uploads:
/// 37-45 -> 30-35 us of CPU per request; peak RSS +0.3 MiB at hello c=128).
fn tune_allocator() {
    extern "C" {
        fn mi_option_get(option: libc::c_int) -> libc::c_long;
        fn mi_option_set(option: libc::c_int, value: libc::c_long);
    }
    // Positions in mimalloc 3's `mi_option_e` (mimalloc.h), each with its
    // default: if the enum ever moves, the defaults do not match and the
    // options are left alone rather than set at the wrong positions.
    const ARENA_EAGER_COMMIT: (libc::c_int, libc::c_long, libc::c_long) = (4, 2, 0);
    // In milliseconds.
    const PURGE_DELAY: (libc::c_int, libc::c_long, libc::c_long) = (15, 1000, 100);
    // In KiB: 1 GiB by default, 1 MiB here.
    const ARENA_RESERVE: (libc::c_int, libc::c_long, libc::c_long) = (23, 1 << 20, 1 << 10);
    let options = [ARENA_EAGER_COMMIT, PURGE_DELAY, ARENA_RESERVE];
    // SAFETY: plain getters and setters of mimalloc's option table, called
    // with in-range option numbers (checked against their defaults).
    unsafe {
        if options
            .iter()
            .all(|&(option, default, _)| mi_option_get(option) == default)
        {
            for (option, _, value) in options {
                mi_option_set(option, value);
            }
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            let help = matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            );
            let _ = error.print();
            return if help {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_USAGE)
            };
        }
    };
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("wsgi-server: error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(mask) = config.process.umask {
        process::set_umask(mask);
    }
    log_module::init(config.error_log.clone(), config.log_level);
    let code = serve(config);
    log_module::logger().flush();
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn serve(mut config: ServerConfig) -> i32 {
    let listeners = match bind_all(&mut config) {
        Ok(listeners) => listeners,
        Err(message) => {
            log!(Error, "{message}");
            return i32::from(EXIT_USAGE);
        }
    };
    for listener in &listeners {
        let protocol = match listener.spec.protocol {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
        };
        log!(
            Info,
            "Listening at: {} ({protocol}) ({})",
            listener.spec.addr,
            std::process::id()
        );
    }
    if config.process.daemon {
        if let Err(error) = process::daemonize() {
            log!(Error, "cannot daemonize: {error}");
            return i32::from(EXIT_USAGE);
        }
    }
    if let Some(path) = &config.process.pidfile {
        if let Err(error) = process::write_pidfile(path) {
            log!(
                Error,
                "cannot write the pidfile {}: {error}",
                path.display()
            );
            return i32::from(EXIT_USAGE);
        }
    }
    if config.process.user.is_some() || config.process.group.is_some() {
        if let Err(error) = process::drop_privileges(
            config.process.user.as_deref(),
            config.process.group.as_deref(),
        ) {
            log!(Error, "cannot switch user/group: {error}");
            return i32::from(EXIT_USAGE);
        }
    }
    let vacuum: Vec<std::path::PathBuf> = if config.process.vacuum {
        listeners
            .iter()
            .filter_map(|listener| listener.unlink_on_exit.clone())
            .chain(config.process.pidfile.clone())
            .collect()
    } else {
        Vec::new()
    };
    let code = if config.process.master {
        supervise(&config, listeners)
    } else {
        serve_here(&config, listeners)
    };
    for path in vacuum {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Binds `--bind`/`--socket` listeners and systemd's `LISTEN_FDS` ones.
fn bind_all(config: &mut ServerConfig) -> Result<Vec<BoundListener>, String> {
    let inherited = process::systemd_listen_fds();
    if !inherited.is_empty() {
        // Socket activation: systemd's sockets replace the default bind; they
        // speak the protocol of the first configured listener.
        let protocol = config
            .binds
            .first()
            .map_or(Protocol::Http, |spec| spec.protocol);
        config.binds = inherited
            .iter()
            .map(|fd| BindSpec {
                addr: BindAddr::Fd(*fd),
                protocol,
            })
            .collect();
    }
    let options = BindOptions {
        backlog: config.backlog,
        unix_mode: config.unix_socket_mode,
        reuse_port: config.process.reuse_port,
    };
    config
        .binds
        .iter()
        .map(|spec| bind(spec, options).map_err(|error| format!("cannot listen: {error}")))
        .collect()
}

/// `--no-master`: this process serves.
fn serve_here(config: &ServerConfig, listeners: Vec<BoundListener>) -> i32 {
    if let Err(error) = log_module::logger().start_writer_thread() {
        log!(Error, "cannot start the log thread: {error}");
        return i32::from(EXIT_USAGE);
    }
    let app = match load_app(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    log!(
        Info,
        "Serving in one process (no master), {} thread(s)",
        config.threads
    );
    let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
    let recycle = Recycle {
        max_requests: 0,
        max_lifetime: None,
    };
    match run(listeners, app, config, slot, wait_for_stop(slot, recycle)) {
        Ok(()) => {
            log!(Info, "Shutting down");
            0
        }
        Err(error) => {
            log!(Error, "server failed: {error}");
            i32::from(EXIT_USAGE)
        }
    }
}

/// The default: a master supervising `--workers` processes.
fn supervise(config: &ServerConfig, listeners: Vec<BoundListener>) -> i32 {
    let preloaded = if config.process.preload {
        match load_app(config) {
            Ok(app) => Some(app),
            Err(code) => return code,
        }
    } else {
        None
    };
    let worker_main = |context: &WorkerContext<'_>| worker_main(context, preloaded.clone());
    let hooks = match (&preloaded, &config.app) {
        (Some(_), AppSource::Python(_)) => python_fork_hooks(),
        _ => None,
    };
    match Master::new(config, listeners, &worker_main, hooks) {
        Ok(master) => master.run(),
        Err(error) => {
            log!(Error, "cannot start the master: {error}");
            i32::from(EXIT_USAGE)
        }
    }
}

/// A worker's life after the fork.
fn worker_main(context: &WorkerContext<'_>, preloaded: Option<Arc<dyn Application>>) -> i32 {
    let config = context.config;
    let name = config
        .process
        .name
        .as_deref()
        .map(|name| format!(" [{name}]"))
        .unwrap_or_default();
    process::set_title(&format!("wsgi-server: worker {}{name}", context.number));
    // The master's death takes its workers with it, gracefully.
    if !process::die_with_parent(libc::SIGTERM, context.master_pid) {
        return 0;
    }
    // SIGUSR2 asks for a stack dump (timeouts); without Python it is a no-op.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    redirect_stderr_to_log();
    if let Err(error) = log_module::logger().start_writer_thread() {
        log!(Error, "cannot start the log thread: {error}");
        return i32::from(EXIT_USAGE);
    }
    let loading = std::time::Instant::now();
    let app = match preloaded {
        Some(app) => app,
        None => match load_app(config) {
            Ok(app) => app,
            Err(code) => return code,
        },
    };
    enable_stack_dumps(config);
    log!(
        Info,
        "Worker {} ready in {} ms: serving with {} thread(s)",
        context.number,
        loading.elapsed().as_millis(),
        config.threads
    );
    let recycle = Recycle {
        max_requests: context.max_requests,
        max_lifetime: config.process.max_lifetime,
    };
    match run(
        take_listeners(context.listeners),
        app,
        config,
        context.slot,
        wait_for_stop(context.slot, recycle),
    ) {
        Ok(()) => 0,
        Err(error) => {
            log!(Error, "worker failed: {error}");
            1
        }
    }
}

/// The worker's own listeners: duplicates of the ones inherited from the
/// master, whose originals are closed, so that when the worker stops
/// accepting its process holds no copy of the listening sockets.
fn take_listeners(inherited: &[BoundListener]) -> Vec<BoundListener> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    inherited
        .iter()
        .filter_map(|listener| {
            let original = listener.fd.as_raw_fd();
            // SAFETY: dup of a descriptor this process holds.
            let copy = unsafe { libc::dup(original) };
            // SAFETY: the inherited original is never used (nor dropped:
            // workers leave with _exit) after this.
            unsafe { libc::close(original) };
            if copy < 0 {
                return None;
            }
            // SAFETY: `copy` is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(copy) };
            Some(BoundListener {
                spec: listener.spec.clone(),
                fd,
                unlink_on_exit: None,
            })
        })
        .collect()
}

/// With a log file, the worker's standard error goes there too, so Python's
/// stray prints and stack dumps land in the log.
fn redirect_stderr_to_log() {
    use std::os::fd::AsRawFd;
    let Some(path) = log_module::logger().path() else {
        return;
    };
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // SAFETY: dup2 onto standard error of this (single-threaded) process.
        unsafe { libc::dup2(file.as_raw_fd(), 2) };
    }
}

fn load_app(config: &ServerConfig) -> Result<Arc<dyn Application>, i32> {
    match &config.app {
        AppSource::Rust(name) => wsgi_core::testing::app_by_name(name).ok_or_else(|| {
            log!(Error, "unknown built-in application {name:?}");
            i32::from(EXIT_USAGE)
        }),
        AppSource::Python(spec) => load_python(config, spec),
    }
}

#[cfg(feature = "python")]
fn load_python(config: &ServerConfig, spec: &str) -> Result<Arc<dyn Application>, i32> {
    use wsgi_python::{initialize, AppOptions, PyApplication, PythonConfig};
    let python = PythonConfig {
        virtualenv: config.python.virtualenv.clone(),
        chdir: config.python.chdir.clone(),
        pythonpath: config.python.pythonpath.clone(),
        argv: std::env::args().collect(),
    };
    let info = match initialize(&python) {
        Ok(info) => info,
        Err(error) => {
            // Like an application that does not load: at start-up the
            // master stops (a worker respawned forever would serve nothing),
            // and on a reload the old workers stay.
            log!(Error, "cannot start Python: {error}");
            return Err(wsgi_server::master::EXIT_APP_LOAD);
        }
    };
    log!(
        Info,
        "Python {} (prefix {}, executable {}{})",
        info.version.lines().next().unwrap_or(""),
        info.prefix,
        info.executable,
        info.virtualenv
            .as_ref()
            .map(|venv| format!(", virtualenv {venv}"))
            .unwrap_or_default()
    );
    let options = AppOptions {
        multithread: config.threads > 1,
        multiprocess: config.process.master && config.process.workers > 1,
        error_log: log_module::error_log(),
    };
    match PyApplication::load(spec, options) {
        Ok(app) => Ok(Arc::new(app)),
        Err(error) => {
            log!(Error, "Failed to load application {spec:?}:\n{error}");
            Err(wsgi_server::master::EXIT_APP_LOAD)
        }
    }
}

#[cfg(not(feature = "python"))]
fn load_python(_config: &ServerConfig, spec: &str) -> Result<Arc<dyn Application>, i32> {
    log!(
        Error,
        "cannot load {spec:?}: this build has no Python runtime (use --rust-app)"
    );
    Err(i32::from(EXIT_USAGE))
}

#[cfg(feature = "python")]
fn enable_stack_dumps(config: &ServerConfig) {
    if matches!(config.app, AppSource::Python(_)) {
        if let Err(error) = wsgi_python::fork::dump_stacks_on_signal(libc::SIGUSR2) {
            log!(Warning, "cannot arm Python stack dumps: {error}");
        }
    }
}

#[cfg(not(feature = "python"))]
fn enable_stack_dumps(_config: &ServerConfig) {}

/// CPython's fork protocol, for `--preload`.
#[derive(Debug)]
struct PythonForkHooks;

#[cfg(feature = "python")]
impl ForkHooks for PythonForkHooks {
    fn before_fork(&self) {
        wsgi_python::fork::before_fork();
    }
    fn after_fork_parent(&self) {
        wsgi_python::fork::after_fork_parent();
    }
    fn after_fork_child(&self) {
        wsgi_python::fork::after_fork_child();
    }
}

#[cfg(feature = "python")]
fn python_fork_hooks() -> Option<&'static dyn ForkHooks> {
    Some(&PythonForkHooks)
}

#[cfg(not(feature = "python"))]
fn python_fork_hooks() -> Option<&'static dyn ForkHooks> {
    let _ = PythonForkHooks;
    None
}
