//! Loading applications from every spec form gunicorn accepts, and each
//! [`LoadError`] with the message a user sees.

mod common;

use std::sync::Arc;

use common::*;
use wsgi_python::{AppOptions, LoadError, PyApplication};

fn try_load(spec: &str) -> Result<PyApplication, LoadError> {
    init();
    PyApplication::load(
        spec,
        AppOptions::new(false, true, Arc::new(TestLog::default())),
    )
}

fn body_of(spec: &str) -> String {
    let app = Arc::new(try_load(spec).unwrap_or_else(|error| panic!("{spec}: {error}")));
    serve(&app, environ("GET", "/"), vec![]).body_str()
}

const SPEC_APP: &str = r#"
def _answer(text):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]
    return app

application = _answer("application")
app = _answer("app")

class _Holder:
    pass

obj = _Holder()
obj.app = _answer("obj.app")

def factory(*args, **kwargs):
    return _answer(f"factory{args!r}{sorted(kwargs.items())!r}")

not_callable = 42
"#;

#[test]
fn every_spec_form() {
    write_module("l_specs", SPEC_APP);
    let package = app_dir().join("l_pkg");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), "").unwrap();
    std::fs::write(package.join("mod.py"), SPEC_APP).unwrap();
    let files = app_dir().join("l_files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("l_fileapp.py"), SPEC_APP).unwrap();

    let cases = [
        ("l_specs", "application"),
        ("l_specs:app", "app"),
        (" l_specs : app ", "app"),
        ("l_pkg.mod:obj.app", "obj.app"),
        ("l_specs:factory()", "factory()[]"),
        (
            "l_specs:factory('x', debug=True)",
            "factory('x',)[('debug', True)]",
        ),
        (
            "l_specs:factory(1, [2, 3], name={'a': None})",
            "factory(1, [2, 3])[('name', {'a': None})]",
        ),
    ];
    for (spec, expect) in cases {
        assert_eq!(body_of(spec), expect, "{spec}");
    }
    let path = files.join("l_fileapp.py");
    assert_eq!(body_of(&path.display().to_string()), "application");
    assert_eq!(body_of(&format!("{}:obj.app", path.display())), "obj.app");
    // The file's directory is now importable.
    assert_eq!(
        eval_in("sys", &format!("{:?} in path", files.display().to_string())),
        "True"
    );
}

#[test]
fn relative_path_specs() {
    write_module("l_rel_target", SPEC_APP);
    // Relative to the working directory, as a user types it.
    let relative = app_dir()
        .strip_prefix(std::env::current_dir().unwrap())
        .map(|path| path.to_path_buf())
        .unwrap_or_else(|_| app_dir());
    let spec = format!("{}/l_rel_target.py:app", relative.display());
    assert_eq!(body_of(&spec), "app");
}

#[test]
fn import_errors_carry_the_traceback() {
    write_module(
        "l_broken",
        "import json\nraise RuntimeError('database settings missing')\n",
    );
    let error = try_load("l_broken:app").unwrap_err();
    let LoadError::Import { module, traceback } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(module, "l_broken");
    assert!(traceback.contains("Traceback"), "{traceback}");
    assert!(traceback.contains("RuntimeError: database settings missing"));
    assert!(error.to_string().contains("database settings missing"));

    let error = try_load("l_no_such_module_anywhere").unwrap_err();
    assert!(
        matches!(&error, LoadError::Import { traceback, .. } if traceback.contains("ModuleNotFoundError")),
        "{error:?}"
    );
}

#[test]
fn missing_attributes_list_the_public_names() {
    write_module("l_missing", SPEC_APP);
    let error = try_load("l_missing:aplication").unwrap_err();
    let LoadError::MissingAttribute {
        module,
        attribute,
        available,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(module, "l_missing");
    assert_eq!(attribute, "aplication");
    assert_eq!(
        available,
        &["app", "application", "factory", "not_callable", "obj"]
    );
    let message = error.to_string();
    assert!(
        message.contains("app, application, factory, not_callable, obj"),
        "{message}"
    );

    let error = try_load("l_missing:obj.nope").unwrap_err();
    assert!(
        matches!(&error, LoadError::MissingAttribute { module, attribute, available }
            if module == "l_missing:obj" && attribute == "nope" && available == &["app"]),
        "{error:?}"
    );
    // The default name.
    write_module("l_no_default", "app = None\n");
    let error = try_load("l_no_default").unwrap_err();
    assert!(
        matches!(&error, LoadError::MissingAttribute { attribute, .. } if attribute == "application"),
        "{error:?}"
    );
}

#[test]
fn bad_specs_are_refused_before_any_import() {
    write_module("l_bad", SPEC_APP);
    let refused = [
        "",
        "l_bad:",
        "l_bad:factory(__import__('os').getcwd())",
        "l_bad:factory(x)",
        "l_bad:factory(*args)",
        "l_bad:factory(**kw)",
        "l_bad:app[0]",
        "l_bad:1 +",
        "not a module:app",
        // Keywords are not names (the dotted-name shortcut must refuse them as ast does).
        "l_bad:class",
        "l_bad:app.None",
        "l_bad:app..x",
    ];
    for spec in refused {
        let error = try_load(spec).unwrap_err();
        assert!(
            matches!(error, LoadError::BadSpec { .. }),
            "{spec}: {error:?}"
        );
    }
    let error = try_load("l_bad:factory(x)").unwrap_err().to_string();
    assert!(error.contains("literals"), "{error}");
}

#[test]
fn other_load_errors() {
    write_module("l_other", SPEC_APP);
    let error = try_load("l_other:not_callable").unwrap_err();
    assert!(
        matches!(&error, LoadError::NotCallable { type_name, .. } if type_name == "int"),
        "{error:?}"
    );
    write_module(
        "l_failing_factory",
        "def make():\n    raise ValueError('no config')\n",
    );
    let error = try_load("l_failing_factory:make()").unwrap_err();
    assert!(
        matches!(&error, LoadError::Factory { traceback, .. } if traceback.contains("ValueError: no config")),
        "{error:?}"
    );
    let error = try_load("/nonexistent/dir/app.py:app").unwrap_err();
    assert!(matches!(error, LoadError::FileNotFound { .. }), "{error:?}");
}

#[test]
fn request_timeout_is_importable_while_the_application_imports() {
    // Before the fix the module appeared only when the first request
    // thread started, so this import failed at load time.
    write_module(
        "l_timeout_import",
        r#"
from wsgi_server import RequestTimeout

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{RequestTimeout.__name__} {issubclass(RequestTimeout, BaseException)}".encode()]
"#,
    );
    assert_eq!(body_of("l_timeout_import:app"), "RequestTimeout True");
}
