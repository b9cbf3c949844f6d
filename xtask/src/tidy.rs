//! Tidy checks on the tracked sources, run by `cargo xtask ci` and, as a
//! `#[test]`, by plain `cargo test` (rust-analyzer's habit):
//!
//! - every `.rs` file tracked by git (fuzz crates included) opens with a
//!   `//!` module doc line;
//! - no `.rs` line ends in whitespace.

use std::fs;
use std::process::Command;

use crate::util::{self, Result};

/// One broken rule at one place.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the workspace root.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: &'static str,
}

/// Runs every tidy check; the error lists each problem as `path:line: message`.
pub fn run() -> Result {
    let files = tracked_rust_files()?;
    let mut problems = Vec::new();
    for path in &files {
        let text = fs::read_to_string(util::root().join(path))
            .map_err(|error| format!("tidy: cannot read {path}: {error}"))?;
        problems.extend(check_file(path, &text));
    }
    if problems.is_empty() {
        println!("tidy: {} tracked .rs files are tidy", files.len());
        return Ok(());
    }
    let mut report = format!("tidy: {} problem(s):", problems.len());
    for problem in &problems {
        report.push_str(&format!(
            "\n  {}:{}: {}",
            problem.path, problem.line, problem.message
        ));
    }
    Err(report)
}

/// `git ls-files '*.rs'` from the workspace root (paths relative to it).
fn tracked_rust_files() -> Result<Vec<String>> {
    let listing = util::output(
        Command::new("git")
            .args(["ls-files", "-z", "--", "*.rs"])
            .current_dir(util::root()),
    )?;
    Ok(listing
        .split('\0')
        .filter(|path| !path.is_empty())
        // A file deleted in the work tree but not yet in the index is not ours to judge.
        .filter(|path| util::root().join(path).is_file())
        .map(str::to_string)
        .collect())
}

/// The problems of one file's text.
pub fn check_file(path: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !text.starts_with("//!") {
        problems.push(Problem {
            path: path.to_string(),
            line: 1,
            message: "the file must start with a `//!` module doc line",
        });
    }
    for (index, line) in text.lines().enumerate() {
        if line.ends_with([' ', '\t']) {
            problems.push(Problem {
                path: path.to_string(),
                line: index + 1,
                message: "trailing whitespace",
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real check over the repository, so `cargo test` enforces tidiness.
    #[test]
    fn tidy() {
        if Command::new("git").arg("--version").output().is_err()
            || !util::root().join(".git").exists()
        {
            eprintln!("tidy: not a git checkout (or no git); skipped");
            return;
        }
        if let Err(report) = run() {
            panic!("{report}");
        }
    }

    #[test]
    fn rules() {
        assert!(check_file("a.rs", "//! Doc.\nfn main() {}\n").is_empty());
        let problems = check_file("a.rs", "fn main() {} \n//! late\n\t\n");
        let lines: Vec<_> = problems.iter().map(|p| (p.line, p.message)).collect();
        assert_eq!(
            lines,
            [
                (1, "the file must start with a `//!` module doc line"),
                (1, "trailing whitespace"),
                (3, "trailing whitespace"),
            ]
        );
        assert_eq!(check_file("b.rs", "").len(), 1);
        // `text.lines()` also strips "\r\n": a CRLF line without spaces is fine.
        assert!(check_file("c.rs", "//! Doc.\r\nfn x() {}\r\n").is_empty());
    }
}
