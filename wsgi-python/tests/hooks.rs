//! gunicorn server hooks from a configuration file: the objects they get,
//! their logging, a raising hook, and pre_request/post_request around a
//! request (and serving without them).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use wsgi_python::conf::{exec_config, ConfFile, ConfValue};
use wsgi_python::hooks::{Hook, HookLog, HookLogLevel, ServerHooks, ServerInfo, WorkerInfo};
use wsgi_python::{AppOptions, PyApplication};

type Lines = Arc<Mutex<Vec<(HookLogLevel, String)>>>;

fn write_conf(name: &str, source: &str) -> ConfFile {
    init();
    let path = app_dir().join(name);
    std::fs::write(&path, source).unwrap();
    pyo3::Python::attach(|py| exec_config(py, &path.display().to_string()))
        .unwrap_or_else(|error| panic!("{error}"))
}

fn hooks(conf: &ConfFile) -> (ServerHooks, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let log: HookLog = Arc::new(move |level, text: &str| {
        sink.lock().unwrap().push((level, text.to_owned()));
    });
    let hooks = ServerHooks::from_conf(conf, log).unwrap_or_else(|error| panic!("{error}"));
    (hooks, lines)
}

fn server(conf: &ConfFile) -> ServerInfo {
    let mut cfg: Vec<(String, ConfValue)> = conf
        .entries
        .iter()
        .map(|entry| (entry.name.clone(), entry.value.clone()))
        .collect();
    cfg.push((
        "bind".into(),
        ConfValue::List(vec![ConfValue::Str("127.0.0.1:8000".into())]),
    ));
    ServerInfo {
        pid: 100,
        proc_name: "myapp".into(),
        num_workers: 3,
        cfg,
    }
}

const HOOKS: &str = r#"
workers = 3

def on_starting(server):
    server.log.info("starting %s pid=%d workers=%d cfg.workers=%d bind=%s",
                    server.proc_name, server.pid, server.num_workers,
                    server.cfg.workers, server.cfg.bind)
    server.started_here = "kept"

def when_ready(server):
    server.log.warning("ready %(name)s", {"name": server.proc_name})
    server.log.debug("still kept: %s", server.started_here)

def pre_fork(server, worker):
    worker.log.info("pre_fork pid=%s age=%d alive=%s", worker.pid, worker.age, worker.alive)
    worker.marker = "from pre_fork"

def post_fork(server, worker):
    server.log.info("post_fork pid=%s ppid=%s age=%s marker=%s timeout=%s",
                    worker.pid, worker.ppid, worker.age, worker.marker, worker.cfg.timeout)

def worker_int(worker):
    worker.log.critical("int alive=%s", worker.alive)

def nworkers_changed(server, new_value, old_value):
    server.log.info("nworkers %d -> %d", old_value, new_value)

def on_exit(server):
    try:
        server.cfg.no_such_setting
    except AttributeError as error:
        server.log.exception("on_exit: %s", error)

def child_exit(server, worker):
    server.log.error("child_exit %s", getattr(worker, "marker", "no marker"))

timeout = 17
"#;

#[test]
fn hooks_get_gunicorn_like_objects() {
    let conf = write_conf("h_hooks.py", HOOKS);
    let (hooks, lines) = hooks(&conf);
    let server = server(&conf);
    assert!(!hooks.is_empty());
    assert!(hooks.has(Hook::OnStarting));
    assert!(!hooks.has(Hook::OnReload));
    // Not defined: nothing happens.
    hooks.call(Hook::OnReload, &server, None, None).unwrap();

    hooks.call(Hook::OnStarting, &server, None, None).unwrap();
    hooks.call(Hook::WhenReady, &server, None, None).unwrap();
    let booting = WorkerInfo {
        pid: 0,
        ppid: 100,
        age: 7,
        number: 1,
    };
    hooks
        .call(Hook::PreFork, &server, Some(&booting), None)
        .unwrap();
    let forked = WorkerInfo {
        pid: 4242,
        ..booting
    };
    hooks
        .call(Hook::PostFork, &server, Some(&forked), None)
        .unwrap();
    hooks
        .call(Hook::WorkerInt, &server, Some(&forked), None)
        .unwrap();
    hooks
        .call(Hook::NworkersChanged, &server, None, Some((5, 3)))
        .unwrap();
    hooks.call(Hook::OnExit, &server, None, None).unwrap();
    hooks
        .call(Hook::ChildExit, &server, Some(&forked), None)
        .unwrap();
    // child_exit forgot the worker: a new object for the same age.
    hooks
        .call(Hook::ChildExit, &server, Some(&forked), None)
        .unwrap();

    let lines = lines.lock().unwrap().clone();
    let expected = [
        (
            HookLogLevel::Info,
            "starting myapp pid=100 workers=3 cfg.workers=3 bind=['127.0.0.1:8000']",
        ),
        (HookLogLevel::Warning, "ready myapp"),
        (HookLogLevel::Debug, "still kept: kept"),
        (
            HookLogLevel::Info,
            "pre_fork pid=[booting] age=7 alive=True",
        ),
        (
            HookLogLevel::Info,
            "post_fork pid=4242 ppid=100 age=7 marker=from pre_fork timeout=17",
        ),
        (HookLogLevel::Critical, "int alive=False"),
        (HookLogLevel::Info, "nworkers 3 -> 5"),
    ];
    for (index, (level, text)) in expected.iter().enumerate() {
        assert_eq!((&lines[index].0, lines[index].1.as_str()), (level, *text));
    }
    let (level, exception) = &lines[7];
    assert_eq!(*level, HookLogLevel::Error);
    assert!(
        exception.starts_with("on_exit: No configuration setting for: no_such_setting\nTraceback"),
        "{exception}"
    );
    assert!(exception.contains("AttributeError"), "{exception}");
    assert_eq!(lines[8].1, "child_exit from pre_fork");
    assert_eq!(lines[9].1, "child_exit no marker");
    assert_eq!(lines.len(), 10);
}

#[test]
fn a_raising_hook_is_an_error_with_its_traceback_logged() {
    let conf = write_conf(
        "h_raising.py",
        "def when_ready(server):\n    raise ValueError('not ready')\n",
    );
    let (hooks, lines) = hooks(&conf);
    let server = server(&conf);
    let error = hooks
        .call(Hook::WhenReady, &server, None, None)
        .unwrap_err();
    assert_eq!(
        error,
        format!(
            "{}:1: when_ready(server) raised ValueError: not ready",
            conf.display
        )
    );
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, HookLogLevel::Error);
    assert!(lines[0].1.starts_with(&error), "{}", lines[0].1);
    assert!(
        lines[0].1.contains("line 2, in when_ready"),
        "{}",
        lines[0].1
    );
    // A hook that needs a worker without one: an error, not a panic.
    let conf = conf_with_post_fork();
    let (hooks, _) = hooks_of(&conf);
    assert!(hooks.call(Hook::PostFork, &server, None, None).is_err());
}

fn conf_with_post_fork() -> ConfFile {
    write_conf(
        "h_post_fork.py",
        "def post_fork(server, worker):\n    pass\n",
    )
}

fn hooks_of(conf: &ConfFile) -> (ServerHooks, Lines) {
    hooks(conf)
}

#[test]
fn bad_hooks_are_refused_with_file_and_line() {
    let log: HookLog = Arc::new(|_, _: &str| {});
    let conf = write_conf("h_bad_value.py", "workers = 2\non_starting = 'hello'\n");
    let error = ServerHooks::from_conf(&conf, log.clone()).unwrap_err();
    assert_eq!(
        error,
        format!(
            "{}:2: on_starting must be a function taking (server), not the string \"hello\"",
            conf.display
        )
    );
    let conf = write_conf("h_bad_arity.py", "def pre_fork(server):\n    pass\n");
    let error = ServerHooks::from_conf(&conf, log.clone()).unwrap_err();
    assert!(
        error.ends_with(":1: pre_fork must be a function taking (server, worker), not a callable taking other arguments"),
        "{error}"
    );
    let conf = write_conf("h_none.py", "workers = 2\n");
    assert!(ServerHooks::from_conf(&conf, log).unwrap().is_empty());
}

const APP: &str = r#"
def app(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-App", "1")])
    return [b"hello ", b"world"]
"#;

const REQUEST_HOOKS: &str = r#"
seen = []

def pre_request(worker, req):
    worker.log.info("pre %s %s %s %s %s %r %s", req.method, req.path, req.query, req.uri,
                    req.version, req.headers, req.remote_addr)
    if req.path == "/forbidden":
        raise PermissionError("no")

def post_request(worker, req, environ, resp):
    if resp is None:
        worker.log.info("post %s environ=%r resp=None", req.path, environ)
    else:
        worker.log.info("post %s %s %s %s %r sent=%s", req.path, environ["PATH_INFO"],
                        resp.status, resp.status_code, resp.headers, resp.sent)
"#;

fn load_with_hooks(app_name: &str, conf: &ConfFile) -> (Arc<PyApplication>, Arc<TestLog>, Lines) {
    write_module(app_name, APP);
    let (hooks, lines) = hooks(conf);
    let worker = WorkerInfo {
        pid: 4242,
        ppid: 100,
        age: 1,
        number: 0,
    };
    let request_hooks = hooks.request_hooks(&server(conf), &worker);
    assert!(request_hooks.is_some());
    let log = Arc::new(TestLog::default());
    let options = AppOptions {
        request_hooks,
        ..AppOptions::new(false, true, log.clone())
    };
    let app = PyApplication::load(&format!("{app_name}:app"), options).unwrap();
    (Arc::new(app), log, lines)
}

#[test]
fn pre_and_post_request_around_a_request() {
    let conf = write_conf("h_request.py", REQUEST_HOOKS);
    let (app, log, lines) = load_with_hooks("h_app", &conf);
    let mut request = environ("GET", "/hello?x=1");
    request.headers.push((
        bytes::Bytes::from_static(b"HTTP_X_FORWARDED_FOR"),
        bytes::Bytes::from_static(b"10.0.0.1"),
    ));
    let record = serve(&app, request, vec![]);
    assert_eq!(record.status(), 201);
    assert_eq!(record.body_str(), "hello world");
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        lines[0].1,
        "pre GET /hello x=1 /hello?x=1 (1, 1) [('X-FORWARDED-FOR', '10.0.0.1')] ('127.0.0.1', 54321)"
    );
    assert_eq!(
        lines[1].1,
        "post /hello /hello 201 Created 201 [('Content-Type', 'text/plain'), ('X-App', '1')] sent=11"
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(log.text(), "");
}

#[test]
fn a_raising_pre_request_answers_500_and_post_request_still_runs() {
    let conf = write_conf("h_request2.py", REQUEST_HOOKS);
    let (app, log, lines) = load_with_hooks("h_app2", &conf);
    let record = serve(&app, environ("GET", "/forbidden"), vec![]);
    // The app was not called: the sink was aborted (a 500 by the server).
    assert!(record.head.is_none());
    assert!(record.aborted.is_some());
    let text = log.text();
    assert!(text.contains("pre_request"), "{text}");
    assert!(text.contains("PermissionError: no"), "{text}");
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines[1].1, "post /forbidden environ={} resp=None");
}

#[test]
fn a_raising_post_request_is_logged_and_the_response_stands() {
    let conf = write_conf(
        "h_post_raises.py",
        "def post_request(worker, req):\n    raise RuntimeError('post failed ' + req.path)\n",
    );
    let (app, log, _) = load_with_hooks("h_app3", &conf);
    let record = serve(&app, environ("GET", "/p"), vec![]);
    assert_eq!(record.status(), 201);
    assert!(record.finished);
    let text = log.text();
    assert!(text.contains("Exception in post_request hook"), "{text}");
    assert!(text.contains("RuntimeError: post failed /p"), "{text}");
}

#[test]
fn no_request_hooks_without_pre_or_post_request() {
    let conf = write_conf("h_no_request.py", "def on_starting(server):\n    pass\n");
    let (hooks, _) = hooks(&conf);
    let worker = WorkerInfo::default();
    assert!(hooks.request_hooks(&server(&conf), &worker).is_none());
    // AppOptions::new has none, and serving works as before.
    let (app, _log) = load("h_plain", APP);
    let record = serve(&Arc::new(app), environ("GET", "/"), vec![]);
    assert_eq!(record.body_str(), "hello world");
}

#[test]
fn module_files_and_is_initialized() {
    init();
    assert!(wsgi_python::is_initialized());
    let path = write_module("h_watched", "x = 1\n");
    let files = pyo3::Python::attach(|py| {
        py.import("h_watched").unwrap();
        wsgi_python::module_files(py)
    });
    assert!(files.contains(&path), "{files:?}");
    assert!(
        files.iter().any(|file| file.ends_with("os.py")),
        "{files:?}"
    );
    assert!(files.iter().all(|file| file.is_file()));
}
