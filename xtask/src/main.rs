//! `cargo xtask`: project automation in Rust, in the cargo-xtask and
//! rust-analyzer style: one binary, std only, every tool run through
//! `std::process::Command` with `$CARGO`. Keep it free of dependencies.
//!
//! ```text
//! cargo xtask ci [--only STEP,..] [--skip-clippy] [--skip-python] [--release] [-- TEST-ARGS]
//! cargo xtask fuzz [--time N] [TARGET...]
//! cargo xtask bench [--quick] [--only micro|e2e]
//! cargo xtask conformance [--release] [PYTEST-ARGS...]
//! cargo xtask wheel [--dev] [PYTEST-ARGS...]
//! cargo xtask tidy
//! ```

mod bench;
mod ci;
mod conformance;
mod fuzz;
mod rooms;
mod tidy;
mod util;
mod wheel;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <COMMAND> [ARGS]

Commands:
  ci            every check CI runs (fmt, tidy, crates, clippy, standalone,
                test, doc, python, wheel); the README's \"run every test\" command
  fuzz          run each cargo-fuzz target for a bounded time
  bench         codec micro-benchmarks (and, later, the end-to-end benchmark)
  conformance   the Python end-to-end tests against the built binary
  wheel         build the Python wheel (maturin), install it into two
                CPython builds' virtualenvs, run test_wheel.py
  tidy          module docs and trailing whitespace only
  help [CMD]    this text, or a command's options";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Children run from the workspace root whatever the caller's directory.
    if let Err(error) = std::env::set_current_dir(util::root()) {
        eprintln!("xtask: cannot enter the workspace root: {error}");
        return ExitCode::FAILURE;
    }
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    if rest
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "-h" || arg == "--help")
    {
        return help(Some(command));
    }
    let result = match command.as_str() {
        "ci" => ci::main(rest),
        "fuzz" => fuzz::main(rest),
        "bench" => bench::main(rest),
        "conformance" => conformance::main(rest),
        "wheel" => wheel::main(rest),
        "tidy" => tidy::run(),
        "help" | "-h" | "--help" => return help(rest.first()),
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask {command}: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn help(command: Option<&String>) -> ExitCode {
    let text = match command.map(String::as_str) {
        Some("ci") => ci::USAGE,
        Some("fuzz") => fuzz::USAGE,
        Some("bench") => bench::USAGE,
        Some("conformance") => conformance::USAGE,
        Some("wheel") => wheel::USAGE,
        Some("tidy") => "cargo xtask tidy\n\nChecks that every tracked .rs file starts with `//!` and has no trailing whitespace.",
        _ => USAGE,
    };
    println!("{text}");
    ExitCode::SUCCESS
}
