//! `initialize()` with a real virtualenv: `sys.prefix`, `sys.executable`,
//! `.pth` files, `sys.path` order, `sys.argv`, a version mismatch refused,
//! and the libpython actually mapped into the process.

use std::path::{Path, PathBuf};
use std::process::Command;

use pyo3::prelude::*;
use wsgi_python::{initialize, InitError, PythonConfig};

fn python(expression: &str) -> String {
    let code = std::ffi::CString::new(expression).unwrap();
    Python::attach(|py| {
        py.import("sys").unwrap();
        let globals = pyo3::types::PyDict::new(py);
        py.run(c"import sys, os, subprocess", Some(&globals), None)
            .unwrap();
        py.eval(&code, Some(&globals), None)
            .unwrap()
            .str()
            .unwrap()
            .to_string()
    })
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap()
}

/// One test: the interpreter can be started once per process.
#[test]
fn initialize_with_a_virtualenv() {
    let root = std::env::temp_dir().join(format!("wsgi-python-venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // A virtualenv of another Python version is refused before start-up.
    let fake = root.join("old-venv");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(
        fake.join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 2.7.18\n",
    )
    .unwrap();
    std::fs::write(fake.join("bin/python"), "").unwrap();
    let error = initialize(&PythonConfig {
        virtualenv: Some(fake),
        ..PythonConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(error, InitError::VersionMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("2.7.18"), "{error}");

    let error = initialize(&PythonConfig {
        virtualenv: Some(root.join("missing")),
        ..PythonConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(error, InitError::BadVirtualenv { .. }),
        "{error:?}"
    );

    // A real one, made by the Python we link against.
    let venv = root.join("venv");
    let status = Command::new(env!("WSGI_PYTHON_BASE_EXECUTABLE"))
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let site_packages = venv.join("lib/python3.11/site-packages");
    assert!(site_packages.is_dir(), "unexpected venv layout");
    let pth_target = root.join("from-pth");
    std::fs::create_dir_all(&pth_target).unwrap();
    std::fs::write(
        site_packages.join("extra.pth"),
        format!("{}\n", pth_target.display()),
    )
    .unwrap();
    let workdir = root.join("work");
    let extra = root.join("extra");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::create_dir_all(&extra).unwrap();

    let info = initialize(&PythonConfig {
        virtualenv: Some(venv.clone()),
        chdir: Some(workdir.clone()),
        pythonpath: vec![extra.clone()],
        argv: vec!["wsgi-server".into(), "app:app".into()],
    })
    .unwrap();
    eprintln!("{info:?}");
    assert_eq!(Path::new(&info.prefix), venv);
    assert_eq!(info.virtualenv.as_deref(), Some(info.prefix.as_str()));
    assert_eq!(info.base_prefix, python_base_prefix());
    assert!(
        info.executable.starts_with(&venv.display().to_string()),
        "{info:?}"
    );
    assert!(info.version.starts_with("3.11"), "{info:?}");

    // Only once.
    assert!(matches!(
        initialize(&PythonConfig::default()),
        Err(InitError::AlreadyInitialized)
    ));

    // Other threads can attach (the GIL was released).
    let from_thread = std::thread::spawn(|| python("sys.prefix")).join().unwrap();
    assert_eq!(Path::new(&from_thread), venv);

    assert_eq!(
        canonical(Path::new(&python("os.getcwd()"))),
        canonical(&workdir)
    );
    assert_eq!(python("sys.path[0]"), workdir.display().to_string());
    assert_eq!(python("sys.path[1]"), extra.display().to_string());
    assert_eq!(python("sys.argv"), "['wsgi-server', 'app:app']");
    assert_eq!(
        python(&format!(
            "{:?} in sys.path",
            site_packages.display().to_string()
        )),
        "True"
    );
    assert_eq!(
        python(&format!(
            "{:?} in sys.path",
            pth_target.display().to_string()
        )),
        "True"
    );
    // sys.executable is a real Python that starts in the same virtualenv
    // (what multiprocessing's spawn and Celery do).
    assert_eq!(
        python("subprocess.run([sys.executable, '-c', 'import sys; print(sys.prefix)'], capture_output=True, text=True).stdout.strip()"),
        venv.display().to_string()
    );
    assert_eq!(
        python(
            "(lambda p: (p.start(), p.join(), p.exitcode)[2])\
             (__import__('multiprocessing').get_context('spawn').Process(target=os.getpid))"
        ),
        "0",
        "multiprocessing (spawn) works"
    );

    // The libpython mapped into this process is the one we linked against
    // (pyenv's), not Debian's /usr/lib/x86_64-linux-gnu/libpython3.11.so.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libpythons: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.contains("libpython"))
        .collect();
    assert!(!libpythons.is_empty());
    for path in libpythons {
        assert!(
            path.starts_with(env!("WSGI_PYTHON_LIBDIR")),
            "{path} is not under {}",
            env!("WSGI_PYTHON_LIBDIR")
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The base prefix of the Python we built against.
fn python_base_prefix() -> String {
    let output = Command::new(env!("WSGI_PYTHON_BASE_EXECUTABLE"))
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
