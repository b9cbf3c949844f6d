//! `cargo xtask ci`: every check CI runs, in order, stopping at the first
//! failure. The README's "run every test" command.
//!
//! | step         | what                                                               |
//! |--------------|--------------------------------------------------------------------|
//! | `fmt`        | `cargo fmt --all -- --check`                                       |
//! | `tidy`       | module docs and trailing whitespace (see `tidy.rs`)                |
//! | `crates`     | the one rule of each crate, from `cargo tree -e normal`            |
//! | `clippy`     | `cargo clippy --workspace --all-targets -- -D warnings`            |
//! | `standalone` | the server without Python; core and codecs each built alone; the   |
//! |              | extension module (wsgi-python without `embed`, abi3)               |
//! | `test`       | `cargo test --workspace [ARGS after --]`                           |
//! | `doc`        | `RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps`       |
//! | `python`     | the pytest end-to-end suite against the built binary              |
//! | `wheel`      | the Python wheel built once, installed in two CPythons, tested     |

use std::time::Instant;

use crate::conformance::{self, PythonOutcome};
use crate::util::{self, Result};

/// The steps, in the order they run.
const STEPS: &[(&str, &str)] = &[
    ("fmt", "cargo fmt --all -- --check"),
    (
        "tidy",
        "module docs and trailing whitespace in tracked .rs files; wsgi-server's rooms import without cycles",
    ),
    (
        "crates",
        "dependency rules of each crate (cargo tree -e normal)",
    ),
    (
        "clippy",
        "cargo clippy --workspace --all-targets -- -D warnings",
    ),
    (
        "standalone",
        "wsgi-server without Python; wsgi-core and the codecs built alone; the extension module",
    ),
    ("test", "cargo test --workspace"),
    (
        "doc",
        "RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps",
    ),
    (
        "python",
        "Python end-to-end tests (pytest, wsgi-server/tests/python)",
    ),
    (
        "wheel",
        "the pip package: one maturin wheel, two CPython venvs, test_wheel.py",
    ),
];

pub const USAGE: &str = "\
cargo xtask ci [OPTIONS] [-- CARGO-TEST-ARGS...]

Runs, in order, stopping at the first failure:
  fmt, tidy, crates, clippy, standalone, test, doc, python, wheel

Options:
  --only STEP[,STEP]  run only these steps (repeatable)
  --skip-clippy       skip the clippy step (quick local runs)
  --skip-python       skip the Python end-to-end tests (python and wheel)
  --release           build the server for the Python tests in release mode
  -- ARGS             appended to `cargo test --workspace`
                      (e.g. `-- -p wsgi-http`, `-- -- --nocapture`)";

#[derive(Debug, Default)]
struct Options {
    only: Option<Vec<String>>,
    skip_clippy: bool,
    skip_python: bool,
    release: bool,
    test_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let (ours, test_args) = util::split_dashdash(args);
    let mut options = Options {
        test_args: test_args.to_vec(),
        ..Options::default()
    };
    let mut index = 0;
    while index < ours.len() {
        match ours[index].as_str() {
            "--skip-clippy" => options.skip_clippy = true,
            "--skip-python" => options.skip_python = true,
            "--release" => options.release = true,
            _ => match util::flag_value(ours, &mut index, "--only")? {
                Some(list) => {
                    for step in list.split(',').filter(|s| !s.is_empty()) {
                        if !STEPS.iter().any(|(name, _)| *name == step) {
                            return Err(format!(
                                "--only: unknown step `{step}` (steps: {})",
                                step_names()
                            ));
                        }
                        options
                            .only
                            .get_or_insert_with(Vec::new)
                            .push(step.to_string());
                    }
                }
                None => {
                    return Err(format!("unknown argument `{}`\n\n{USAGE}", ours[index]));
                }
            },
        }
        index += 1;
    }
    Ok(options)
}

fn step_names() -> String {
    STEPS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Entry point of `cargo xtask ci`.
pub fn main(args: &[String]) -> Result {
    let options = parse(args)?;
    let started = Instant::now();
    let total = STEPS.len();
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    for (number, (name, what)) in STEPS.iter().enumerate() {
        let skip_reason = match *name {
            _ if options
                .only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|s| s == name)) =>
            {
                Some("not in --only")
            }
            "clippy" if options.skip_clippy => Some("--skip-clippy"),
            "python" | "wheel" if options.skip_python => Some("--skip-python"),
            _ => None,
        };
        if let Some(reason) = skip_reason {
            skipped.push(format!("{name} ({reason})"));
            continue;
        }
        println!("\n==> ci [{}/{total}] {name}: {what}", number + 1);
        let step_started = Instant::now();
        // Ok(Some(reason)): the step found nothing to do and skipped itself.
        let result: Result<Option<String>> = match *name {
            "fmt" => util::run(&mut util::cargo(["fmt", "--all", "--", "--check"])).map(|()| None),
            "tidy" => crate::tidy::run()
                .and_then(|()| crate::rooms::run())
                .map(|()| None),
            "crates" => crate_rules().map(|()| None),
            "clippy" => util::run(&mut util::cargo([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
            .map(|()| None),
            "standalone" => standalone().map(|()| None),
            "test" => test(&options.test_args).map(|()| None),
            "doc" => doc().map(|()| None),
            "python" => {
                conformance::run_python_tests(options.release, &[]).map(|outcome| match outcome {
                    PythonOutcome::Passed => None,
                    PythonOutcome::Skipped(why) => Some(why),
                })
            }
            "wheel" => crate::wheel::run(false, &[]).map(|outcome| match outcome {
                PythonOutcome::Passed => None,
                PythonOutcome::Skipped(why) => Some(why),
            }),
            _ => unreachable!("every step has a runner"),
        };
        let elapsed = util::seconds(step_started.elapsed());
        match result {
            Err(error) => {
                return Err(format!("ci step `{name}` failed after {elapsed}:\n{error}"));
            }
            Ok(Some(why)) => {
                println!("--- {name}: skipped: {why}");
                skipped.push(format!("{name} ({why})"));
                continue;
            }
            Ok(None) => println!("--- {name}: ok ({elapsed})"),
        }
        ran.push(*name);
    }
    println!(
        "\nci: ok: {} step(s) passed in {}: {}",
        ran.len(),
        util::seconds(started.elapsed()),
        ran.join(", ")
    );
    if !skipped.is_empty() {
        println!("ci: skipped: {}", skipped.join(", "));
    }
    Ok(())
}

/// Step `test`, in the test venv (`TEST_VENV`): the `wsgi-python` tests
/// that need PasteDeploy fail without it under `CI=true`.
fn test(args: &[String]) -> Result {
    let mut test = util::cargo(["test", "--workspace"]);
    test.args(args);
    match conformance::test_venv() {
        Ok(venv) => {
            test.env("TEST_VENV", venv);
        }
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            println!("note: no test venv ({error}); tests that need its packages skip");
        }
        Err(error) => return Err(error),
    }
    util::run(&mut test)
}

fn doc() -> Result {
    let mut flags = std::env::var("RUSTDOCFLAGS").unwrap_or_default();
    if !flags.split_whitespace().any(|flag| flag == "warnings") {
        flags = format!("{flags} -D warnings").trim().to_string();
    }
    util::run(util::cargo(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", flags))
}

/// Builds the pieces that must stand on their own: the server without the
/// Python runtime, and core and each codec without the rest of the
/// workspace's feature unification helping them.
fn standalone() -> Result {
    util::run(&mut util::cargo([
        "build",
        "-p",
        "wsgi-server",
        "--no-default-features",
    ]))?;
    for crate_name in ["wsgi-core", "wsgi-http", "wsgi-uwsgi"] {
        util::run(&mut util::cargo(["check", "-p", crate_name, "--lib"]))?;
    }
    // The extension module's build: wsgi-python without `embed`, pyo3's
    // stable ABI. Workspace builds unify `embed` in from the binary, so
    // only this catches code that needs it (or a non-limited C API).
    util::run(&mut util::cargo([
        "check",
        "-p",
        "wsgi-python",
        "--lib",
        "--no-default-features",
    ]))?;
    util::run(&mut util::cargo([
        "check",
        "-p",
        "wsgi-pyext",
        "--features",
        "abi3,extension-module",
    ]))?;
    Ok(())
}

/// Forbidden dependencies anywhere in a crate's normal dependency tree.
/// A name matches itself and its family (`pyo3` also forbids `pyo3-ffi`).
const TRANSITIVE_RULES: &[(&str, &[&str], &str)] = &[
    (
        "wsgi-core",
        &["tokio", "pyo3", "wsgi-http", "wsgi-uwsgi"],
        "wsgi-core is the runtime-free environ model: no tokio, no pyo3, no codec",
    ),
    (
        "wsgi-http",
        &["tokio", "pyo3", "wsgi-core"],
        "wsgi-http is a sans-I/O codec: no tokio, no pyo3, and no wsgi-core (they meet in `http` types)",
    ),
    (
        "wsgi-uwsgi",
        &["tokio", "pyo3", "wsgi-core"],
        "wsgi-uwsgi is a sans-I/O codec: no tokio, no pyo3, and no wsgi-core (they meet in `http` types)",
    ),
    (
        "wsgi-python",
        &["tokio"],
        "wsgi-python calls CPython and never touches tokio",
    ),
];

/// The only workspace crate allowed to depend on pyo3 directly, besides the
/// extension module, which needs its `#[pymodule]` (and nothing else).
const PYO3_OWNER: &str = "wsgi-python";
const PYO3_EXTENSION: &str = "wsgi-pyext";

fn in_family(name: &str, forbidden: &str) -> bool {
    name == forbidden
        || name
            .strip_prefix(forbidden)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Crate names in `cargo tree --prefix none` output (first word of each line).
fn tree_names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn tree(args: &[&str]) -> Result<Vec<String>> {
    let mut command = util::cargo(["tree", "-e", "normal", "--prefix", "none"]);
    command.args(args);
    println!("$ {}", util::display(&command));
    Ok(tree_names(&util::output(&mut command)?))
}

/// Step `crates`: the one rule of each crate, checked on `cargo tree`.
fn crate_rules() -> Result {
    let mut violations = Vec::new();
    for (crate_name, forbidden, why) in TRANSITIVE_RULES {
        // Skip the crate itself (first line) when matching.
        let names = tree(&["-p", crate_name])?;
        for bad in *forbidden {
            let mut found: Vec<&String> = names
                .iter()
                .skip(1)
                .filter(|name| in_family(name, bad))
                .collect();
            found.dedup();
            if let Some(first) = found.first() {
                violations.push(format!(
                    "{crate_name} depends on `{first}` (forbidden: `{bad}`): {why}\n    \
                     see: cargo tree -e normal -p {crate_name} -i {first}"
                ));
            }
        }
    }
    // Direct pyo3 dependencies: only wsgi-python.
    let members = tree(&["--workspace", "--depth", "0"])?;
    let mut members: Vec<String> = members.into_iter().filter(|m| m != "(*)").collect();
    members.sort();
    members.dedup();
    for member in &members {
        if member == PYO3_OWNER || member == PYO3_EXTENSION {
            continue;
        }
        let direct = tree(&["-p", member, "--depth", "1"])?;
        if let Some(bad) = direct.iter().skip(1).find(|name| in_family(name, "pyo3")) {
            violations.push(format!(
                "{member} depends directly on `{bad}`: only {PYO3_OWNER} may use pyo3 \
                 (depend on {PYO3_OWNER} instead)"
            ));
        }
    }
    if violations.is_empty() {
        println!("crates: rules hold for {} workspace crates", members.len());
        Ok(())
    } else {
        Err(format!(
            "crate rule violated:\n  {}",
            violations.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_flags() {
        let options = parse(&strings(&[
            "--skip-python",
            "--only",
            "tidy,crates",
            "--only=fmt",
            "--",
            "-p",
            "wsgi-http",
        ]))
        .unwrap();
        assert!(options.skip_python && !options.skip_clippy && !options.release);
        assert_eq!(options.only.unwrap(), strings(&["tidy", "crates", "fmt"]));
        assert_eq!(options.test_args, strings(&["-p", "wsgi-http"]));
        assert!(parse(&strings(&["--only", "lint"])).is_err());
        assert!(parse(&strings(&["--bogus"])).is_err());
    }

    #[test]
    fn families() {
        assert!(in_family("pyo3", "pyo3"));
        assert!(in_family("pyo3-ffi", "pyo3"));
        assert!(in_family("tokio-macros", "tokio"));
        assert!(!in_family("tokionic", "tokio"));
        assert!(!in_family("wsgi-core", "wsgi-cor"));
    }

    #[test]
    fn names_from_tree() {
        let tree =
            "wsgi-http v0.1.0 (/w/wsgi-http)\nbytes v1.12.1\nhttp v1.5.0\nbytes v1.12.1 (*)\n\n";
        assert_eq!(
            tree_names(tree),
            strings(&["wsgi-http", "bytes", "http", "bytes"])
        );
    }
}
