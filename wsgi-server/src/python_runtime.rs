//! CPython as the server's runtime (feature `python`).
//!
//! Two ways to meet the interpreter:
//! - embedded ([`PythonRuntime::new`], feature `embed`, the reference
//!   binary): the interpreter is started in the master only when a
//!   configuration script needs it (`gunicorn.conf.py`, a PasteDeploy file)
//!   or for `--preload`; otherwise each worker starts its own after the fork.
//! - attached ([`PythonRuntime::attached`], the Python package): the user's
//!   `python` already runs in this process and is the master; it is never
//!   initialized again, its virtualenv and `sys.executable` are right by
//!   construction, and every fork goes through CPython's fork protocol. An
//!   application object handed over from Python ([`PythonRuntime::with_app`])
//!   reaches the workers by the fork itself, as `--preload` does.
//!
//! gunicorn's server hooks from the config file are called at their moments.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wsgi_core::Application;
#[cfg(feature = "embed")]
use wsgi_python::{initialize, PythonConfig};
use wsgi_python::{AppOptions, PyApplication};

use crate::config::{
    AppSource, PasteServerSection, PythonSettings, ScriptEntry, ScriptHost, ScriptValue,
    ServerConfig,
};
use crate::log as log_module;
use crate::master::MasterHooks;
use crate::runtime::{load_rust_app, Runtime, EXIT_APP_LOAD};

/// The CPython runtime.
#[derive(Debug, Default)]
pub struct PythonRuntime {
    /// The interpreter runs in this process (started by us, or inherited
    /// from the master across a fork).
    started: AtomicBool,
    /// The interpreter was started in the master (so forks need CPython's
    /// fork protocol).
    in_master: AtomicBool,
    /// What to log about the interpreter once the log is set up.
    start_note: Mutex<Option<String>>,
    /// gunicorn's server hooks from the config file.
    hooks: Option<wsgi_python::hooks::ServerHooks>,
    /// The config file's settings, for the hooks' `server.cfg`.
    conf_cfg: Vec<(String, wsgi_python::conf::ConfValue)>,
    /// Facts the hooks' `server` object shows.
    server_info: Mutex<Option<wsgi_python::hooks::ServerInfo>>,
    /// This worker's number (0 in the master).
    worker_number: AtomicUsize,
    /// Other Python threads were seen at a fork (warned once).
    warned_threads: AtomicBool,
    /// The interpreter was running before the server (the Python package):
    /// its `sys.prefix`.
    attached: Option<PathBuf>,
    /// A WSGI callable handed over by the caller, served instead of loading
    /// the configured application.
    given_app: Option<wsgi_python::GivenApp>,
    /// A PasteDeploy `[server:NAME]` section handed over by `pserve` (its
    /// `paste.server_runner`), used instead of reading the file again.
    given_paste_server: Option<PasteServerSection>,
}

impl PythonRuntime {
    /// A runtime that has started nothing yet.
    #[cfg(feature = "embed")]
    pub fn new() -> PythonRuntime {
        PythonRuntime::default()
    }

    /// The runtime of an interpreter that already runs in this process and
    /// whose main thread will be the master (the Python package). Call with
    /// the interpreter initialized.
    pub fn attached() -> PythonRuntime {
        let info = wsgi_python::attached::interpreter_info().ok();
        let note = info.as_ref().map(|info| {
            format!(
                "Python {} (this process's interpreter: prefix {}, executable {})",
                info.version.lines().next().unwrap_or(""),
                info.prefix,
                info.executable
            )
        });
        PythonRuntime {
            started: AtomicBool::new(true),
            // Every fork is a fork of a running interpreter.
            in_master: AtomicBool::new(true),
            start_note: Mutex::new(note),
            attached: Some(info.map_or_else(PathBuf::new, |info| PathBuf::from(info.prefix))),
            ..PythonRuntime::default()
        }
    }

    /// Serves `app` (a WSGI callable the caller holds) instead of loading
    /// the configured application: in the master, and in the workers as
    /// their fork-inherited copy, without importing anything again.
    pub fn with_app(mut self, app: wsgi_python::GivenApp) -> PythonRuntime {
        self.given_app = Some(app);
        self
    }

    /// Uses `section` as the PasteDeploy `[server:NAME]` section
    /// (`pserve` read it already and hands over its settings).
    pub fn with_paste_server(mut self, section: PasteServerSection) -> PythonRuntime {
        self.given_paste_server = Some(section);
        self
    }

    /// Starts the interpreter in this process if it is not running.
    fn ensure_started(&self, python: &PythonSettings) -> Result<(), String> {
        wsgi_python::image::restore();
        if self.started.load(Ordering::Relaxed) || wsgi_python::is_initialized() {
            self.started.store(true, Ordering::Relaxed);
            return Ok(());
        }
        self.start(python)
    }

    /// Without `embed` nobody here can start Python.
    #[cfg(not(feature = "embed"))]
    fn start(&self, _python: &PythonSettings) -> Result<(), String> {
        Err("no Python interpreter runs in this process, and this build cannot start one (feature `embed`)".into())
    }

    #[cfg(feature = "embed")]
    fn start(&self, python: &PythonSettings) -> Result<(), String> {
        let config = PythonConfig {
            virtualenv: python.virtualenv.clone(),
            chdir: python.chdir.clone(),
            pythonpath: python.pythonpath.clone(),
            argv: std::env::args().collect(),
        };
        let info = initialize(&config).map_err(|error| format!("cannot start Python: {error}"))?;
        self.started.store(true, Ordering::Relaxed);
        *self
            .start_note
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(format!(
            "Python {} (prefix {}, executable {}{})",
            info.version.lines().next().unwrap_or(""),
            info.prefix,
            info.executable,
            info.virtualenv
                .as_ref()
                .map(|venv| format!(", virtualenv {venv}"))
                .unwrap_or_default()
        ));
        Ok(())
    }

    fn log_start_note(&self) {
        if let Some(note) = self
            .start_note
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            crate::log!(Info, "{note}");
        }
    }

    /// Starts the interpreter in the master (for the script sources).
    fn start_in_master(&self, python: &PythonSettings) -> Result<(), String> {
        let was_running = self.started.load(Ordering::Relaxed);
        self.ensure_started(python)?;
        if !was_running {
            self.in_master.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn server_info(&self) -> Option<wsgi_python::hooks::ServerInfo> {
        self.server_info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// This process as the hooks' `worker`.
    fn worker_info(
        &self,
        server: &wsgi_python::hooks::ServerInfo,
    ) -> wsgi_python::hooks::WorkerInfo {
        let number = self.worker_number.load(Ordering::Relaxed);
        wsgi_python::hooks::WorkerInfo {
            pid: std::process::id(),
            ppid: server.pid,
            age: number as u64,
            number,
        }
    }

    fn call_hook(
        &self,
        hook: wsgi_python::hooks::Hook,
        worker: Option<usize>,
        counts: Option<(usize, usize)>,
    ) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        if !hooks.has(hook) {
            return;
        }
        let Some(server) = self.server_info() else {
            return;
        };
        let worker = worker.map(|number| wsgi_python::hooks::WorkerInfo {
            // Before the fork (pre_fork) and in the master (child_exit) the
            // worker's own pid is not ours.
            pid: if self.worker_number.load(Ordering::Relaxed) == number {
                std::process::id()
            } else {
                0
            },
            ppid: server.pid,
            age: number as u64,
            number,
        });
        if let Err(error) = hooks.call(hook, &server, worker.as_ref(), counts) {
            crate::log!(Error, "{error}");
        }
    }
}

fn script_value(value: &wsgi_python::conf::ConfValue) -> ScriptValue {
    use wsgi_python::conf::ConfValue;
    match value {
        ConfValue::None => ScriptValue::None,
        ConfValue::Bool(flag) => ScriptValue::Bool(*flag),
        ConfValue::Int(number) => ScriptValue::Int(*number),
        ConfValue::Float(number) => ScriptValue::Float(*number),
        ConfValue::Str(text) => ScriptValue::Str(text.clone()),
        ConfValue::List(items) => ScriptValue::List(items.iter().map(script_value).collect()),
        ConfValue::Callable(_) => ScriptValue::Callable,
        ConfValue::Dict(_) => ScriptValue::Other("a dict".into()),
        ConfValue::Other(repr) => ScriptValue::Other(repr.clone()),
    }
}

impl ScriptHost for PythonRuntime {
    fn gunicorn_config(
        &mut self,
        spec: &str,
        python: &PythonSettings,
    ) -> Result<Vec<ScriptEntry>, String> {
        self.start_in_master(python)?;
        let file = wsgi_python::attached::exec_config(spec).map_err(|error| error.to_string())?;
        let log: wsgi_python::hooks::HookLog = Arc::new(hook_log);
        let hooks = wsgi_python::hooks::ServerHooks::from_conf(&file, log)?;
        self.hooks = (!hooks.is_empty()).then_some(hooks);
        self.conf_cfg = file
            .entries
            .iter()
            .filter(|entry| !matches!(entry.value, wsgi_python::conf::ConfValue::Callable(_)))
            .map(|entry| (entry.name.clone(), entry.value.clone()))
            .collect();
        Ok(file
            .entries
            .iter()
            .map(|entry| ScriptEntry {
                name: entry.name.clone(),
                value: script_value(&entry.value),
                line: entry.line,
            })
            .collect())
    }

    fn paste_server(
        &mut self,
        path: &Path,
        name: &str,
        global_conf: &[(String, String)],
        python: &PythonSettings,
    ) -> Result<Option<PasteServerSection>, String> {
        if let Some(section) = &self.given_paste_server {
            return Ok(Some(section.clone()));
        }
        self.start_in_master(python)?;
        match wsgi_python::attached::read_paste_server(path, Some(name), global_conf) {
            Ok(section) => Ok(Some(PasteServerSection {
                use_: section.use_,
                settings: section.settings,
            })),
            Err(wsgi_python::paste::PasteError::MissingSection { .. }) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }
}

fn hook_log(level: wsgi_python::hooks::HookLogLevel, message: &str) {
    use wsgi_python::hooks::HookLogLevel;
    match level {
        HookLogLevel::Debug => crate::log!(Debug, "{message}"),
        HookLogLevel::Info => crate::log!(Info, "{message}"),
        HookLogLevel::Warning => crate::log!(Warning, "{message}"),
        HookLogLevel::Error => crate::log!(Error, "{message}"),
        HookLogLevel::Critical => crate::log!(Critical, "{message}"),
    }
}

impl MasterHooks for PythonRuntime {
    fn before_fork(&self, number: usize) {
        // The worker gets libpython's data as the loader left it.
        wsgi_python::image::restore();
        if self.in_master.load(Ordering::Relaxed) {
            // The server starts with none (the Python package refuses to
            // start beside them), but a preloaded application may start some.
            let threads = wsgi_python::fork::python_threads();
            if threads > 1 && !self.warned_threads.swap(true, Ordering::Relaxed) {
                crate::log!(
                    Warning,
                    "{} other Python thread(s) run in the master at fork: the workers get no copy of them, and a lock one of them held stays locked there (start threads after the fork, not at import with --preload)",
                    threads - 1
                );
            }
            self.call_hook(wsgi_python::hooks::Hook::PreFork, Some(number), None);
            wsgi_python::fork::before_fork();
        }
    }

    fn after_fork_parent(&self, _number: usize, _pid: i32) {
        if self.in_master.load(Ordering::Relaxed) {
            wsgi_python::fork::after_fork_parent();
        }
        if !self.started.load(Ordering::Relaxed) {
            // A master that never runs Python keeps libpython's relocated
            // data (1.1 MiB with 3.11) only for the next fork: it is dropped
            // until then (docs/performance.md).
            // SAFETY: no interpreter runs here (`started` is set before any
            // is), the master has one thread, and every way into libpython
            // from it (a fork, `ensure_started`, exit) restores first.
            unsafe { wsgi_python::image::release() };
        }
    }

    fn after_fork_child(&self, number: usize) {
        self.worker_number.store(number, Ordering::Relaxed);
        if self.in_master.load(Ordering::Relaxed) {
            wsgi_python::fork::after_fork_child();
            self.call_hook(wsgi_python::hooks::Hook::PostFork, Some(number), None);
        }
    }

    fn when_ready(&self) {
        self.call_hook(wsgi_python::hooks::Hook::WhenReady, None, None);
    }

    fn on_reload(&self) {
        self.call_hook(wsgi_python::hooks::Hook::OnReload, None, None);
    }

    fn child_exit(&self, number: usize, _pid: i32) {
        self.call_hook(wsgi_python::hooks::Hook::ChildExit, Some(number), None);
    }

    fn nworkers_changed(&self, new: usize, old: usize) {
        self.call_hook(
            wsgi_python::hooks::Hook::NworkersChanged,
            None,
            Some((new, old)),
        );
    }

    fn pre_exec(&self) {
        self.call_hook(wsgi_python::hooks::Hook::PreExec, None, None);
    }

    fn on_exit(&self) {
        wsgi_python::image::restore();
        self.call_hook(wsgi_python::hooks::Hook::OnExit, None, None);
    }
}

impl Runtime for PythonRuntime {
    fn load_app(&self, config: &ServerConfig) -> Result<Arc<dyn Application>, i32> {
        if let AppSource::Rust(_) = config.app {
            return load_rust_app(config);
        }
        if let Err(error) = self.ensure_started(&config.python) {
            // Like an application that does not load: at start-up the
            // master stops (a worker respawned forever would serve nothing),
            // and on a reload the old workers stay.
            crate::log!(Error, "{error}");
            return Err(EXIT_APP_LOAD);
        }
        self.log_start_note();
        if self.in_master.load(Ordering::Relaxed) {
            // The master started the interpreter with the settings known
            // before the configuration files were read.
            if let Err(error) = wsgi_python::attached::set_environ(&config.python.raw_env) {
                crate::log!(Error, "--env: {error}");
                return Err(EXIT_APP_LOAD);
            }
            if let Err(error) = wsgi_python::attached::apply_paths(
                config.python.chdir.as_deref(),
                &config.python.pythonpath,
            ) {
                crate::log!(Error, "{error}");
                return Err(EXIT_APP_LOAD);
            }
        }
        if let Some((path, json)) = &config.python_log_config {
            if let Err(error) = wsgi_python::attached::configure_logging(path, *json) {
                crate::log!(Error, "--log-config: {error}");
                return Err(EXIT_APP_LOAD);
            }
        }
        // `pserve` configured logging from the file already.
        let paste_logging = config
            .paste_logging
            .as_ref()
            .filter(|_| self.given_paste_server.is_none());
        if let Some(ini) = paste_logging {
            if let Err(error) = wsgi_python::attached::setup_paste_logging(Path::new(ini)) {
                crate::log!(Error, "{error}");
                return Err(EXIT_APP_LOAD);
            }
        }
        let request_hooks = match (&self.hooks, self.server_info()) {
            (Some(hooks), Some(server)) => hooks.request_hooks(&server, &self.worker_info(&server)),
            _ => None,
        };
        let options = AppOptions {
            request_hooks,
            ..AppOptions::new(
                config.threads > 1,
                config.process.master && config.process.workers > 1,
                log_module::error_log(),
            )
        };
        let loaded = match (&self.given_app, &config.app) {
            (Some(given), _) => Ok(given.application(options)),
            (None, AppSource::Python(spec)) => {
                PyApplication::load(spec, options).map_err(|error| {
                    crate::log!(Error, "Failed to load application {spec:?}:\n{error}");
                })
            }
            (
                None,
                AppSource::Paste {
                    uri,
                    name,
                    global_conf,
                },
            ) => wsgi_python::attached::load_paste_app(uri, Some(name), global_conf, options)
                .map_err(|error| {
                    crate::log!(
                        Error,
                        "Failed to load application {name:?} from {uri}:\n{error}"
                    );
                }),
            (None, AppSource::Rust(_)) => unreachable!("handled above"),
        };
        let app = loaded.map_err(|()| EXIT_APP_LOAD)?;
        if let Some(dir) = &config.python.chdir2 {
            if let Err(error) = std::env::set_current_dir(dir) {
                crate::log!(Error, "--chdir2 {}: {error}", dir.display());
                return Err(EXIT_APP_LOAD);
            }
        }
        Ok(Arc::new(app))
    }

    fn on_starting(&self, config: &ServerConfig) {
        self.log_start_note();
        if let (Some(prefix), Some(venv)) = (&self.attached, &config.python.virtualenv) {
            let same = |path: &Path| std::fs::canonicalize(path).ok();
            if same(venv) != same(prefix) {
                crate::log!(
                    Warning,
                    "--virtualenv {} is ignored: the server runs in this interpreter ({}); run that virtualenv's wsgi-server instead",
                    venv.display(),
                    prefix.display()
                );
            }
        }
        *self
            .server_info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(wsgi_python::hooks::ServerInfo {
                pid: std::process::id(),
                proc_name: config
                    .process
                    .name
                    .clone()
                    .unwrap_or_else(|| "wsgi-server".into()),
                num_workers: config.process.workers,
                cfg: self.conf_cfg.clone(),
            });
        self.call_hook(wsgi_python::hooks::Hook::OnStarting, None, None);
    }

    fn worker_ready(&self, number: usize) {
        if !self.started.load(Ordering::Relaxed) {
            // A built-in Rust application: no interpreter to ask.
            return;
        }
        if let Err(error) = wsgi_python::fork::dump_stacks_on_signal(libc::SIGUSR2) {
            crate::log!(Warning, "cannot arm Python stack dumps: {error}");
        }
        if let Some(server) = self
            .server_info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_mut()
        {
            // In a worker, `server.pid` is the master's.
            server.pid = std::os::unix::process::parent_id();
        }
        self.call_hook(wsgi_python::hooks::Hook::PostWorkerInit, Some(number), None);
    }

    fn worker_interrupted(&self, number: usize) {
        self.call_hook(wsgi_python::hooks::Hook::WorkerInt, Some(number), None);
    }

    fn worker_aborted(&self, number: usize) {
        self.call_hook(wsgi_python::hooks::Hook::WorkerAbort, Some(number), None);
    }

    fn worker_exit(&self, number: usize) {
        self.call_hook(wsgi_python::hooks::Hook::WorkerExit, Some(number), None);
    }

    fn before_detach(&self) {
        if self.in_master.load(Ordering::Relaxed) {
            wsgi_python::fork::before_fork();
        }
    }

    fn after_detach(&self) {
        if self.in_master.load(Ordering::Relaxed) {
            wsgi_python::fork::after_fork_child();
        }
    }

    fn source_files(&self) -> Vec<PathBuf> {
        if !self.started.load(Ordering::Relaxed) {
            return Vec::new();
        }
        wsgi_python::attached::module_files()
    }

    fn master_hooks(&self) -> Option<&dyn MasterHooks> {
        Some(self)
    }
}
