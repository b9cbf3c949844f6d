//! `cargo xtask bench`: the codec micro-benchmarks (`cargo bench -p
//! wsgi-http`, and `-p wsgi-uwsgi` once it has benches), then the
//! end-to-end benchmark ([`run_end_to_end`]: our server beside its peers
//! and nginx under wrk, harness in `xtask/bench/run.py`).
//!
//! Every run's output is copied to `<target>/bench/` (one file per part),
//! so two runs can be compared with `diff`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{self, Result};

pub const USAGE: &str = "\
cargo xtask bench [--quick] [--only micro|e2e] [-- BENCH-ARGS...]

Runs the codec micro-benchmarks (cargo bench -p wsgi-http, -p wsgi-uwsgi
when it has benches), then the end-to-end benchmark: our release binary
beside granian, bjoern, uWSGI, gunicorn, waitress and nginx under wrk
(xtask/bench/run.py; installs wrk/nginx/libev-dev/build-essential with
apt-get and the pinned peers into <target>/bench-venv when missing).
Output is also written to <target>/bench/ (e2e: summary.md, targets.md,
results.jsonl, chart.svg, e2e.txt, e2e-logs/).
  --quick        the end-to-end part only, shorter (1 round of 2 s, fewer
                 servers, c=16 plus hello-ka c=1: under two minutes); with
                 `--only micro`, sets WSGI_BENCH_QUICK=1 for the bench binaries
  --only PART    `micro` or `e2e`
  -- ARGS       passed to the micro-benchmark binaries; with `--only e2e`,
                 to the harness instead (e.g. -- --servers ours,nginx
                 --scenarios hello-ka:1/16 --rounds 2; see run.py --help)";

/// What `cargo xtask bench` was asked to do; handed to each part.
#[derive(Debug, Default)]
pub struct BenchArgs {
    /// Shorter runs, for a smoke test rather than numbers to quote.
    pub quick: bool,
    /// `Some("micro")` or `Some("e2e")`: run only that part.
    pub only: Option<String>,
    /// Arguments after `--`, for the benchmark binaries.
    pub extra: Vec<String>,
    /// `<target>/bench/`, created before any part runs.
    pub out_dir: PathBuf,
}

/// Library crates whose benches are the micro-benchmarks.
const MICRO_CRATES: &[&str] = &["wsgi-http", "wsgi-uwsgi"];

/// Entry point of `cargo xtask bench`.
pub fn main(args: &[String]) -> Result {
    let (ours, extra) = util::split_dashdash(args);
    let mut bench = BenchArgs {
        extra: extra.to_vec(),
        out_dir: util::target_dir().join("bench"),
        ..BenchArgs::default()
    };
    let mut index = 0;
    while index < ours.len() {
        if ours[index] == "--quick" {
            bench.quick = true;
        } else if let Some(part) = util::flag_value(ours, &mut index, "--only")? {
            if part != "micro" && part != "e2e" {
                return Err(format!("--only: `{part}` is neither `micro` nor `e2e`"));
            }
            bench.only = Some(part);
        } else {
            return Err(format!("unknown argument `{}`\n\n{USAGE}", ours[index]));
        }
        index += 1;
    }
    fs::create_dir_all(&bench.out_dir)
        .map_err(|error| format!("cannot create {}: {error}", bench.out_dir.display()))?;

    // The quick mode is the day-to-day end-to-end comparison (under two
    // minutes): the codec micro-benchmarks run only when asked for.
    let micro = match bench.only.as_deref() {
        Some(part) => part == "micro",
        None => !bench.quick,
    };
    if micro {
        run_micro(&bench)?;
    }
    if bench.only.as_deref() != Some("micro") {
        println!("\n==> bench: end-to-end");
        run_end_to_end(&bench)?;
    }
    println!("\nbench: output in {}", bench.out_dir.display());
    Ok(())
}

/// The codec micro-benchmarks, one `cargo bench -p` per crate that has benches.
pub fn run_micro(args: &BenchArgs) -> Result {
    for crate_name in MICRO_CRATES {
        if !has_benches(&util::root().join(crate_name)) {
            println!("\nbench: {crate_name} has no benches yet; skipped");
            continue;
        }
        println!("\n==> bench: {crate_name} micro-benchmarks");
        let mut command = util::cargo(["bench", "-p", crate_name]);
        if !args.extra.is_empty() {
            command.arg("--").args(&args.extra);
        }
        if args.quick {
            command.env("WSGI_BENCH_QUICK", "1");
        }
        let log = args.out_dir.join(format!("micro-{crate_name}.txt"));
        run_tee(&mut command, &log)?;
    }
    Ok(())
}

/// The end-to-end benchmark: our release binary beside the WSGI servers
/// users would pick instead (granian, bjoern, uWSGI, gunicorn, waitress) and
/// nginx as the ceiling, under wrk, on this machine. Makes sure the tools are
/// there (apt-get for wrk, nginx, libev-dev, build-essential when missing; a
/// venv at `<target>/bench-venv` with the pinned peers of
/// `xtask/bench/requirements.txt`), builds `wsgi-server` in release mode,
/// then runs the harness `xtask/bench/run.py`, which writes `summary.md`,
/// `targets.md`, `results.jsonl` and `chart.svg` into `args.out_dir`.
///
/// `--quick` is passed on (one round of 2 s, fewer servers); with
/// `--only e2e`, the arguments after `--` go to the harness too.
pub fn run_end_to_end(args: &BenchArgs) -> Result {
    let started = Instant::now();
    ensure_apt_packages()?;
    let target = util::target_dir();
    let venv = target.join("bench-venv");
    ensure_bench_venv(&venv)?;
    util::run(&mut util::cargo([
        "build",
        "--release",
        "-p",
        "wsgi-server",
    ]))?;
    let binary = target.join("release").join("wsgi-server");

    let mut harness = Command::new(venv.join("bin").join("python"));
    harness
        .arg(util::root().join(HARNESS))
        .arg("--ours")
        .arg(&binary)
        .arg("--venv")
        .arg(&venv)
        .arg("--out")
        .arg(&args.out_dir)
        .current_dir(util::root());
    if args.quick {
        harness.arg("--quick");
    }
    if args.only.as_deref() == Some("e2e") {
        harness.args(&args.extra);
    }
    let log = args.out_dir.join("e2e.txt");
    run_tee(&mut harness, &log)?;
    println!(
        "bench: end-to-end took {} (summary.md, targets.md, results.jsonl, chart.svg in {})",
        util::seconds(started.elapsed()),
        args.out_dir.display()
    );
    Ok(())
}

/// The end-to-end harness (stdlib-only Python), relative to the workspace root.
const HARNESS: &str = "xtask/bench/run.py";
/// The pinned peers, one `name==version` a line.
const REQUIREMENTS: &str = "xtask/bench/requirements.txt";
/// In the venv: the interpreter and requirements it was set up with.
const VENV_STAMP: &str = "xtask-bench-stamp";

/// Debian packages the end-to-end benchmark needs: (package, what shows it is there).
const APT_PACKAGES: &[(&str, Probe)] = &[
    ("wrk", Probe::Program("wrk")),
    ("nginx-light", Probe::Program("nginx")),
    ("libev-dev", Probe::File("/usr/include/ev.h")),
    ("build-essential", Probe::Program("cc")),
    ("util-linux", Probe::Program("taskset")),
];

enum Probe {
    /// An executable on `$PATH` or in `/usr/sbin` (nginx lives there).
    Program(&'static str),
    /// A file a package installs.
    File(&'static str),
}

impl Probe {
    fn present(&self) -> bool {
        match self {
            Probe::File(path) => Path::new(path).exists(),
            Probe::Program(name) => std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
                .any(|dir| dir.join(name).is_file()),
        }
    }
}

/// `apt-get install` whatever is missing (nothing at all, not even
/// `apt-get update`, when everything is there). nginx-light is gone from
/// newer Debian releases: plain nginx then.
fn ensure_apt_packages() -> Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !probe.present())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("bench: wrk, nginx, libev-dev, build-essential present");
        return Ok(());
    }
    println!("bench: installing {} with apt-get", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    util::run(&mut apt(&["update", "-qq"]))?;
    let (nginx, others): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .partition(|package| package.starts_with("nginx"));
    if !others.is_empty() {
        let mut install = apt(&["install", "-y", "-qq"]);
        install.args(&others);
        util::run(&mut install)?;
    }
    if !nginx.is_empty()
        && !util::status(&mut apt(&["install", "-y", "-qq", "nginx-light"]))?.success()
    {
        util::run(&mut apt(&["install", "-y", "-qq", "nginx"]))?;
    }
    Ok(())
}

/// Creates `venv` with `$PYTHON` (default `python3`; the interpreter our
/// binary embeds should match) and installs the pinned peers, one at a time
/// so that one failed C build does not stop the rest. A stamp file records
/// the interpreter and requirements; reruns with the same skip all of it.
fn ensure_bench_venv(venv: &Path) -> Result {
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let identity = util::output(Command::new(&base).args([
        "-c",
        "import sys; print(sys.version.split()[0], sys.base_prefix, sys.executable)",
    ]))
    .map_err(|error| {
        format!("cannot run the Python interpreter `{base}` (set $PYTHON): {error}")
    })?;
    let requirements_path = util::root().join(REQUIREMENTS);
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|error| format!("cannot read {}: {error}", requirements_path.display()))?;
    let wanted = format!("python {}\n{requirements}", identity.trim());
    let stamp_path = venv.join(VENV_STAMP);
    let python = venv.join("bin").join("python");
    let venv_works = Command::new(&python)
        .args(["-c", "import sys"])
        .output()
        .is_ok_and(|output| output.status.success());
    if venv_works && fs::read_to_string(&stamp_path).is_ok_and(|stamp| stamp == wanted) {
        println!("bench: venv {} is up to date", venv.display());
        return Ok(());
    }
    let _ = fs::remove_file(&stamp_path);
    let stamp_python = format!("python {}", identity.trim());
    let old_python = fs::read_to_string(venv.join("xtask-bench-python")).unwrap_or_default();
    if !venv_works || old_python != stamp_python {
        println!("bench: creating {} with {base}", venv.display());
        let made = util::status(
            Command::new(&base)
                .args(["-m", "venv", "--clear"])
                .arg(venv),
        )?;
        if !made.success() {
            // Debian's own python3 needs python3-venv for `-m venv`.
            util::run(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "python3-venv", "python3-dev"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            util::run(
                Command::new(&base)
                    .args(["-m", "venv", "--clear"])
                    .arg(venv),
            )?;
        }
        let _ = fs::write(venv.join("xtask-bench-python"), &stamp_python);
    }
    let pip = |args: &[&str]| {
        let mut command = Command::new(&python);
        command
            .args(["-m", "pip", "install", "-q"])
            .args(args)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        command
    };
    util::run(&mut pip(&["-U", "pip", "wheel", "setuptools"]))?;
    let mut failed = Vec::new();
    for line in requirements.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !util::status(&mut pip(&[line]))?.success() {
            failed.push(line.to_string());
        }
    }
    if failed.is_empty() {
        fs::write(&stamp_path, &wanted)
            .map_err(|error| format!("cannot write {}: {error}", stamp_path.display()))?;
    } else {
        // No stamp: the next run tries again. The harness reports the
        // servers that cannot start as FAILED and goes on with the rest.
        println!(
            "bench: warning: could not install {} into {}",
            failed.join(", "),
            venv.display()
        );
    }
    Ok(())
}

/// A crate has benches if it has a `benches/` directory or a `[[bench]]` section.
fn has_benches(crate_dir: &Path) -> bool {
    crate_dir.join("benches").is_dir()
        || fs::read_to_string(crate_dir.join("Cargo.toml"))
            .is_ok_and(|manifest| manifest.contains("[[bench]]"))
}

/// Runs `command`, printing its stdout and also writing it to `log`.
fn run_tee(command: &mut Command, log: &Path) -> Result {
    println!("$ {}", util::display(command));
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run `{}`: {error}", util::display(command)))?;
    let mut file = fs::File::create(log)
        .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
    let _ = writeln!(file, "# {}", util::display(command));
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|error| format!("reading bench output: {error}"))?;
            println!("{line}");
            let _ = writeln!(file, "{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|error| format!("waiting for `{}`: {error}", util::display(command)))?;
    let _ = writeln!(
        file,
        "# {} in {}",
        util::describe(status),
        util::seconds(started.elapsed())
    );
    if status.success() {
        println!("bench: wrote {}", log.display());
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({})",
            util::display(command),
            util::describe(status)
        ))
    }
}
