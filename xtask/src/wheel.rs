//! `cargo xtask wheel`: the Python package end to end. Also step `wheel`
//! of `cargo xtask ci`.
//!
//! 1. maturin (pinned in `build-requirements.txt`, installed from PyPI into
//!    `<target>/wheel-build-venv`) builds the wheel once, from the
//!    repository's `pyproject.toml` (profile `wheel`: release without LTO;
//!    `--dev` for the debug profile while iterating);
//! 2. for each CPython build (`$PYTHON` or `python3`, and Debian's
//!    `/usr/bin/python3`), a virtualenv `<target>/wheel-venv-<label>` gets
//!    `wheel-requirements.txt` (Flask, pyramid) and then that same wheel,
//!    installed with a `PATH` that has no `cargo` or `rustc` (a wheel must
//!    need no Rust toolchain);
//! 3. pytest runs `test_wheel.py` from the test venv with
//!    `WSGI_WHEEL_VENVS` naming the virtualenvs.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::conformance::{self, PythonOutcome, TESTS_DIR};
use crate::util::{self, Result};

pub const USAGE: &str = "\
cargo xtask wheel [--dev] [PYTEST-ARGS...]

Builds the Python wheel once with maturin (from PyPI, in
<target>/wheel-build-venv), installs it without a Rust toolchain on PATH into
one virtualenv per CPython build ($PYTHON or python3, and /usr/bin/python3),
and runs wsgi-server/tests/python/test_wheel.py against them.
  --dev   build with the dev profile (fast, unoptimized) instead of `wheel`
Other arguments go to pytest, e.g. `-k pserve -x`.";

/// Entry point of `cargo xtask wheel`.
pub fn main(args: &[String]) -> Result {
    let dev = args.iter().any(|arg| arg == "--dev");
    let pytest_args: Vec<String> = args.iter().filter(|arg| *arg != "--dev").cloned().collect();
    match run(dev, &pytest_args)? {
        PythonOutcome::Passed => println!("wheel: ok"),
        PythonOutcome::Skipped(why) => println!("wheel: skipped: {why}"),
    }
    Ok(())
}

/// Builds, installs and tests the wheel.
pub fn run(dev: bool, pytest_args: &[String]) -> Result<PythonOutcome> {
    let root = util::root();
    let tests_dir = root.join(TESTS_DIR);
    let target = util::target_dir();
    let ci = env::var("CI").as_deref() == Ok("true");

    let wheel = build(&target, &tests_dir, dev)?;

    let mut venvs = Vec::new();
    let mut seen = Vec::new();
    for (label, base) in interpreters() {
        let identity = match util::output(Command::new(&base).args([
            "-c",
            "import sys; print(sys.version.split()[0], sys.base_prefix)",
        ])) {
            Ok(identity) => identity.trim().to_string(),
            Err(error) if ci => return Err(format!("no {label} interpreter: {error}")),
            Err(error) => {
                println!("note: skipping the {label} interpreter: {error}");
                continue;
            }
        };
        if seen.contains(&identity) {
            let why = format!("{base} is the same Python as another one ({identity})");
            if ci {
                return Err(format!(
                    "the wheel must be tested on two CPython builds: {why}"
                ));
            }
            println!("note: {why}; testing one build only");
            continue;
        }
        seen.push(identity.clone());
        let venv = target.join(format!("wheel-venv-{label}"));
        println!(
            "wheel: virtualenv {} from {base} ({identity})",
            venv.display()
        );
        conformance::prepare_venv_with(&base, &venv, &tests_dir.join("wheel-requirements.txt"))?;
        install_without_rust(&venv, &wheel)?;
        venvs.push(venv);
    }
    if venvs.is_empty() {
        return Err("no Python interpreter to install the wheel into".into());
    }

    let test_venv = conformance::test_venv()?;
    let joined = env::join_paths(&venvs).map_err(|error| error.to_string())?;
    let mut pytest = Command::new(conformance::venv_python(&test_venv));
    pytest
        .args(["-m", "pytest", "-q"])
        .arg(format!("{TESTS_DIR}/test_wheel.py"))
        .args(pytest_args)
        .current_dir(&root)
        .env("WSGI_WHEEL_VENVS", joined)
        .env("TEST_VENV", &test_venv);
    let status = util::status(&mut pytest)?;
    if status.success() {
        Ok(PythonOutcome::Passed)
    } else {
        Err(format!(
            "the wheel's end-to-end tests failed ({}); rerun with: cargo xtask wheel [-k NAME]",
            util::describe(status)
        ))
    }
}

/// The interpreters the wheel is installed into: (label, program).
fn interpreters() -> Vec<(&'static str, String)> {
    vec![
        (
            "python3",
            env::var("PYTHON").unwrap_or_else(|_| "python3".to_string()),
        ),
        ("debian", "/usr/bin/python3".to_string()),
    ]
}

/// Builds the one wheel (old ones removed first) and returns its path.
fn build(target: &Path, tests_dir: &Path, dev: bool) -> Result<PathBuf> {
    let build_venv = target.join("wheel-build-venv");
    conformance::prepare_venv_with(
        &env::var("PYTHON").unwrap_or_else(|_| "python3".to_string()),
        &build_venv,
        &tests_dir.join("build-requirements.txt"),
    )?;
    let out = target.join("wheels");
    if out.is_dir() {
        for entry in fs::read_dir(&out)
            .map_err(|error| error.to_string())?
            .flatten()
        {
            if entry.path().extension().is_some_and(|ext| ext == "whl") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let mut maturin = Command::new(build_venv.join("bin").join("maturin"));
    maturin.arg("build");
    if dev {
        maturin.args(["--profile", "dev"]);
    } else {
        // pyproject.toml's `profile = "wheel"`.
        maturin.arg("--release");
    }
    maturin
        .arg("--out")
        .arg(&out)
        .current_dir(util::root())
        .env("CARGO_TARGET_DIR", target);
    let started = Instant::now();
    util::run(&mut maturin)?;
    let wheels: Vec<PathBuf> = fs::read_dir(&out)
        .map_err(|error| error.to_string())?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    match wheels.as_slice() {
        [wheel] => {
            println!(
                "wheel: built {} in {}",
                wheel.display(),
                util::seconds(started.elapsed())
            );
            Ok(wheel.clone())
        }
        other => Err(format!(
            "expected one wheel in {}, found {other:?}",
            out.display()
        )),
    }
}

/// `pip install` of the wheel with a `PATH` on which neither `cargo` nor
/// `rustc` can be found: the wheel needs no Rust toolchain.
fn install_without_rust(venv: &Path, wheel: &Path) -> Result {
    let original = env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::iter::once(venv.join("bin"))
        .chain(
            env::split_paths(&original)
                .filter(|dir| !dir.join("cargo").exists() && !dir.join("rustc").exists()),
        )
        .collect();
    let path = env::join_paths(&dirs).map_err(|error| error.to_string())?;
    let mut pip = Command::new(conformance::venv_python(venv));
    pip.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--force-reinstall",
    ])
    .arg(wheel)
    .env("PATH", &path)
    .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    .env_remove("CARGO")
    .env_remove("RUSTC")
    .env_remove("RUSTUP_TOOLCHAIN")
    .env_remove("CARGO_HOME")
    .env_remove("RUSTUP_HOME");
    for tool in ["cargo", "rustc"] {
        if let Some(dir) = dirs.iter().find(|dir| dir.join(tool).exists()) {
            return Err(format!("{tool} is still on PATH in {}", dir.display()));
        }
    }
    util::run(&mut pip)
}
