//! The server as a library: one entry that reads the configuration, binds
//! every listener, then either supervises workers (the default: a master
//! and `--workers` processes) or serves in this process (`--no-master`).
//!
//! [`main_with`] is the whole command line (parse, resolve, run) and
//! [`run`] the part after the configuration; both take the language runtime
//! behind [`Runtime`]. The reference binary (`main.rs`) calls [`main_with`]
//! with the embedded CPython; the Python package's extension module calls the
//! same function with the interpreter it runs in; another Rust program can
//! bring its own runtime.
//!
//! Exit codes: 0 clean stop, 1 bad usage, configuration or bind failure,
//! 4 the application could not be loaded (gunicorn's `APP_LOAD_ERROR`).

use std::sync::Arc;

use wsgi_core::Application;

use crate::config::{self, Loaded, Outcome, ServerConfig};
use crate::listener::{bind, BindAddr, BindOptions, BindSpec, BoundListener, Protocol};
use crate::master::{ExitChores, Master, WorkerContext};
use crate::runtime::Runtime;
use crate::scoreboard::WorkerSlot;
use crate::server::run as run_server;
use crate::worker::{wait_for_stop, watch_sources, Recycle, StopHooks};
use crate::{log, log as log_module, process};

/// Exit code of a bad command line, configuration, or a bind failure.
pub const EXIT_USAGE: i32 = 1;

/// The whole server from a command line: `args` without the program name,
/// `vars` the environment. Prints `--help`, `--version`, `--print-config`
/// and errors itself; returns the exit code.
///
/// The runtime lives as long as the process (the workers' threads call into
/// it), so it is leaked once the configuration is read. Call from the main
/// thread of a process that has no other threads, since the master forks
/// (the caller checks what its runtime may have started; CPython:
/// `threading.active_count()`), and after [`process::remember_start`] if
/// USR2 upgrades should work.
pub fn main_with<R: Runtime + 'static>(
    args: &[String],
    vars: &[(String, String)],
    mut runtime: R,
) -> i32 {
    let loaded = match config::load(args, vars, &mut runtime) {
        Ok(Outcome::Help) => {
            print!("{}", config::print::help());
            return 0;
        }
        Ok(Outcome::Version) => {
            println!("wsgi-server {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Ok(Outcome::Run(loaded)) => *loaded,
        Err(error) => {
            eprintln!("wsgi-server: error: {error}");
            return EXIT_USAGE;
        }
    };
    if loaded.print {
        print!("{}", config::print::print_config(&loaded.merged));
        return 0;
    }
    // `--env`: before any thread exists, so set_var is sound.
    for (key, value) in &loaded.config.python.raw_env {
        std::env::set_var(key, value);
    }
    if loaded.check {
        return check_config(&loaded, &runtime);
    }
    if let Some(mask) = loaded.config.process.umask {
        process::set_umask(mask);
    }
    log_module::init(loaded.config.error_log.clone(), loaded.config.log_level);
    for notice in &loaded.notices {
        match notice.split_once(':') {
            Some(("W", text)) => log!(Warning, "{text}"),
            Some((_, text)) => log!(Info, "{text}"),
            None => {}
        }
    }
    // Workers' threads call into it until the process ends.
    let runtime: &'static dyn Runtime = Box::leak(Box::new(runtime));
    let code = run(loaded.config, runtime);
    log_module::logger().flush();
    code
}

/// `--check-config`: the configuration loaded; now import the application
/// here, bind nothing, and say whether it worked.
fn check_config(loaded: &Loaded, runtime: &dyn Runtime) -> i32 {
    log_module::init(None, loaded.config.log_level);
    match runtime.load_app(&loaded.config) {
        Ok(_) => {
            println!("wsgi-server: configuration OK; the application loads");
            0
        }
        Err(_) => {
            eprintln!("wsgi-server: error: the application does not load (see above)");
            EXIT_USAGE
        }
    }
}

/// Serves `config` with `runtime` until stopped: binds (or inherits) the
/// listeners, detaches for `--daemon`, writes the pidfile, drops privileges,
/// then runs the master or, with `--no-master`, serves here. Returns the
/// exit code. The log must be set up ([`log::init`]).
pub fn run(mut config: ServerConfig, runtime: &'static dyn Runtime) -> i32 {
    runtime.on_starting(&config);
    // Before any thread exists: the variables are removed here.
    let upgrade = process::take_upgrade();
    let listeners = match bind_all(&mut config, upgrade.as_ref()) {
        Ok(listeners) => listeners,
        Err(message) => {
            log!(Error, "{message}");
            return EXIT_USAGE;
        }
    };
    let endpoints = match crate::ops::endpoint::bind_endpoints(&config) {
        Ok(endpoints) => endpoints,
        Err(message) => {
            log!(Error, "{message}");
            return EXIT_USAGE;
        }
    };
    for endpoint in &endpoints {
        log!(
            Info,
            "{:?} at: {}",
            endpoint.kind,
            endpoint.listener.spec.addr
        );
    }
    if !config.process.master && !endpoints.is_empty() {
        log!(
            Warning,
            "--metrics-bind and --stats are served by the master: nothing answers them with --no-master"
        );
    }
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
    if let Some(upgrade) = &upgrade {
        log!(
            Info,
            "Started by master {} (USR2 upgrade) with its listening sockets",
            upgrade.old_master
        );
    }
    // A master started by an upgrade stays the old master's child (as
    // gunicorn's, which does not daemonize again): it learns of the old
    // master's exit from its parent pid.
    if config.process.daemon && upgrade.is_none() {
        // Said on the terminal, which the daemon leaves behind.
        match log_module::logger().path() {
            Some(path) => eprintln!("wsgi-server: detaching; logs go to {}", path.display()),
            None => eprintln!(
                "wsgi-server: detaching; logs are discarded (give --error-logfile to keep them)"
            ),
        }
        runtime.before_detach();
        let detached = process::daemonize();
        runtime.after_detach();
        if let Err(error) = detached {
            log!(Error, "cannot daemonize: {error}");
            return EXIT_USAGE;
        }
    }
    let pidfile = config.process.pidfile.as_ref().map(|path| {
        if upgrade.is_some() {
            process::upgrade_pidfile(path)
        } else {
            path.clone()
        }
    });
    if let Some(path) = &pidfile {
        if let Err(error) = process::write_pidfile(path) {
            log!(
                Error,
                "cannot write the pidfile {}: {error}",
                path.display()
            );
            return EXIT_USAGE;
        }
    }
    if config.process.user.is_some() || config.process.group.is_some() {
        if let Err(error) = process::drop_privileges(
            config.process.user.as_deref(),
            config.process.group.as_deref(),
            config.process.initgroups,
        ) {
            log!(Error, "cannot switch user/group: {error}");
            return EXIT_USAGE;
        }
    }
    let sockets: Vec<std::path::PathBuf> = listeners
        .iter()
        .filter_map(|listener| listener.unlink_on_exit.clone())
        .collect();
    let chores = ExitChores {
        pidfile: pidfile.filter(|_| config.process.vacuum),
        sockets: if config.process.vacuum {
            sockets
        } else {
            Vec::new()
        },
        old_master: upgrade.map(|upgrade| upgrade.old_master),
    };
    if config.process.master {
        // The master does its own vacuuming: whether the sockets may go
        // depends on an upgrade under way, and its pidfile may be renamed.
        supervise(&config, listeners, runtime, chores, endpoints)
    } else {
        let code = serve_here(&config, listeners, runtime);
        if let Some(path) = &chores.pidfile {
            process::remove_pidfile_of(path, std::process::id() as i32);
        }
        for path in chores.sockets {
            let _ = std::fs::remove_file(path);
        }
        code
    }
}

/// Binds `--bind`/`--socket` listeners, or takes the old master's (an
/// upgrade) or systemd's (`LISTEN_FDS`).
fn bind_all(
    config: &mut ServerConfig,
    upgrade: Option<&process::Upgrade>,
) -> Result<Vec<BoundListener>, String> {
    let systemd = process::systemd_listen_fds();
    if let Some(upgrade) = upgrade {
        // The old master passes its listeners in the configured order, so
        // each keeps its protocol and a unix socket its path to remove.
        let configured = std::mem::take(&mut config.binds);
        let same_shape = configured.len() == upgrade.fds.len();
        let mut listeners = Vec::new();
        for (index, fd) in upgrade.fds.iter().enumerate() {
            let original = if same_shape {
                configured.get(index)
            } else {
                configured.first()
            };
            let spec = BindSpec {
                addr: BindAddr::Fd(*fd),
                protocol: original.map_or(Protocol::Http, |spec| spec.protocol),
            };
            let options = BindOptions {
                backlog: config.backlog,
                unix_mode: config.unix_socket_mode,
                reuse_port: config.process.reuse_port,
                // An inherited socket keeps the options it was given.
                defer_accept: None,
            };
            let mut listener = bind(&spec, options)
                .map_err(|error| format!("cannot use the inherited fd://{fd}: {error}"))?;
            if let Some(BindSpec {
                addr: BindAddr::Unix(path),
                ..
            }) = original.filter(|_| same_shape)
            {
                listener.unlink_on_exit = Some(path.clone());
                listener.spec.addr = BindAddr::Unix(path.clone());
            }
            config.binds.push(listener.spec.clone());
            listeners.push(listener);
        }
        return Ok(listeners);
    }
    let inherited = systemd;
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
        // The header timeout: a client that sends nothing for that long is
        // accepted then, and its own timeouts run from there.
        defer_accept: config
            .process
            .defer_accept
            .then(|| u32::try_from(config.timeouts.header.as_secs().max(1)).unwrap_or(u32::MAX)),
    };
    config
        .binds
        .iter()
        .map(|spec| bind(spec, options).map_err(|error| format!("cannot listen: {error}")))
        .collect()
}

/// `--no-master`: this process serves.
fn serve_here(
    config: &ServerConfig,
    listeners: Vec<BoundListener>,
    runtime: &'static dyn Runtime,
) -> i32 {
    if let Err(error) = log_module::logger().start_writer_thread() {
        log!(Error, "cannot start the log thread: {error}");
        return EXIT_USAGE;
    }
    let app = match runtime.load_app(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    runtime.worker_ready(0);
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
    let stop = wait_for_stop(slot, recycle, stop_hooks(runtime, 0));
    let code = match run_server(listeners, app, config, slot, stop) {
        Ok(()) => {
            log!(Info, "Shutting down");
            0
        }
        Err(error) => {
            log!(Error, "server failed: {error}");
            EXIT_USAGE
        }
    };
    runtime.worker_exit(0);
    code
}

/// The default: a master supervising `--workers` processes.
fn supervise(
    config: &ServerConfig,
    listeners: Vec<BoundListener>,
    runtime: &'static dyn Runtime,
    chores: ExitChores,
    endpoints: Vec<crate::ops::endpoint::Endpoint>,
) -> i32 {
    let preloaded = if config.process.preload {
        match runtime.load_app(config) {
            Ok(app) => Some(app),
            Err(code) => return code,
        }
    } else {
        None
    };
    let worker_main =
        |context: &WorkerContext<'_>| worker_main(context, preloaded.clone(), runtime);
    match Master::new(config, listeners, &worker_main, runtime.master_hooks()) {
        Ok(master) => master
            .with_exit_chores(chores)
            .with_endpoints(endpoints)
            .run(),
        Err(error) => {
            log!(Error, "cannot start the master: {error}");
            EXIT_USAGE
        }
    }
}

/// A worker's life after the fork.
fn worker_main(
    context: &WorkerContext<'_>,
    preloaded: Option<Arc<dyn Application>>,
    runtime: &'static dyn Runtime,
) -> i32 {
    let config = context.config;
    let name = config
        .process
        .name
        .as_deref()
        .map(|name| format!(" [{name}]"))
        .unwrap_or_default();
    let prefix = config.process.procname_prefix.as_deref().unwrap_or("");
    process::set_title(&format!(
        "{prefix}wsgi-server: worker {}{name}",
        context.number
    ));
    // The master's death takes its workers with it, gracefully.
    if !process::die_with_parent(libc::SIGTERM, context.master_pid) {
        return 0;
    }
    // SIGUSR2 asks for a stack dump (timeouts); without Python it is a no-op.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    redirect_stderr_to_log(config.capture_output);
    if let Err(error) = log_module::logger().start_writer_thread() {
        log!(Error, "cannot start the log thread: {error}");
        return EXIT_USAGE;
    }
    let loading = std::time::Instant::now();
    let app = match preloaded {
        Some(app) => app,
        None => match runtime.load_app(config) {
            Ok(app) => app,
            Err(code) => return code,
        },
    };
    runtime.worker_ready(context.number);
    // Start-up read code and data a serving worker never reads again (the
    // interpreter's initialisation, imports, configuration, the loader's
    // tables of extension modules): ~2 MiB of its resident memory. What
    // requests use is faulted back from the page cache in the first ones.
    crate::process::drop_clean_file_pages();
    if config.process.reload {
        let files = runtime.source_files();
        if let Err(error) = watch_sources(move || files.clone()) {
            log!(Warning, "--reload: cannot watch the sources: {error}");
        }
    }
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
    let code = match run_server(
        take_listeners(context.listeners),
        app,
        config,
        context.slot,
        wait_for_stop(context.slot, recycle, stop_hooks(runtime, context.number)),
    ) {
        Ok(()) => 0,
        Err(error) => {
            log!(Error, "worker failed: {error}");
            1
        }
    };
    runtime.worker_exit(context.number);
    code
}

/// gunicorn's `worker_int` and `worker_abort` for worker `number`.
fn stop_hooks(runtime: &'static dyn Runtime, number: usize) -> StopHooks {
    StopHooks {
        interrupt: Some(Box::new(move || runtime.worker_interrupted(number))),
        abort: Some(Box::new(move || runtime.worker_aborted(number))),
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
fn redirect_stderr_to_log(capture_output: bool) {
    use std::os::fd::AsRawFd;
    if let Some(path) = log_module::logger().path() {
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // SAFETY: dup2 onto standard error of this (single-threaded) process.
            unsafe { libc::dup2(file.as_raw_fd(), 2) };
        }
    }
    if capture_output {
        // `--capture-output`: the application's prints join the error log.
        // SAFETY: dup2 of standard error onto standard output.
        unsafe { libc::dup2(2, 1) };
    }
}
