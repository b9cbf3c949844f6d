//! The command line (and `GUNICORN_CMD_ARGS`, which holds the same flags)
//! read into a [`Layer`]: gunicorn's spellings, with uWSGI's long options
//! beside them. Nothing is decided here: values are kept as text with the
//! flag that gave them, and [`resolve`](super::resolve()) checks them.

use super::layer::{Layer, Rank, Source};
use super::settings::{self, Kind, Setting, SETTINGS};
use super::ConfigError;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve (or check, or print) with these settings.
    Run(Layer),
    /// `-h/--help`.
    Help,
    /// `-v/--version`.
    Version,
}

/// Reads `args` (without the program name) as the command line.
///
/// # Errors
/// One line naming the flag and the problem.
pub fn parse_command_line(args: &[String]) -> Result<Command, ConfigError> {
    Parser {
        layer: Layer::new(Rank::CommandLine),
        origin: None,
    }
    .parse(args)
}

/// Reads `GUNICORN_CMD_ARGS` (flags only, split as a shell would).
///
/// # Errors
/// One line naming the variable, the flag and the problem.
pub fn parse_env_args(variable: &str, text: &str) -> Result<Layer, ConfigError> {
    let args = split_shell_words(text)
        .map_err(|problem| ConfigError::new(format!("{variable}: {problem}")))?;
    let parser = Parser {
        layer: Layer::new(Rank::Env),
        origin: Some(variable.to_owned()),
    };
    match parser.parse(&args)? {
        Command::Run(layer) => Ok(layer),
        Command::Help | Command::Version => Err(ConfigError::new(format!(
            "{variable}: --help and --version have no place here"
        ))),
    }
}

struct Parser {
    layer: Layer,
    /// The variable the flags came from (`GUNICORN_CMD_ARGS`), if not argv.
    origin: Option<String>,
}

impl Parser {
    fn source(&self, flag: &str) -> Source {
        match &self.origin {
            None => Source::Flag(flag.to_owned()),
            Some(variable) => Source::Env(format!("{variable} {flag}")),
        }
    }

    fn fail(&self, flag: &str, problem: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(format!("{}: {problem}", self.source(flag)))
    }

    fn parse(mut self, args: &[String]) -> Result<Command, ConfigError> {
        let mut index = 0;
        let mut positional_only = false;
        while index < args.len() {
            let arg = &args[index];
            index += 1;
            if positional_only || arg == "-" || !arg.starts_with('-') {
                self.positional(arg)?;
            } else if arg == "--" {
                positional_only = true;
            } else if let Some(long) = arg.strip_prefix("--") {
                if long == "help" {
                    return Ok(Command::Help);
                }
                if long == "version" {
                    return Ok(Command::Version);
                }
                self.long(long, args, &mut index)?;
            } else {
                if arg == "-h" {
                    return Ok(Command::Help);
                }
                if arg == "-v" || arg == "-V" {
                    return Ok(Command::Version);
                }
                self.short(&arg[1..], args, &mut index)?;
            }
        }
        Ok(Command::Run(self.layer))
    }

    fn positional(&mut self, arg: &str) -> Result<(), ConfigError> {
        if self.origin.is_some() {
            return Err(self.fail(arg, "only flags belong here, not an application"));
        }
        if let Some(previous) = self
            .layer
            .all("wsgi_app")
            .find(|entry| matches!(&entry.source, Source::Flag(flag) if flag == "APP"))
        {
            return Err(ConfigError::new(format!(
                "APP: two applications given ({:?} and {arg:?}); flags go before or after the one APP",
                previous.value
            )));
        }
        let setting = settings::by_name("wsgi_app").expect("in the table");
        self.layer.push(setting, arg, Source::Flag("APP".into()));
        Ok(())
    }

    fn long(&mut self, text: &str, args: &[String], index: &mut usize) -> Result<(), ConfigError> {
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (text, None),
        };
        let flag = format!("--{name}");
        let Some(found) = settings::by_flag(name) else {
            let hint = settings::closest(name, settings::all_flags())
                .map(|near| format!(" (did you mean --{near}?)"))
                .unwrap_or_default();
            return Err(self.fail(&flag, format!("unknown option{hint}")));
        };
        if found.negated {
            if inline.is_some() {
                return Err(self.fail(&flag, "takes no value"));
            }
            self.layer.push(found.setting, "false", self.source(&flag));
            return Ok(());
        }
        self.take(found.setting, &flag, inline, args, index)
    }

    fn short(&mut self, text: &str, args: &[String], index: &mut usize) -> Result<(), ConfigError> {
        // `-MD` groups switches; `-w4` / `-w 4` give a value.
        for (at, letter) in text.char_indices() {
            let flag = format!("-{letter}");
            let Some(setting) = settings::by_short(letter) else {
                let hint = SETTINGS
                    .iter()
                    .find(|setting| {
                        setting.short == Some(letter.to_ascii_lowercase())
                            || setting.short == Some(letter.to_ascii_uppercase())
                    })
                    .and_then(|setting| setting.short)
                    .map(|near| format!(" (did you mean -{near}?)"))
                    .unwrap_or_default();
                return Err(self.fail(&flag, format!("unknown option{hint}")));
            };
            let rest = &text[at + letter.len_utf8()..];
            let takes_value = matches!(
                setting.kind,
                Kind::Value | Kind::List | Kind::Ignored { takes_value: true }
            );
            if takes_value {
                let inline =
                    (!rest.is_empty()).then(|| rest.strip_prefix('=').unwrap_or(rest).to_owned());
                return self.take(setting, &flag, inline, args, index);
            }
            if let Some(value) = rest.strip_prefix('=') {
                return self.take(setting, &flag, Some(value.to_owned()), args, index);
            }
            self.take(setting, &flag, None, args, index)?;
        }
        Ok(())
    }

    fn take(
        &mut self,
        setting: &'static Setting,
        flag: &str,
        inline: Option<String>,
        args: &[String],
        index: &mut usize,
    ) -> Result<(), ConfigError> {
        let value = match setting.kind {
            Kind::Bool | Kind::Ignored { takes_value: false } => {
                inline.unwrap_or_else(|| "true".to_owned())
            }
            Kind::OptionalValue(bare) => inline.unwrap_or_else(|| bare.to_owned()),
            Kind::Value | Kind::List | Kind::Ignored { takes_value: true } => match inline {
                Some(value) => value,
                None => {
                    let Some(value) = args.get(*index) else {
                        return Err(self.fail(flag, format!("needs a value ({})", setting.metavar)));
                    };
                    *index += 1;
                    value.clone()
                }
            },
        };
        let source = self.source(flag);
        if let Kind::Ignored { .. } = setting.kind {
            self.layer.ignored.push(source.clone());
        }
        // uWSGI's `-w module[:callable]` shares gunicorn's `-w N`: a number
        // is a worker count, anything else an application.
        if flag == "-w" && value.trim().parse::<u64>().is_err() {
            let wsgi = settings::by_name("wsgi_app").expect("in the table");
            self.layer.push(wsgi, value, source);
            return Ok(());
        }
        self.layer.push(setting, value, source);
        Ok(())
    }
}

/// Splits `text` into words as a POSIX shell would (quotes and
/// backslashes; no expansions), for `GUNICORN_CMD_ARGS`.
///
/// # Errors
/// An unterminated quote.
pub fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Layer, String> {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        match parse_command_line(&args).map_err(|error| error.to_string())? {
            Command::Run(layer) => Ok(layer),
            other => Err(format!("{other:?}")),
        }
    }

    fn get(layer: &Layer, name: &str) -> Vec<(String, String)> {
        layer
            .all(name)
            .map(|entry| (entry.value.clone(), entry.source.to_string()))
            .collect()
    }

    #[test]
    fn gunicorn_forms() {
        let layer = run(&[
            "-b",
            "127.0.0.1:1",
            "--bind=unix:/x",
            "-w4",
            "--threads",
            "8",
            "-D",
            "app:x",
        ])
        .unwrap();
        assert_eq!(
            get(&layer, "bind"),
            [
                ("127.0.0.1:1".into(), "-b".into()),
                ("unix:/x".into(), "--bind".into())
            ]
        );
        assert_eq!(get(&layer, "workers"), [("4".into(), "-w".into())]);
        assert_eq!(get(&layer, "threads"), [("8".into(), "--threads".into())]);
        assert_eq!(get(&layer, "daemon"), [("true".into(), "-D".into())]);
        assert_eq!(get(&layer, "wsgi_app"), [("app:x".into(), "APP".into())]);
    }

    #[test]
    fn uwsgi_forms() {
        let layer = run(&[
            "--socket",
            ":3031",
            "--protocol=http",
            "-w",
            "wsgi",
            "--master",
            "--processes",
            "5",
            "--enable-threads",
            "-M",
        ])
        .unwrap();
        assert_eq!(get(&layer, "socket"), [(":3031".into(), "--socket".into())]);
        assert_eq!(
            get(&layer, "protocol"),
            [("http".into(), "--protocol".into())]
        );
        assert_eq!(get(&layer, "wsgi_app"), [("wsgi".into(), "-w".into())]);
        assert_eq!(get(&layer, "workers"), [("5".into(), "--processes".into())]);
        assert_eq!(get(&layer, "master").len(), 2);
        assert_eq!(layer.ignored.len(), 1);
    }

    #[test]
    fn negations_and_optional_values() {
        let layer = run(&["--no-master", "--chmod-socket", "x"]).unwrap();
        assert_eq!(
            get(&layer, "master"),
            [("false".into(), "--no-master".into())]
        );
        assert_eq!(
            get(&layer, "chmod_socket"),
            [("666".into(), "--chmod-socket".into())]
        );
        assert_eq!(get(&layer, "wsgi_app"), [("x".into(), "APP".into())]);
    }

    #[test]
    fn errors_name_the_flag() {
        let error = run(&["--wokers", "2"]).unwrap_err();
        assert_eq!(error, "--wokers: unknown option (did you mean --workers?)");
        assert_eq!(
            run(&["--bind"]).unwrap_err(),
            "--bind: needs a value (ADDRESS)"
        );
        assert!(run(&["-Z"]).unwrap_err().starts_with("-Z: unknown option"));
        assert!(run(&["a", "b"]).unwrap_err().contains("two applications"));
        assert!(run(&["--no-master=1"])
            .unwrap_err()
            .contains("takes no value"));
    }

    #[test]
    fn env_args() {
        let layer = parse_env_args(
            "GUNICORN_CMD_ARGS",
            "--bind=127.0.0.1:9 --workers 3 --name 'my app'",
        )
        .unwrap();
        assert_eq!(
            get(&layer, "workers"),
            [("3".into(), "GUNICORN_CMD_ARGS --workers".into())]
        );
        assert_eq!(get(&layer, "proc_name")[0].0, "my app");
        assert!(parse_env_args("GUNICORN_CMD_ARGS", "app:x").is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_shell_words(r#"a 'b c' "d \"e\"" f\ g"#).unwrap(),
            ["a", "b c", "d \"e\"", "f g"]
        );
        assert!(split_shell_words("'open").is_err());
    }
}
