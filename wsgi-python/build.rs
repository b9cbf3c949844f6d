//! Build script: finds the libpython pyo3 links against and makes sure the
//! binaries load that one (rpath), and records the base interpreter's path.
//!
//! The trap it avoids: on Debian with a pyenv Python, pyo3 reads the pyenv
//! interpreter (say 3.11.7) and links `-lpython3.11` from its `lib/`, but at
//! run time the dynamic loader would pick the system's
//! `/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0` (3.11.2) unless the
//! binary carries an rpath to the right directory.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PYO3_PYTHON");
    // `Py_3_12`, `Py_3_14`, `PyPy`, ... for code that reads CPython's
    // string layout directly (pyutil::latin1_view).
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();

    if let Some(lib_dir) = config.lib_dir() {
        // For dependents (the server binary): DEP_WSGI_PYTHON_LIBDIR.
        println!("cargo::metadata=libdir={lib_dir}");
        // For this crate's own test binaries and examples.
        println!("cargo::rustc-link-arg=-Wl,-rpath,{lib_dir}");
        // Lets tests check which libpython the process really mapped.
        println!("cargo::rustc-env=WSGI_PYTHON_LIBDIR={lib_dir}");
    }

    let base = config
        .executable()
        .map(|executable| base_executable(executable).unwrap_or_else(|| executable.to_owned()))
        .unwrap_or_default();
    println!("cargo::rustc-env=WSGI_PYTHON_BASE_EXECUTABLE={base}");
    let version = config.version();
    println!(
        "cargo::rustc-env=WSGI_PYTHON_BUILD_VERSION={}.{}",
        version.major, version.minor
    );
}

/// The interpreter behind `executable` (a venv's python resolves to the
/// python it was created from), as an absolute path.
fn base_executable(executable: &str) -> Option<String> {
    let output = Command::new(executable)
        .args([
            "-S",
            "-c",
            "import sys; print(getattr(sys, '_base_executable', None) or sys.executable)",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let path = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}
