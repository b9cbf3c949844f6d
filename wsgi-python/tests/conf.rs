//! Running gunicorn configuration files with `conf::exec_config`: settings
//! and their lines, functions, `python:` modules, and each error with its
//! file and line.

mod common;

use common::*;
use wsgi_python::conf::{exec_config, ConfError, ConfFile, ConfValue};

fn write_conf(name: &str, source: &str) -> String {
    init();
    let path = app_dir().join(name);
    std::fs::write(&path, source).unwrap();
    path.display().to_string()
}

fn run(spec: &str) -> Result<ConfFile, ConfError> {
    init();
    pyo3::Python::attach(|py| exec_config(py, spec))
}

fn value<'a>(conf: &'a ConfFile, name: &str) -> &'a ConfValue {
    &conf
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from {:?}", conf.entries))
        .value
}

fn line(conf: &ConfFile, name: &str) -> Option<u32> {
    conf.get(name).unwrap().line
}

const CONFIG: &str = r#"import os
import multiprocessing as mp
from os.path import join

name = "app"
bind = [f"127.0.0.1:{8000 + 1}", "unix:/tmp/x.sock"]
workers = 2
workers = workers * 2
threads = 1
preload_app = True
timeout = 30.5
raw_env = ("A=1",)
logconfig_dict = {"version": 1, "root": {"level": "INFO"}}
secure_scheme_headers = {"X-PROTO": b"https"}
big = 2 ** 70
nothing = None
_private = 1
here = __file__
config_name = __name__
if workers > 1:
    proc_name = "many"

def on_starting(server):
    server.log.info("starting")

class Hooks:
    pass
"#;

#[test]
fn settings_functions_and_lines() {
    let path = write_conf("c_gunicorn.conf.py", CONFIG);
    let conf = run(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(conf.display, path);
    assert_eq!(value(&conf, "name"), &ConfValue::Str("app".into()));
    assert_eq!(
        value(&conf, "bind"),
        &ConfValue::List(vec![
            ConfValue::Str("127.0.0.1:8001".into()),
            ConfValue::Str("unix:/tmp/x.sock".into())
        ])
    );
    assert_eq!(value(&conf, "workers"), &ConfValue::Int(4));
    assert_eq!(line(&conf, "workers"), Some(8), "the last assignment");
    // bool before int: True is an int in Python.
    assert_eq!(value(&conf, "preload_app"), &ConfValue::Bool(true));
    assert_eq!(value(&conf, "threads"), &ConfValue::Int(1));
    assert_eq!(value(&conf, "timeout"), &ConfValue::Float(30.5));
    assert_eq!(
        value(&conf, "raw_env"),
        &ConfValue::List(vec![ConfValue::Str("A=1".into())])
    );
    assert_eq!(
        value(&conf, "logconfig_dict"),
        &ConfValue::Dict(vec![
            ("version".into(), ConfValue::Int(1)),
            (
                "root".into(),
                ConfValue::Dict(vec![("level".into(), ConfValue::Str("INFO".into()))])
            ),
        ])
    );
    assert_eq!(
        value(&conf, "secure_scheme_headers"),
        &ConfValue::Dict(vec![("X-PROTO".into(), ConfValue::Str("https".into()))])
    );
    assert_eq!(
        value(&conf, "big"),
        &ConfValue::Other("1180591620717411303424".into())
    );
    assert_eq!(value(&conf, "nothing"), &ConfValue::None);
    assert_eq!(value(&conf, "here"), &ConfValue::Str(path.clone()));
    assert_eq!(
        value(&conf, "config_name"),
        &ConfValue::Str("__config__".into())
    );
    assert_eq!(value(&conf, "proc_name"), &ConfValue::Str("many".into()));
    assert_eq!(line(&conf, "proc_name"), Some(21));
    assert!(matches!(
        value(&conf, "on_starting"),
        ConfValue::Callable(_)
    ));
    assert_eq!(line(&conf, "on_starting"), Some(23));
    assert!(matches!(value(&conf, "Hooks"), ConfValue::Callable(_)));
    assert!(matches!(value(&conf, "join"), ConfValue::Callable(_)));
    assert_eq!(line(&conf, "join"), Some(3));
    for skipped in ["os", "mp", "_private", "__file__", "__builtins__"] {
        assert!(conf.get(skipped).is_none(), "{skipped} should be skipped");
    }
    // Definition order, as the module defined them.
    let names: Vec<&str> = conf.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(&names[..3], ["join", "name", "bind"]);
}

#[test]
fn self_containing_list_does_not_overflow() {
    let path = write_conf("c_cycle.py", "loop = []\nloop.append(loop)\n");
    let conf = run(&path).unwrap();
    let mut depth = 0;
    let mut current = value(&conf, "loop");
    while let ConfValue::List(items) = current {
        depth += 1;
        current = &items[0];
    }
    assert!(matches!(current, ConfValue::Other(repr) if repr == "[[...]]"));
    assert!(depth > 10);
}

#[test]
fn python_module_spec() {
    write_module(
        "c_confmod",
        "import os\nworkers = 3\n\ndef post_fork(server, worker):\n    pass\n",
    );
    let conf = run("python:c_confmod").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(value(&conf, "workers"), &ConfValue::Int(3));
    assert_eq!(line(&conf, "workers"), Some(2));
    assert!(matches!(value(&conf, "post_fork"), ConfValue::Callable(_)));
    assert!(conf.display.ends_with("c_confmod.py"), "{}", conf.display);
    assert!(conf.get("os").is_none());

    let error = run("python:c_no_such_conf_module").unwrap_err();
    assert_eq!(
        error.to_string(),
        "python:c_no_such_conf_module: ModuleNotFoundError: No module named 'c_no_such_conf_module'"
    );
    write_module("c_badmod", "x = 1\n\nraise KeyError('k')\n");
    let error = run("python:c_badmod").unwrap_err().to_string();
    assert!(error.ends_with("c_badmod.py:3: KeyError: 'k'"), "{error}");
}

#[test]
fn missing_file() {
    init();
    let error = run("gunicorn.conf.py").unwrap_err();
    assert_eq!(
        error,
        ConfError::NotFound {
            display: "gunicorn.conf.py".into()
        }
    );
    assert_eq!(error.to_string(), "gunicorn.conf.py: no such file");
    let error = run("file:/nonexistent/dir/c.py").unwrap_err();
    assert_eq!(error.to_string(), "/nonexistent/dir/c.py: no such file");
}

#[test]
fn syntax_error_with_line() {
    let path = write_conf("c_syntax.py", "workers = 2\nbind = [\n\nthreads = = 4\n");
    let error = run(&path).unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with(&format!("{path}:")), "{text}");
    assert!(text.contains(": SyntaxError: "), "{text}");
    assert!(!text.contains('\n'));
    let ConfError::Syntax { line, .. } = error else {
        panic!("{error:?}")
    };
    assert!(matches!(line, Some(2..=4)), "{line:?}");

    let path = write_conf("c_indent.py", "workers = 2\n  threads = 4\n");
    let text = run(&path).unwrap_err().to_string();
    assert_eq!(
        text,
        format!("{path}:2: IndentationError: unexpected indent")
    );
}

#[test]
fn runtime_error_with_deepest_line_in_the_file() {
    let path = write_conf(
        "c_runtime.py",
        "import os\n\ndef helper():\n    return int('x')\n\nworkers = helper()\n",
    );
    let error = run(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{path}:4: ValueError: invalid literal for int() with base 10: 'x'")
    );
    let traceback = error.traceback().unwrap();
    assert!(traceback.contains("line 6"), "{traceback}");
    assert!(traceback.contains("helper"), "{traceback}");

    // An exception raised in another module: the line in this file.
    write_module(
        "c_raiser",
        "def fail():\n    raise RuntimeError('from elsewhere')\n",
    );
    let path = write_conf(
        "c_calls_other.py",
        "import c_raiser\nx = 1\nc_raiser.fail()\n",
    );
    assert_eq!(
        run(&path).unwrap_err().to_string(),
        format!("{path}:3: RuntimeError: from elsewhere")
    );

    // sys.exit() in a config must not stop the server.
    let path = write_conf("c_exit.py", "import sys\nsys.exit(3)\n");
    assert_eq!(
        run(&path).unwrap_err().to_string(),
        format!("{path}:2: SystemExit: 3")
    );
}

#[test]
fn a_non_py_extension_is_still_run() {
    let path = write_conf("c_gunicorn.conf", "workers = 5\n");
    let conf = run(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(value(&conf, "workers"), &ConfValue::Int(5));
}
