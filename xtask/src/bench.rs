//! `cargo xtask bench`: the codec micro-benchmarks (`cargo bench -p
//! wsgi-http`, and `-p wsgi-uwsgi` once it has benches), then the
//! end-to-end benchmark ([`run_end_to_end`], still to be written).
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
when it has benches), then the end-to-end benchmark. Output is also written
to <target>/bench/.
  --quick        shorter runs (sets WSGI_BENCH_QUICK=1 for the bench binaries)
  --only PART    `micro` or `e2e`
  -- ARGS       passed to the micro-benchmark binaries";

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

    if bench.only.as_deref() != Some("e2e") {
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

/// The end-to-end benchmark: hello-world and echo WSGI apps served by the
/// release binary, driven with pipelined requests over loopback (hyper's
/// `benches/pipeline.rs`, `end_to_end.rs`), results into `args.out_dir`.
///
/// Not yet implemented: another engineer fills this in.
pub fn run_end_to_end(args: &BenchArgs) -> Result {
    let _ = args;
    println!("end-to-end benchmark: not yet implemented");
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
