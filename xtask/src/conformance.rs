//! `cargo xtask conformance`: the Python end-to-end suite
//! (`wsgi-server/tests/python`, pytest) against the built `wsgi-server`
//! binary. Also step `python` of `cargo xtask ci`.
//!
//! The suite runs in a virtualenv at `<target>/test-venv`, made with
//! `$PYTHON` (default `python3`). Requirements are installed again only when
//! `requirements.txt` changed (its hash is kept in a stamp file inside the
//! venv) or when the base Python changed (then the venv is rebuilt). pytest
//! gets `WSGI_SERVER_BIN` (absolute path of the binary) and `TEST_VENV`
//! (absolute path of the venv) in its environment.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Result};

pub const USAGE: &str = "\
cargo xtask conformance [--release] [PYTEST-ARGS...]

Runs the Python end-to-end tests (wsgi-server/tests/python) with pytest in
the venv <target>/test-venv against the wsgi-server binary (debug build
unless --release). Other arguments go to pytest, e.g. `-k flask -x`.
Environment: PYTHON (base interpreter, default python3).";

/// Where the suite lives, relative to the workspace root.
pub const TESTS_DIR: &str = "wsgi-server/tests/python";

/// What became of the suite.
#[derive(Debug, PartialEq, Eq)]
pub enum PythonOutcome {
    Passed,
    /// Nothing to run, with the reason.
    Skipped(String),
}

/// Entry point of `cargo xtask conformance`.
pub fn main(args: &[String]) -> Result {
    let mut release = false;
    let mut pytest_args = Vec::new();
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        match arg.as_str() {
            "--release" => release = true,
            // Everything after `--` is pytest's, even `--release`.
            "--" => break,
            _ => pytest_args.push(arg.clone()),
        }
    }
    pytest_args.extend(rest.cloned());
    match run_python_tests(release, &pytest_args)? {
        PythonOutcome::Passed => println!("conformance: ok"),
        PythonOutcome::Skipped(why) => println!("conformance: skipped: {why}"),
    }
    Ok(())
}

/// Builds the binary, prepares the venv and runs pytest.
pub fn run_python_tests(release: bool, pytest_args: &[String]) -> Result<PythonOutcome> {
    let root = util::root();
    let tests_dir = root.join(TESTS_DIR);
    if !has_test_files(&tests_dir) {
        let why = format!("no test_*.py files in {TESTS_DIR} yet");
        println!("note: {why}; skipping the Python end-to-end tests");
        return Ok(PythonOutcome::Skipped(why));
    }

    let target = util::target_dir();
    let venv = target.join("test-venv");
    prepare_venv(&venv, &tests_dir.join("requirements.txt"))?;

    let mut build = util::cargo(["build", "-p", "wsgi-server"]);
    if release {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let binary = target
        .join(if release { "release" } else { "debug" })
        .join("wsgi-server");
    if !binary.is_file() {
        return Err(format!("built, but {} does not exist", binary.display()));
    }

    let mut pytest = Command::new(venv_python(&venv));
    pytest
        .args(["-m", "pytest", "-q", TESTS_DIR])
        .args(pytest_args)
        .current_dir(&root)
        .env("WSGI_SERVER_BIN", &binary)
        .env("TEST_VENV", &venv);
    let status = util::status(&mut pytest)?;
    match status.code() {
        Some(0) => Ok(PythonOutcome::Passed),
        // pytest's "no tests were collected".
        Some(5) => {
            let why = "pytest collected no tests".to_string();
            println!("note: {why}; treating as skipped");
            Ok(PythonOutcome::Skipped(why))
        }
        _ => Err(format!(
            "the Python end-to-end tests failed ({}); rerun with: cargo xtask conformance [-k NAME]",
            util::describe(status)
        )),
    }
}

/// Prepares `<target>/test-venv` (as for the end-to-end tests) and returns
/// its path: the `wsgi-python` Rust tests run in it (`TEST_VENV`), since
/// some need its packages (PasteDeploy).
pub fn test_venv() -> Result<PathBuf> {
    let venv = util::target_dir().join("test-venv");
    prepare_venv(
        &venv,
        &util::root().join(TESTS_DIR).join("requirements.txt"),
    )?;
    Ok(venv)
}

/// True if the directory (recursively) holds a `test_*.py` or `*_test.py`.
fn has_test_files(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            !name.starts_with('.') && name != "__pycache__" && has_test_files(&path)
        } else {
            name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
        }
    })
}

pub fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

const STAMP: &str = "xtask-stamp";

/// Creates or refreshes the venv with `$PYTHON` (default `python3`), and
/// installs the requirements when they changed.
fn prepare_venv(venv: &Path, requirements: &Path) -> Result {
    let base = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    prepare_venv_with(&base, venv, requirements)
}

/// [`prepare_venv`] with the base interpreter `base`.
pub fn prepare_venv_with(base: &str, venv: &Path, requirements: &Path) -> Result {
    // Who the base interpreter is: a venv made by another Python is rebuilt.
    let identity = util::output(Command::new(base).args([
        "-c",
        "import sys; print(sys.version.split()[0], sys.base_prefix, sys.executable)",
    ]))
    .map_err(|error| format!("cannot run the Python interpreter `{base}` (set $PYTHON): {error}"))?
    .trim()
    .to_string();
    let python_line = format!("python {identity}");

    let stamp_path = venv.join(STAMP);
    let stamp = fs::read_to_string(&stamp_path).unwrap_or_default();
    let venv_works = Command::new(venv_python(venv))
        .args(["-c", "import sys"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !venv_works || stamp.lines().next() != Some(python_line.as_str()) {
        println!(
            "venv: (re)creating {} with {base} ({identity})",
            venv.display()
        );
        let _ = fs::remove_file(&stamp_path);
        util::run(
            Command::new(base)
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(venv),
        )?;
    }

    let (requirements_line, install): (String, Vec<String>) = match fs::read(requirements) {
        Ok(bytes) => (
            format!("requirements fnv1a64:{:016x}", fnv1a64(&bytes)),
            vec!["-r".into(), requirements.display().to_string()],
        ),
        Err(_) => (
            "requirements none (pytest only)".to_string(),
            vec!["pytest".into()],
        ),
    };
    let stamp = fs::read_to_string(&stamp_path).unwrap_or_default();
    let mut lines = stamp.lines();
    if lines.next() == Some(python_line.as_str()) && lines.next() == Some(&requirements_line) {
        println!("venv: {} is up to date", venv.display());
        return Ok(());
    }
    let _ = fs::remove_file(&stamp_path);
    util::run(
        Command::new(venv_python(venv))
            .args(["-m", "pip", "install", "-q"])
            .args(&install)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .current_dir(util::root()),
    )?;
    fs::write(&stamp_path, format!("{python_line}\n{requirements_line}\n"))
        .map_err(|error| format!("cannot write {}: {error}", stamp_path.display()))
}

/// 64-bit FNV-1a: a hash that is stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn finds_test_files() {
        let dir = env::temp_dir().join(format!("xtask-conformance-{}", std::process::id()));
        let nested = dir.join("apps");
        fs::create_dir_all(&nested).unwrap();
        fs::write(dir.join("conftest.py"), "").unwrap();
        assert!(!has_test_files(&dir));
        fs::write(nested.join("test_hello.py"), "").unwrap();
        assert!(has_test_files(&dir));
        fs::remove_dir_all(&dir).unwrap();
        assert!(!has_test_files(&dir));
    }
}
