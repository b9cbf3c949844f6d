//! PasteDeploy: applications built by the real `paste.deploy` (`call:`,
//! `egg:`, `[DEFAULT]`, `set`, `%(here)s`, pipelines, filters, composites),
//! `[server:main]` read without loading the server, and logging set up from
//! the file. Skipped when PasteDeploy is missing, except under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use pyo3::prelude::*;
use wsgi_python::paste::{load_app, read_server, setup_logging, PasteError};
use wsgi_python::{AppOptions, LoadError, PyApplication};

const FACTORIES: &str = r#"
def echo(global_conf, **settings):
    def app(environ, start_response):
        keys = sorted(k for k in global_conf if k not in ("__file__",))
        lines = [f"global {k}={global_conf[k]}" for k in keys]
        lines += [f"local {k}={v}" for k, v in sorted(settings.items())]
        lines.append(f"path {environ['PATH_INFO']} script {environ['SCRIPT_NAME']}")
        body = "\n".join(lines).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return app

def tag_filter(global_conf, tag="?", **settings):
    """paste.filter_factory (what `call:` gives a filter)."""
    def wrap(app):
        def filtered(environ, start_response):
            def start(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Tag", tag)], exc_info)
            return app(environ, start)
        return filtered
    return wrap

def router(loader, global_conf, **mapping):
    apps = {prefix: loader.get_app(name, global_conf=global_conf) for prefix, name in mapping.items()}
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        for prefix, target in sorted(apps.items(), key=lambda item: -len(item[0])):
            if path.startswith(prefix):
                environ["SCRIPT_NAME"] += prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return target(environ, start_response)
        start_response("404 Not Found", [])
        return [b"none"]
    return app

def broken(global_conf, **settings):
    raise RuntimeError("factory is broken")
"#;

/// A directory with an INI file `name`, and the factories module importable.
fn ini(dir: &str, name: &str, text: &str) -> PathBuf {
    write_module("p_factories", FACTORIES);
    let dir = app_dir().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn serve_app(app: Py<PyAny>, path: &str) -> Record {
    let log = Arc::new(TestLog::default());
    let app = Arc::new(PyApplication::from_callable(
        app,
        AppOptions::new(false, true, log.clone()),
    ));
    let record = serve(&app, environ("GET", path), vec![]);
    assert_eq!(log.text(), "");
    record
}

fn load(path: &Path, name: Option<&str>, global: &[(&str, &str)]) -> Result<Py<PyAny>, LoadError> {
    let global: Vec<(String, String)> = global
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Python::attach(|py| load_app(py, &path.display().to_string(), name, &global))
}

/// Makes `egg:paste_example` resolvable without pip: a dist-info with the
/// example's entry points, and the example package on `sys.path`.
fn example_egg() {
    init();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/paste_example");
    let dist = app_dir().join("paste_example-0.1.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: paste_example\nVersion: 0.1.0\n",
    )
    .unwrap();
    let pyproject = std::fs::read_to_string(example.join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("main = \"paste_example:main\""));
    std::fs::write(
        dist.join("entry_points.txt"),
        "[paste.app_factory]\nmain = paste_example:main\n\n\
         [paste.filter_app_factory]\nheader = paste_example:header_filter\n",
    )
    .unwrap();
    Python::attach(|py| {
        let path = py.import("sys").unwrap().getattr("path").unwrap();
        let example = example.canonicalize().unwrap().display().to_string();
        if !path.contains(&example).unwrap() {
            path.call_method1("insert", (0, example)).unwrap();
        }
    });
}

#[test]
fn call_factory_with_defaults_set_and_here() {
    if !have_module("paste.deploy") {
        return;
    }
    let path = ini(
        "p_basic",
        "app.ini",
        "[DEFAULT]\ngreeting = hello\ndb = sqlite:///%(here)s/default.db\n\n\
         [app:main]\nuse = call:p_factories:echo\nset greeting = overridden\n\
         db_uri = %(db)s\nwho = %(greeting)s\nget mood = feeling\n",
    );
    let dir = path.parent().unwrap().display().to_string();
    let app = load(&path, None, &[("feeling", "fine")]).unwrap_or_else(|error| panic!("{error}"));
    let body = serve_app(app, "/x").body_str();
    let expected = format!(
        "global db=sqlite:///{dir}/default.db\nglobal feeling=fine\nglobal greeting=overridden\n\
         global here={dir}\nlocal db_uri=sqlite:///{dir}/default.db\nlocal mood=fine\n\
         local who=hello\npath /x script "
    );
    assert_eq!(body, expected);

    // config: and #name forms.
    let path = ini(
        "p_basic",
        "named.ini",
        "[app:other]\nuse = call:p_factories:echo\nk = v\n",
    );
    let uri = format!("config:{}#other", path.display());
    let app = Python::attach(|py| load_app(py, &uri, None, &[])).unwrap();
    assert!(serve_app(app, "/").body_str().contains("local k=v"));
}

#[test]
fn pipeline_filters_composite_and_egg() {
    if !have_module("paste.deploy") {
        return;
    }
    example_egg();
    let path = ini(
        "p_composite",
        "site.ini",
        "[composite:main]\nuse = call:p_factories:router\n/a = app_a\n/b = pipe\n\n\
         [app:app_a]\nuse = egg:paste_example#main\ndb_uri = postgres://a\n\n\
         [pipeline:pipe]\npipeline = tag app_b\n\n\
         [filter:tag]\nuse = call:p_factories:tag_filter\ntag = T1\n\n\
         [filter-app:app_b]\nuse = egg:paste_example#header\nheader = X-Egg\nnext = real_b\n\n\
         [app:real_b]\nuse = call:p_factories:echo\nfilter-with = tag3\n\n\
         [filter:tag3]\nuse = call:p_factories:tag_filter\ntag = T3\n",
    );
    let dir = path.parent().unwrap().display().to_string();
    let app = load(&path, None, &[]).unwrap_or_else(|error| panic!("{error}"));
    let app = Python::attach(|py| app.clone_ref(py));
    let a = serve_app(app, "/a/hello");
    assert_eq!(a.body_str(), format!("db_uri=postgres://a\nhere={dir}\n"));

    let app = load(&path, Some("main"), &[]).unwrap();
    let b = serve_app(app, "/b/c");
    assert!(
        b.body_str().ends_with("path /c script /b"),
        "{}",
        b.body_str()
    );
    let tags: Vec<String> = b
        .head
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .filter(|(name, _)| name.as_ref() == b"X-Tag" || name.as_ref() == b"X-Egg")
        .map(|(name, value)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            )
        })
        .collect();
    // The innermost filter adds its header first.
    assert_eq!(tags, ["X-Tag=T3", "X-Egg=on", "X-Tag=T1"]);
}

#[test]
fn load_errors() {
    if !have_module("paste.deploy") {
        return;
    }
    let path = ini(
        "p_errors",
        "errors.ini",
        "[app:main]\nuse = call:p_factories:broken\n",
    );
    let error = load(&path, None, &[]).unwrap_err().to_string();
    assert!(
        error.starts_with("failed to load the PasteDeploy application"),
        "{error}"
    );
    assert!(error.contains("RuntimeError: factory is broken"), "{error}");
    let error = load(&path, Some("missing"), &[]).unwrap_err().to_string();
    assert!(
        error.contains("LookupError: No section 'missing'"),
        "{error}"
    );
    let missing = app_dir().join("p_errors/none.ini");
    assert_eq!(
        load(&missing, None, &[]).unwrap_err(),
        LoadError::FileNotFound { path: missing }
    );
}

const SERVER_INI: &str = "[DEFAULT]
http_port = 6543
debug = false

[app:main]
use = call:p_factories:echo

[server:main]
use = egg:Paste#http
host = 127.0.0.1
port = %(http_port)s
threads = 4
set extra = 1
get debug_flag = debug
url = http://%(host)s:%(port)s/
greeting = hi %(who)s

[server:alt]
use = egg:waitress#main
listen = *:%(here)s
";

#[test]
fn read_server_without_loading_it() {
    if !have_module("paste.deploy") {
        return;
    }
    let path = ini("p_server", "server.ini", SERVER_INI);
    let paste_installed = Python::attach(|py| {
        py.import("importlib.metadata")?
            .call_method1("distribution", ("Paste",))
            .map(drop)
    })
    .is_ok();
    assert!(
        !paste_installed,
        "this test wants egg:Paste#http without Paste"
    );
    let server = Python::attach(|py| {
        read_server(
            py,
            &path,
            None,
            &[
                ("http_port".into(), "8080".into()),
                ("who".into(), "cli".into()),
                ("debug".into(), "true".into()),
            ],
        )
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(server.section, "server:main");
    assert_eq!(server.use_.as_deref(), Some("egg:Paste#http"));
    // A global override does not beat [DEFAULT] in interpolation
    // (PasteDeploy's update_defaults(overwrite=False)) but fills in what
    // [DEFAULT] lacks, and wins for `get`; [DEFAULT] keys are not local.
    let expected: Vec<(String, String, Option<u32>)> = vec![
        ("host".into(), "127.0.0.1".into(), Some(10)),
        ("port".into(), "6543".into(), Some(11)),
        ("threads".into(), "4".into(), Some(12)),
        ("url".into(), "http://127.0.0.1:6543/".into(), Some(15)),
        ("greeting".into(), "hi cli".into(), Some(16)),
        ("debug_flag".into(), "true".into(), Some(14)),
    ];
    assert_eq!(server.settings, expected);

    let alt = Python::attach(|py| read_server(py, &path, Some("alt"), &[])).unwrap();
    let dir = path.parent().unwrap().display().to_string();
    assert_eq!(alt.get("listen"), Some(format!("*:{dir}").as_str()));
    assert_eq!(alt.use_.as_deref(), Some("egg:waitress#main"));

    let error = Python::attach(|py| read_server(py, &path, Some("nope"), &[])).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: there is no [server:nope] section; its server sections are [server:main], [server:alt]",
            path.display()
        )
    );
    let missing = app_dir().join("p_server/none.ini");
    let error = Python::attach(|py| read_server(py, &missing, None, &[])).unwrap_err();
    assert_eq!(error, PasteError::NotFound { path: missing });

    let bad = ini("p_server", "bad.ini", "[server:main]\nport = %(nothing)s\n");
    let error = Python::attach(|py| read_server(py, &bad, None, &[]))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "{}: InterpolationMissingOptionError",
            bad.display()
        )),
        "{error}"
    );
    assert!(!error.contains('\n'));
}

#[test]
fn setup_logging_from_the_file() {
    init();
    let path = ini(
        "p_logging",
        "logging.ini",
        "[app:main]\nuse = call:p_factories:echo\n\n\
         [loggers]\nkeys = root, p_test\n\n\
         [handlers]\nkeys = file\n\n\
         [formatters]\nkeys = plain\n\n\
         [logger_root]\nlevel = WARNING\nhandlers =\n\n\
         [logger_p_test]\nlevel = INFO\nhandlers = file\nqualname = p_test\npropagate = 0\n\n\
         [handler_file]\nclass = FileHandler\nargs = ('%(here)s/out.log', 'w')\nformatter = plain\n\n\
         [formatter_plain]\nformat = PLAIN|%(levelname)s|%(name)s|%(message)s\n",
    );
    let configured = Python::attach(|py| setup_logging(py, &path)).unwrap();
    assert!(configured);
    Python::attach(|py| {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("p_test",))?;
        logger.call_method1("info", ("hello %s", "there"))?;
        for handler in logger.getattr("handlers")?.try_iter()? {
            handler?.call_method0("flush")?;
        }
        Ok::<(), PyErr>(())
    })
    .unwrap();
    let log = std::fs::read_to_string(path.parent().unwrap().join("out.log")).unwrap();
    assert_eq!(log, "PLAIN|INFO|p_test|hello there\n");

    let plain = ini(
        "p_logging",
        "plain.ini",
        "[app:main]\nuse = call:p_factories:echo\n",
    );
    assert!(!Python::attach(|py| setup_logging(py, &plain)).unwrap());
    let missing = app_dir().join("p_logging/none.ini");
    assert!(Python::attach(|py| setup_logging(py, &missing)).is_err());
}
