//! gunicorn's server hooks (`on_starting`, `pre_fork`, `post_fork`, ...,
//! `pre_request`, `post_request`), found among a configuration file's
//! entries and called by the server at their moments.
//!
//! Hooks receive objects that look enough like gunicorn's for real-world
//! hooks (`src/py/hooks.py`): `server` (`pid`, `proc_name`, `num_workers`,
//! `cfg.NAME`, `log`), `worker` (`pid`, `ppid`, `age`, `alive`, `cfg`,
//! `log`), `req` and `resp`. The same `server` object is passed to every
//! hook, and one `worker` object per worker (by `age`), so a hook can keep
//! state on them as it can under gunicorn. Their `log` writes through the
//! server's log callback.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};

use crate::conf::{ConfFile, ConfValue};
use crate::pyutil::{format_traceback, latin1_str};

/// A server-level hook (the per-request ones are in [`RequestHooks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `on_starting(server)`: before the master initializes.
    OnStarting,
    /// `on_reload(server)`: on SIGHUP.
    OnReload,
    /// `when_ready(server)`: the server is started.
    WhenReady,
    /// `pre_fork(server, worker)`: in the master, before a worker is forked.
    PreFork,
    /// `post_fork(server, worker)`: in the worker, after the fork.
    PostFork,
    /// `post_worker_init(worker)`: in the worker, the application loaded.
    PostWorkerInit,
    /// `worker_int(worker)`: the worker got SIGINT or SIGQUIT.
    WorkerInt,
    /// `worker_abort(worker)`: the worker got SIGABRT (a timeout).
    WorkerAbort,
    /// `pre_exec(server)`: before a new master is exec'd.
    PreExec,
    /// `worker_exit(server, worker)`: in the worker, as it exits.
    WorkerExit,
    /// `child_exit(server, worker)`: in the master, a worker exited.
    ChildExit,
    /// `nworkers_changed(server, new_value, old_value)`.
    NworkersChanged,
    /// `on_exit(server)`: the master exits.
    OnExit,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 13] = [
        Hook::OnStarting,
        Hook::OnReload,
        Hook::WhenReady,
        Hook::PreFork,
        Hook::PostFork,
        Hook::PostWorkerInit,
        Hook::WorkerInt,
        Hook::WorkerAbort,
        Hook::PreExec,
        Hook::WorkerExit,
        Hook::ChildExit,
        Hook::NworkersChanged,
        Hook::OnExit,
    ];

    /// The setting's name in a configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnStarting => "on_starting",
            Hook::OnReload => "on_reload",
            Hook::WhenReady => "when_ready",
            Hook::PreFork => "pre_fork",
            Hook::PostFork => "post_fork",
            Hook::PostWorkerInit => "post_worker_init",
            Hook::WorkerInt => "worker_int",
            Hook::WorkerAbort => "worker_abort",
            Hook::PreExec => "pre_exec",
            Hook::WorkerExit => "worker_exit",
            Hook::ChildExit => "child_exit",
            Hook::NworkersChanged => "nworkers_changed",
            Hook::OnExit => "on_exit",
        }
    }

    /// The arguments gunicorn passes, for messages.
    fn arguments(self) -> &'static str {
        match self {
            Hook::OnStarting | Hook::OnReload | Hook::WhenReady | Hook::PreExec | Hook::OnExit => {
                "server"
            }
            Hook::PreFork | Hook::PostFork | Hook::WorkerExit | Hook::ChildExit => "server, worker",
            Hook::PostWorkerInit | Hook::WorkerInt | Hook::WorkerAbort => "worker",
            Hook::NworkersChanged => "server, new_value, old_value",
        }
    }

    fn arity(self) -> usize {
        self.arguments().split(',').count()
    }

    /// Whether the worker is still running when the hook is called
    /// (gunicorn's `worker.alive`).
    fn worker_alive(self) -> bool {
        !matches!(
            self,
            Hook::WorkerInt | Hook::WorkerAbort | Hook::WorkerExit | Hook::ChildExit
        )
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The level of a line a hook logs through `server.log` / `worker.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookLogLevel {
    /// `log.debug`.
    Debug,
    /// `log.info`.
    Info,
    /// `log.warning`.
    Warning,
    /// `log.error`, `log.exception`, and our reports of a raising hook.
    Error,
    /// `log.critical`.
    Critical,
}

impl HookLogLevel {
    /// From a `logging` level number.
    fn from_number(level: i64) -> HookLogLevel {
        match level {
            i64::MIN..=10 => HookLogLevel::Debug,
            11..=20 => HookLogLevel::Info,
            21..=30 => HookLogLevel::Warning,
            31..=40 => HookLogLevel::Error,
            _ => HookLogLevel::Critical,
        }
    }
}

/// Where hooks' log lines go.
pub type HookLog = Arc<dyn Fn(HookLogLevel, &str) + Send + Sync>;

/// The master as hooks see it (`server`).
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// The master's process id (`server.pid`).
    pub pid: u32,
    /// `server.proc_name`.
    pub proc_name: String,
    /// `server.num_workers`.
    pub num_workers: usize,
    /// The settings, as `server.cfg.NAME` (and `worker.cfg`).
    pub cfg: Vec<(String, ConfValue)>,
}

/// A worker as hooks see it (`worker`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its process id; 0 before the fork (`pre_fork`), shown as
    /// `"[booting]"` as gunicorn does.
    pub pid: u32,
    /// The master's process id.
    pub ppid: u32,
    /// gunicorn's `worker.age`: a counter of workers spawned; identifies
    /// the worker across hooks.
    pub age: u64,
    /// The worker's slot (`worker.number`; not in gunicorn).
    pub number: usize,
}

/// `server.log.info(...)` and friends call this.
#[pyclass(frozen, name = "_HookLog")]
struct LogEmitter {
    log: HookLog,
}

#[pymethods]
impl LogEmitter {
    fn __call__(&self, level: i64, text: &str) {
        (self.log)(HookLogLevel::from_number(level), text);
    }
}

fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            let source = CString::new(include_str!("py/hooks.py"))
                .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))?;
            PyModule::from_code(py, &source, c"<wsgi_python.hooks>", c"_wsgi_python_hooks")
                .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// A hook found in the configuration, with where it was defined.
struct Found {
    function: Py<PyAny>,
    /// `FILE:LINE`, for messages.
    location: String,
}

/// The Python objects passed to hooks, kept so that every hook sees the
/// same ones.
#[derive(Default)]
struct Objects {
    log: Option<Py<PyAny>>,
    server: Option<Py<PyAny>>,
    workers: HashMap<u64, Py<PyAny>>,
}

struct Shared {
    log: HookLog,
    objects: Mutex<Objects>,
}

impl Shared {
    /// The `Logger` object writing to our log callback.
    fn logger<'py>(&self, py: Python<'py>, objects: &mut Objects) -> PyResult<Bound<'py, PyAny>> {
        if let Some(logger) = &objects.log {
            return Ok(logger.bind(py).clone());
        }
        let emitter = Bound::new(
            py,
            LogEmitter {
                log: Arc::clone(&self.log),
            },
        )?;
        let logger = helper(py)?.getattr("Logger")?.call1((emitter,))?;
        objects.log = Some(logger.clone().unbind());
        Ok(logger)
    }

    /// The `server` object, updated from `info`.
    fn server<'py>(&self, py: Python<'py>, info: &ServerInfo) -> PyResult<Bound<'py, PyAny>> {
        let mut objects = self.lock(py);
        let server = match &objects.server {
            Some(server) => server.bind(py).clone(),
            None => {
                let logger = self.logger(py, &mut objects)?;
                let server = helper(py)?.getattr("Arbiter")?.call1((logger,))?;
                objects.server = Some(server.clone().unbind());
                server
            }
        };
        let cfg = PyList::empty(py);
        for (name, value) in &info.cfg {
            cfg.append((name, value.to_py(py)?))?;
        }
        server.call_method1("update", (info.pid, &info.proc_name, info.num_workers, cfg))?;
        Ok(server)
    }

    /// The `worker` object for `info.age`, updated from `info`.
    fn worker<'py>(
        &self,
        py: Python<'py>,
        server: &Bound<'py, PyAny>,
        info: &WorkerInfo,
        alive: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut objects = self.lock(py);
        let worker = match objects.workers.get(&info.age) {
            Some(worker) => worker.bind(py).clone(),
            None => {
                let logger = self.logger(py, &mut objects)?;
                let worker = helper(py)?.getattr("Worker")?.call1((info.age, logger))?;
                objects.workers.insert(info.age, worker.clone().unbind());
                worker
            }
        };
        worker.call_method1("update", (info.pid, info.ppid, info.number, alive, server))?;
        Ok(worker)
    }

    fn lock(&self, py: Python<'_>) -> std::sync::MutexGuard<'_, Objects> {
        self.objects
            .lock_py_attached(py)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The hooks a configuration defines.
pub struct ServerHooks {
    hooks: HashMap<Hook, Found>,
    pre_request: Option<Found>,
    post_request: Option<Found>,
    shared: Arc<Shared>,
}

impl fmt::Debug for ServerHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.hooks.keys().map(|hook| hook.name()).collect();
        if self.pre_request.is_some() {
            names.push("pre_request");
        }
        if self.post_request.is_some() {
            names.push("post_request");
        }
        names.sort_unstable();
        f.debug_struct("ServerHooks")
            .field("hooks", &names)
            .finish()
    }
}

impl ServerHooks {
    /// Collects the hooks among `conf`'s entries; `log` receives what hooks
    /// log through `server.log` / `worker.log`, and our report (with the
    /// traceback) of a hook that raised.
    ///
    /// # Errors
    /// One line naming the file, line and hook when a hook is not a callable
    /// taking gunicorn's arguments (gunicorn refuses to start then too).
    pub fn from_conf(conf: &ConfFile, log: HookLog) -> Result<ServerHooks, String> {
        let mut hooks = HashMap::new();
        let mut pre_request = None;
        let mut post_request = None;
        Python::attach(|py| -> Result<(), String> {
            let helper = helper(py).map_err(|error| format!("{}: {error}", conf.display))?;
            for entry in &conf.entries {
                let hook = Hook::ALL.into_iter().find(|hook| hook.name() == entry.name);
                let (arity, arguments) = match (hook, entry.name.as_str()) {
                    (Some(hook), _) => (hook.arity(), hook.arguments()),
                    (None, "pre_request") => (2, "worker, req"),
                    (None, "post_request") => (4, "worker, req, environ, resp"),
                    _ => continue,
                };
                let location = conf.location(entry);
                let bad = || {
                    format!(
                        "{location}: {} must be a function taking ({arguments}), not {}",
                        entry.name,
                        describe_value(&entry.value)
                    )
                };
                let ConfValue::Callable(function) = &entry.value else {
                    return Err(bad());
                };
                let function = function.bind(py);
                let function = if entry.name == "post_request" {
                    let adapted = helper
                        .call_method1("post_request_adapter", (function,))
                        .map_err(|error| format!("{location}: {error}"))?;
                    if adapted.is_none() {
                        return Err(bad());
                    }
                    adapted
                } else {
                    let takes = helper
                        .call_method1("takes", (function, arity))
                        .and_then(|takes| takes.extract::<bool>())
                        .map_err(|error| format!("{location}: {error}"))?;
                    if !takes {
                        return Err(bad());
                    }
                    function.clone()
                };
                let found = Found {
                    function: function.unbind(),
                    location,
                };
                match hook {
                    Some(hook) => {
                        hooks.insert(hook, found);
                    }
                    None if entry.name == "pre_request" => pre_request = Some(found),
                    None => post_request = Some(found),
                }
            }
            Ok(())
        })?;
        Ok(ServerHooks {
            hooks,
            pre_request,
            post_request,
            shared: Arc::new(Shared {
                log,
                objects: Mutex::new(Objects::default()),
            }),
        })
    }

    /// No hook at all is defined.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.pre_request.is_none() && self.post_request.is_none()
    }

    /// Whether `hook` is defined.
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains_key(&hook)
    }

    /// Calls `hook` if it is defined (attaching to the interpreter):
    /// `worker` is needed by the hooks that take one, `counts` (new, old)
    /// by `nworkers_changed`.
    ///
    /// # Errors
    /// One line when the hook raised (its traceback went to the log), or
    /// when a needed argument is missing.
    pub fn call(
        &self,
        hook: Hook,
        server: &ServerInfo,
        worker: Option<&WorkerInfo>,
        counts: Option<(usize, usize)>,
    ) -> Result<(), String> {
        let Some(found) = self.hooks.get(&hook) else {
            return Ok(());
        };
        let needs_worker = hook.arguments().contains("worker");
        let worker = match (needs_worker, worker) {
            (true, None) => return Err(format!("{hook} needs a worker, and none was given")),
            (_, worker) => worker,
        };
        let counts = match (hook, counts) {
            (Hook::NworkersChanged, None) => {
                return Err(format!(
                    "{hook} needs the worker counts, and none were given"
                ))
            }
            (_, counts) => counts,
        };
        Python::attach(|py| {
            let called = (|| -> PyResult<()> {
                let server_object = self.shared.server(py, server)?;
                let worker_object = match worker {
                    Some(info) => {
                        Some(
                            self.shared
                                .worker(py, &server_object, info, hook.worker_alive())?,
                        )
                    }
                    None => None,
                };
                let function = found.function.bind(py);
                match (hook.arguments(), worker_object, counts) {
                    ("server", _, _) => function.call1((server_object,))?,
                    ("worker", Some(worker), _) => function.call1((worker,))?,
                    ("server, worker", Some(worker), _) => {
                        function.call1((server_object, worker))?
                    }
                    (_, _, Some((new, old))) => function.call1((server_object, new, old))?,
                    _ => return Ok(()),
                };
                Ok(())
            })();
            if hook == Hook::ChildExit {
                // The master's last word about this worker.
                if let Some(info) = worker {
                    let removed = self.shared.lock(py).workers.remove(&info.age);
                    drop(removed);
                }
            }
            called.map_err(|error| {
                let line = format!(
                    "{}: {hook}({}) raised {}",
                    found.location,
                    hook.arguments(),
                    one_line(py, &error)
                );
                (self.shared.log)(
                    HookLogLevel::Error,
                    &format!("{line}\n{}", format_traceback(py, &error).trim_end()),
                );
                line
            })
        })
    }

    /// The per-request hooks for this worker, or `None` when the
    /// configuration defines neither `pre_request` nor `post_request` (then
    /// requests cost nothing extra).
    pub fn request_hooks(&self, server: &ServerInfo, worker: &WorkerInfo) -> Option<RequestHooks> {
        if self.pre_request.is_none() && self.post_request.is_none() {
            return None;
        }
        Python::attach(|py| {
            let built = (|| -> PyResult<RequestHooks> {
                let server_object = self.shared.server(py, server)?;
                let worker = self.shared.worker(py, &server_object, worker, true)?;
                let copy = |found: &Option<Found>| {
                    found.as_ref().map(|found| Found {
                        function: found.function.clone_ref(py),
                        location: found.location.clone(),
                    })
                };
                Ok(RequestHooks {
                    inner: Arc::new(RequestInner {
                        pre: copy(&self.pre_request),
                        post: copy(&self.post_request),
                        worker: worker.unbind(),
                        helper: helper(py)?.clone().unbind(),
                    }),
                })
            })();
            built
                .map_err(|error| {
                    (self.shared.log)(
                        HookLogLevel::Error,
                        &format!(
                            "cannot prepare pre_request/post_request: {}",
                            format_traceback(py, &error).trim_end()
                        ),
                    );
                })
                .ok()
        })
    }
}

/// `Type: message` of a Python exception, on one line.
fn one_line(py: Python<'_>, error: &PyErr) -> String {
    let kind = error
        .get_type(py)
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let message = error.value(py).to_string();
    let message = message.trim().replace('\n', " ");
    if message.is_empty() {
        kind
    } else {
        format!("{kind}: {message}")
    }
}

fn describe_value(value: &ConfValue) -> String {
    match value {
        ConfValue::None => "None".to_owned(),
        ConfValue::Bool(value) => format!("the bool {value}"),
        ConfValue::Int(value) => format!("the int {value}"),
        ConfValue::Float(value) => format!("the float {value}"),
        ConfValue::Str(value) => format!("the string {value:?}"),
        ConfValue::List(_) => "a list".to_owned(),
        ConfValue::Dict(_) => "a dict".to_owned(),
        ConfValue::Callable(_) => "a callable taking other arguments".to_owned(),
        ConfValue::Other(repr) => repr.clone(),
    }
}

struct RequestInner {
    pre: Option<Found>,
    post: Option<Found>,
    worker: Py<PyAny>,
    helper: Py<PyModule>,
}

/// gunicorn's `pre_request(worker, req)` and `post_request(worker, req,
/// environ, resp)`, for [`crate::AppOptions::request_hooks`].
#[derive(Clone)]
pub struct RequestHooks {
    inner: Arc<RequestInner>,
}

impl fmt::Debug for RequestHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHooks")
            .field("pre_request", &self.inner.pre.is_some())
            .field("post_request", &self.inner.post.is_some())
            .finish()
    }
}

/// What `post_request` is told about the response.
#[derive(Debug, Default)]
pub(crate) struct SeenResponse {
    /// Status code and reason, once the head was committed.
    pub(crate) status: Option<(u16, bytes::Bytes)>,
    /// The headers as sent.
    pub(crate) headers: Vec<(bytes::Bytes, bytes::Bytes)>,
    /// Body bytes handed to the server.
    pub(crate) sent: u64,
}

impl RequestHooks {
    /// Whether `post_request` is defined (then the response is recorded).
    pub(crate) fn has_post(&self) -> bool {
        self.inner.post.is_some()
    }

    /// Builds `req` from the environ and calls `pre_request(worker, req)`.
    /// Returns `req` (for `post_request`) and the hook's exception, if any.
    pub(crate) fn pre_request<'py>(
        &self,
        py: Python<'py>,
        environ: &Bound<'py, PyDict>,
    ) -> (Option<Bound<'py, PyAny>>, Option<PyErr>) {
        let request = match self.inner.helper.bind(py).getattr("Request") {
            Ok(class) => class.call1((environ,)),
            Err(error) => Err(error),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => return (None, Some(error)),
        };
        let raised = match &self.inner.pre {
            Some(pre) => pre
                .function
                .bind(py)
                .call1((self.inner.worker.bind(py), &request))
                .err(),
            None => None,
        };
        (Some(request), raised)
    }

    /// Calls `post_request(worker, req, environ, resp)`; `resp` is `None`
    /// when nothing was seen (pre_request failed, as in gunicorn).
    pub(crate) fn post_request<'py>(
        &self,
        py: Python<'py>,
        request: Option<&Bound<'py, PyAny>>,
        environ: Option<&Bound<'py, PyDict>>,
        seen: Option<&SeenResponse>,
    ) -> PyResult<()> {
        let Some(post) = &self.inner.post else {
            return Ok(());
        };
        let environ = match environ {
            Some(environ) => environ.clone(),
            None => PyDict::new(py),
        };
        let response = match seen {
            Some(seen) => {
                let status = match &seen.status {
                    Some((code, reason)) => {
                        let mut status = code.to_string().into_bytes();
                        if !reason.is_empty() {
                            status.push(b' ');
                            status.extend_from_slice(reason);
                        }
                        latin1_str(py, &status)?.into_any()
                    }
                    None => py.None().into_bound(py),
                };
                let headers = PyList::empty(py);
                for (name, value) in &seen.headers {
                    headers.append(PyTuple::new(
                        py,
                        [latin1_str(py, name)?, latin1_str(py, value)?],
                    )?)?;
                }
                self.inner
                    .helper
                    .bind(py)
                    .getattr("Response")?
                    .call1((status, headers, seen.sent))?
            }
            None => py.None().into_bound(py),
        };
        let request = match request {
            Some(request) => request.clone(),
            None => py.None().into_bound(py),
        };
        post.function
            .bind(py)
            .call1((self.inner.worker.bind(py), request, environ, response))?;
        Ok(())
    }
}
