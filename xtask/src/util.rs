//! Small helpers shared by the subcommands: the workspace root, `$CARGO`,
//! running a command with its command line echoed, and the target directory.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Every xtask error is one human-readable line (or a few), printed by `main`.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root: the parent of this crate's manifest directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `$CARGO` (the cargo that runs us, so `+toolchain` overrides carry over), or `cargo`.
pub fn cargo_program() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// A `cargo` command that runs in the workspace root.
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(cargo_program());
    command.args(args).current_dir(root());
    command
}

/// The command line as a user could retype it (environment we set first).
pub fn display(command: &Command) -> String {
    let mut line = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                line,
                "{}={} ",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            );
        }
    }
    let program = command.get_program().to_string_lossy();
    // `$CARGO` is an absolute path to the toolchain's cargo; show plain `cargo`.
    let program = if program == cargo_program() {
        "cargo".into()
    } else {
        program
    };
    line.push_str(&program);
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(&arg.to_string_lossy()));
    }
    if let Some(dir) = command.get_current_dir() {
        if dir != root() {
            let shown = dir.strip_prefix(root()).unwrap_or(dir);
            let _ = write!(line, "    (in {})", shown.display());
        }
    }
    line
}

fn quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Runs `command` with inherited stdio, echoing it first; any non-zero exit is an error.
pub fn run(command: &mut Command) -> Result {
    let status = status(command)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({})",
            display(command),
            describe(status)
        ))
    }
}

/// Runs `command` with inherited stdio, echoing it first, and returns its exit status.
pub fn status(command: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", display(command));
    command
        .status()
        .map_err(|error| format!("cannot run `{}`: {error}", display(command)))
}

/// Runs `command` quietly and returns its standard output; a failure carries its stderr.
pub fn output(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run `{}`: {error}", display(command)))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}):\n{}",
            display(command),
            describe(output.status),
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// "exit code 1" or "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The workspace's target directory, as cargo sees it (honours
/// `CARGO_TARGET_DIR` and `build.target-dir`); `<root>/target` if cargo
/// cannot tell us.
pub fn target_dir() -> PathBuf {
    let metadata = output(&mut cargo([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]));
    metadata
        .ok()
        .and_then(|json| json_string_field(&json, "target_directory"))
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The value of the first `"key":"value"` in a JSON document (enough for
/// `cargo metadata`'s path fields, without a JSON dependency).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Splits `args` at the first `--`: (before, after).
pub fn split_dashdash(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|arg| arg == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[]),
    }
}

/// The value of `--flag VALUE` or `--flag=VALUE` at `args[*index]`, advancing `index`.
pub fn flag_value(args: &[String], index: &mut usize, flag: &str) -> Result<Option<String>> {
    let arg = &args[*index];
    if arg == flag {
        *index += 1;
        return args
            .get(*index)
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("{flag} needs a value"));
    }
    Ok(arg
        .strip_prefix(flag)
        .and_then(|rest| rest.strip_prefix('='))
        .map(str::to_string))
}

/// Formats a duration as "12.3s".
pub fn seconds(elapsed: std::time::Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field() {
        let json = r#"{"packages":[],"target_directory":"/a/b \"c\"/target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/a/b \"c\"/target")
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn flags() {
        let args: Vec<String> = ["--time", "5", "--time=7", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut i = 0;
        assert_eq!(
            flag_value(&args, &mut i, "--time").unwrap().as_deref(),
            Some("5")
        );
        assert_eq!(i, 1);
        i = 2;
        assert_eq!(
            flag_value(&args, &mut i, "--time").unwrap().as_deref(),
            Some("7")
        );
        i = 3;
        assert_eq!(flag_value(&args, &mut i, "--time").unwrap(), None);
        let (before, after) = split_dashdash(&args);
        assert_eq!((before.len(), after.len()), (4, 0));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("-D warnings"), "'-D warnings'");
        assert_eq!(quote("--package"), "--package");
        assert_eq!(quote(""), "''");
    }
}
