//! The `wsgi-server` binary: parse the command line, bind, load the
//! application, serve until a signal says stop.
//!
//! Exit codes: 0 clean stop, 1 bad usage, configuration or bind failure,
//! 4 the application could not be loaded (gunicorn's `APP_LOAD_ERROR`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use wsgi_core::Application;
use wsgi_server::cli::Cli;
use wsgi_server::config::{AppSource, ServerConfig};
use wsgi_server::listener::{bind, BindOptions};
use wsgi_server::server::{run, Stop};
use wsgi_server::{log, log as log_module};

const EXIT_USAGE: u8 = 1;
#[cfg_attr(not(feature = "python"), allow(dead_code))]
const EXIT_APP_LOAD: u8 = 4;

fn main() -> ExitCode {
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
    log_module::init(config.error_log.clone(), config.log_level);
    let code = serve(&config);
    log_module::logger().flush();
    code
}

fn serve(config: &ServerConfig) -> ExitCode {
    // Bind before anything else starts: a taken port fails fast, and
    // (with workers) the sockets exist before any fork.
    let options = BindOptions {
        backlog: config.backlog,
        unix_mode: config.unix_socket_mode,
        reuse_port: false,
    };
    let mut listeners = Vec::new();
    for spec in &config.binds {
        match bind(spec, options) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                log!(Error, "cannot listen: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let app = match load_app(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let unlink: Vec<_> = listeners
        .iter()
        .filter_map(|listener| listener.unlink_on_exit.clone())
        .collect();
    for listener in &listeners {
        let protocol = match listener.spec.protocol {
            wsgi_server::listener::Protocol::Http => "http",
            wsgi_server::listener::Protocol::Uwsgi => "uwsgi",
        };
        log!(
            Info,
            "Listening at: {} ({protocol}) ({})",
            listener.spec.addr,
            std::process::id()
        );
    }
    log!(Info, "Using {} application thread(s)", config.threads);
    let result = run(listeners, app, config, wait_for_stop());
    for path in unlink {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(()) => {
            log!(Info, "Shutting down: Master");
            ExitCode::SUCCESS
        }
        Err(error) => {
            log!(Error, "server failed: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn wait_for_stop() -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        log!(Error, "cannot install signal handlers");
        return Stop::Immediate;
    };
    tokio::select! {
        _ = term.recv() => { log!(Info, "Handling signal: term"); Stop::Graceful }
        _ = int.recv() => { log!(Info, "Handling signal: int"); Stop::Graceful }
        _ = quit.recv() => { log!(Info, "Handling signal: quit"); Stop::Immediate }
    }
}

fn load_app(config: &ServerConfig) -> Result<Arc<dyn Application>, ExitCode> {
    match &config.app {
        AppSource::Rust(name) => wsgi_core::testing::app_by_name(name).ok_or_else(|| {
            log!(Error, "unknown built-in application {name:?}");
            ExitCode::from(EXIT_USAGE)
        }),
        AppSource::Python(spec) => load_python(config, spec),
    }
}

#[cfg(feature = "python")]
fn load_python(config: &ServerConfig, spec: &str) -> Result<Arc<dyn Application>, ExitCode> {
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
            log!(Error, "cannot start Python: {error}");
            return Err(ExitCode::from(EXIT_USAGE));
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
        multiprocess: false,
        error_log: log_module::error_log(),
    };
    match PyApplication::load(spec, options) {
        Ok(app) => Ok(Arc::new(app)),
        Err(error) => {
            log!(Error, "Failed to load application {spec:?}:\n{error}");
            Err(ExitCode::from(EXIT_APP_LOAD))
        }
    }
}

#[cfg(not(feature = "python"))]
fn load_python(_config: &ServerConfig, spec: &str) -> Result<Arc<dyn Application>, ExitCode> {
    log!(
        Error,
        "cannot load {spec:?}: this build has no Python runtime (use --rust-app)"
    );
    Err(ExitCode::from(EXIT_USAGE))
}
