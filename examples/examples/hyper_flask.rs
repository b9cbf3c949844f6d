//! A WSGI server on hyper serving a Python app (Flask, or any PEP 3333
//! callable) through `wsgi-core` + `wsgi-python` alone: no code from
//! `wsgi-server`. See `examples::hyper_wsgi` for the bridge.
//!
//! `VIRTUAL_ENV=venv cargo run -p examples --example hyper_flask -- 127.0.0.1:8080 examples/apps/flask_app.py:app 4`

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use wsgi_python::{AppOptions, PyApplication, PythonConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let spec = args
        .next()
        .unwrap_or_else(|| "examples/apps/flask_app.py:app".into());
    let threads: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    // The virtualenv from $VIRTUAL_ENV, the working directory on sys.path.
    let config = PythonConfig {
        pythonpath: vec![PathBuf::from(".")],
        argv: std::env::args().collect(),
        ..PythonConfig::default()
    };
    let info = wsgi_python::initialize(&config).unwrap_or_else(|error| {
        eprintln!("hyper_flask: {error}");
        std::process::exit(1)
    });
    eprintln!("hyper_flask: Python {} ({})", info.version, info.prefix);
    let options = AppOptions::new(threads > 1, false, Arc::new(wsgi_core::StderrLog));
    let app = PyApplication::load(&spec, options).unwrap_or_else(|error| {
        eprintln!("hyper_flask: cannot load {spec}: {error}");
        std::process::exit(4)
    });
    let listener = TcpListener::bind(&address).unwrap_or_else(|error| {
        eprintln!("hyper_flask: cannot listen on {address}: {error}");
        std::process::exit(1)
    });
    println!(
        "listening on http://{}",
        listener.local_addr().expect("bound")
    );
    if let Err(error) = examples::hyper_wsgi::serve(listener, Arc::new(app), threads) {
        eprintln!("hyper_flask: {error}");
        std::process::exit(1);
    }
}
