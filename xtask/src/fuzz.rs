//! `cargo xtask fuzz`: runs every cargo-fuzz target of every codec for a
//! bounded time (rust-analyzer's `run_fuzzer`; httparse's CIFuzz).
//!
//! Fuzz crates are the `*/fuzz/Cargo.toml` beside the codecs, outside the
//! workspace; their targets are `fuzz_targets/*.rs`. cargo-fuzz needs
//! nightly flags, so each run sets `RUSTC_BOOTSTRAP=1` on the stable
//! toolchain. cargo-fuzz is installed (`cargo install cargo-fuzz --locked`)
//! when `cargo fuzz --version` fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::util::{self, Result};

pub const USAGE: &str = "\
cargo xtask fuzz [--time SECONDS] [TARGET...] [-- LIBFUZZER-ARGS...]

Runs each fuzz target (all of them, or those named) for SECONDS (default 30)
with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET -- -max_total_time=SECONDS`
from its fuzz crate. Fails if any target crashes or does not build.
  --list   print the targets and exit";

const DEFAULT_SECONDS: u64 = 30;

/// One fuzz target.
#[derive(Debug)]
struct Target {
    /// The fuzz crate's directory (`wsgi-http/fuzz`).
    dir: PathBuf,
    /// The binary name (file stem under `fuzz_targets/`).
    name: String,
}

/// Entry point of `cargo xtask fuzz`.
pub fn main(args: &[String]) -> Result {
    let (ours, libfuzzer_args) = util::split_dashdash(args);
    let mut seconds = DEFAULT_SECONDS;
    let mut wanted = Vec::new();
    let mut list = false;
    let mut index = 0;
    while index < ours.len() {
        if let Some(value) = util::flag_value(ours, &mut index, "--time")? {
            seconds =
                value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--time: `{value}` is not a positive number of seconds")
                })?;
        } else if ours[index] == "--list" {
            list = true;
        } else if ours[index].starts_with('-') {
            return Err(format!("unknown argument `{}`\n\n{USAGE}", ours[index]));
        } else {
            wanted.push(ours[index].clone());
        }
        index += 1;
    }

    let all = discover()?;
    if list {
        for target in &all {
            println!("{}  ({})", target.name, relative(&target.dir));
        }
        return Ok(());
    }
    let mut targets = Vec::new();
    for name in &wanted {
        let matching: Vec<&Target> = all.iter().filter(|t| &t.name == name).collect();
        if matching.is_empty() {
            let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
            return Err(format!(
                "no fuzz target `{name}` (targets: {})",
                names.join(", ")
            ));
        }
        targets.extend(matching);
    }
    if wanted.is_empty() {
        targets.extend(all.iter());
    }
    if targets.is_empty() {
        println!("fuzz: no fuzz targets found (*/fuzz/fuzz_targets/*.rs)");
        return Ok(());
    }

    ensure_cargo_fuzz()?;

    let mut summary = Vec::new();
    let mut failed = 0;
    for target in &targets {
        println!(
            "\n==> fuzz {} ({}) for {seconds}s",
            target.name,
            relative(&target.dir)
        );
        let before = artifacts(target);
        let started = Instant::now();
        let mut command = Command::new(util::cargo_program());
        command
            .args(["fuzz", "run", &target.name, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args(libfuzzer_args)
            .current_dir(&target.dir)
            .env("RUSTC_BOOTSTRAP", "1")
            // Fuzz builds (sanitizer flags) stay in the fuzz crate's own
            // target dir, away from the workspace's.
            .env_remove("CARGO_TARGET_DIR");
        let status = util::status(&mut command);
        let elapsed = util::seconds(started.elapsed());
        let new: Vec<PathBuf> = artifacts(target)
            .into_iter()
            .filter(|path| !before.contains(path))
            .collect();
        let verdict = match status {
            Ok(status) if status.success() => "ok".to_string(),
            Ok(status) => {
                failed += 1;
                let found: Vec<String> = new.iter().map(|path| relative(path)).collect();
                if found.is_empty() {
                    format!("FAILED ({})", util::describe(status))
                } else {
                    format!(
                        "CRASH ({}); reproduce: cd {} && RUSTC_BOOTSTRAP=1 cargo fuzz run {} {}",
                        util::describe(status),
                        relative(&target.dir),
                        target.name,
                        found.join(" ")
                    )
                }
            }
            Err(error) => {
                failed += 1;
                format!("FAILED ({error})")
            }
        };
        summary.push(format!(
            "fuzz {:<24} {:>7}  {verdict}",
            target.name, elapsed
        ));
    }
    println!("\nfuzz summary ({seconds}s per target):");
    for line in &summary {
        println!("  {line}");
    }
    if failed > 0 {
        Err(format!(
            "{failed} of {} fuzz target(s) failed",
            targets.len()
        ))
    } else {
        Ok(())
    }
}

/// Every `fuzz_targets/*.rs` of every `*/fuzz/Cargo.toml`, sorted.
fn discover() -> Result<Vec<Target>> {
    let root = util::root();
    let entries =
        fs::read_dir(&root).map_err(|error| format!("cannot list {}: {error}", root.display()))?;
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path().join("fuzz");
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let Ok(files) = fs::read_dir(dir.join("fuzz_targets")) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|ext| ext == "rs") {
                if let Some(stem) = path.file_stem() {
                    targets.push(Target {
                        dir: dir.clone(),
                        name: stem.to_string_lossy().into_owned(),
                    });
                }
            }
        }
    }
    targets.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
    Ok(targets)
}

/// Files under `fuzz/artifacts/<target>/` (crash, leak, timeout, oom inputs).
fn artifacts(target: &Target) -> Vec<PathBuf> {
    fs::read_dir(target.dir.join("artifacts").join(&target.name))
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

fn relative(path: &Path) -> String {
    let root = util::root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Installs cargo-fuzz if `cargo fuzz --version` does not work.
fn ensure_cargo_fuzz() -> Result {
    let works = Command::new(util::cargo_program())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return Ok(());
    }
    println!("cargo-fuzz is missing; installing it");
    util::run(&mut util::cargo(["install", "cargo-fuzz", "--locked"]))
}
