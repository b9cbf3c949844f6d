//! The layered configuration model.
//!
//! Each source yields a partial [`Layer`]: every value optional, each
//! remembering where it came from. Precedence, lowest first:
//!
//! | rank | sources |
//! |---|---|
//! | default | the table in [`settings`] |
//! | [`Rank::PasteServer`] | a PasteDeploy `[server:NAME]` section ([`scripts::paste_layer`]) |
//! | [`Rank::File`] | uWSGI `--ini`/`--json`/`--ini-paste` files ([`uwsgi`]), `gunicorn.conf.py` ([`scripts::gunicorn_layer`]) |
//! | [`Rank::Env`] | `GUNICORN_CMD_ARGS`, `UWSGI_*`, `WEB_CONCURRENCY`, `PORT`, `FORWARDED_ALLOW_IPS` ([`env`](mod@env)) |
//! | [`Rank::CommandLine`] | flags and the positional APP ([`cli`]) |
//!
//! [`load`] reads every source, [`resolve()`] is the one step that turns the
//! merge into a [`ServerConfig`]. A new source is a function returning a
//! [`Layer`] of the right rank, called from [`load`]; nothing else changes.

pub mod cli;
pub mod env;
pub mod json;
pub mod layer;
pub mod model;
pub mod print;
pub mod resolve;
pub mod scripts;
pub mod settings;
pub mod uwsgi;

use std::fmt;
use std::path::Path;

pub use layer::{Layer, Merged, Rank, Source};
pub use model::{
    peer_in_list, AppSource, BodyBuffering, ProcessSettings, PythonSettings, ServerConfig, Timeouts,
};
pub use resolve::resolve;
pub use scripts::{NoScripts, PasteServerSection, ScriptEntry, ScriptHost, ScriptValue};

/// A configuration error: one line naming the source, the key and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

/// What the process is asked to do.
#[derive(Debug)]
pub enum Outcome {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// Serve, check or print.
    Run(Box<Loaded>),
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The resolved configuration.
    pub config: ServerConfig,
    /// Every layer, for `--print-config`.
    pub merged: Merged,
    /// `--print-config`.
    pub print: bool,
    /// `--check-config`.
    pub check: bool,
    /// Lines to log once the log is set up: unknown and ignored options.
    pub notices: Vec<String>,
}

/// Reads every source: the command line `args` (without the program name),
/// the environment `vars`, the files they name, and the scripts through
/// `host`.
///
/// # Errors
/// The first problem, as one line naming its source.
pub fn load(
    args: &[String],
    vars: &[(String, String)],
    host: &mut dyn ScriptHost,
) -> Result<Outcome, ConfigError> {
    let command_line = match cli::parse_command_line(args)? {
        cli::Command::Help => return Ok(Outcome::Help),
        cli::Command::Version => return Ok(Outcome::Version),
        cli::Command::Run(layer) => layer,
    };
    let mut layers = env::read(vars)?;
    layers.push(command_line);
    // Files named by the command line and the environment.
    let named = Merged::new(layers.clone());
    for entry in named.values("ini") {
        layers.push(
            uwsgi::read(&entry.value, uwsgi::Format::Ini)
                .map_err(|error| named_by(&entry.source, error))?,
        );
    }
    for entry in named.values("json") {
        layers.push(
            uwsgi::read(&entry.value, uwsgi::Format::Json)
                .map_err(|error| named_by(&entry.source, error))?,
        );
    }
    let mut paste_logging = None;
    for name in ["ini_paste", "ini_paste_logged"] {
        if let Some(entry) = named.value(name) {
            let (file, _) = resolve::split_paste_uri(&entry.value);
            layers.push(
                uwsgi::read(file, uwsgi::Format::PasteIni)
                    .map_err(|error| named_by(&entry.source, error))?,
            );
            if name == "ini_paste_logged" {
                paste_logging = Some(file.to_owned());
            }
        }
    }
    // gunicorn.conf.py: given, or ./gunicorn.conf.py as gunicorn does.
    let so_far = Merged::new(layers.clone());
    let script = match so_far.value("config") {
        Some(entry) => Some(entry.value.clone()),
        None => Path::new("gunicorn.conf.py")
            .is_file()
            .then(|| "gunicorn.conf.py".to_owned()),
    };
    if let Some(spec) = script {
        let python = python_so_far(&so_far)?;
        let entries = host
            .gunicorn_config(&spec, &python)
            .map_err(ConfigError::new)?;
        layers.push(scripts::gunicorn_layer(&spec, &entries)?);
    }
    // A PasteDeploy app: its [server:NAME] section, read by PasteDeploy.
    let so_far = Merged::new(layers.clone());
    if let Some(entry) = so_far.value("paste") {
        let (file, hash_name) = resolve::split_paste_uri(&entry.value);
        let explicit = so_far.value("server_name").map(|entry| entry.value.clone());
        let name = explicit
            .clone()
            .or(hash_name)
            .unwrap_or_else(|| "main".to_owned());
        let python = python_so_far(&so_far)?;
        let global_conf: Vec<(String, String)> = so_far
            .values("raw_paste_global_conf")
            .iter()
            .filter_map(|entry| entry.value.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        match host
            .paste_server(Path::new(file), &name, &global_conf, &python)
            .map_err(ConfigError::new)?
        {
            Some(section) => layers.push(scripts::paste_layer(file, &section)?),
            None if explicit.is_some() => {
                return Err(ConfigError::new(format!(
                    "{file}: no [server:{name}] section (named by --server-name)"
                )))
            }
            None => {}
        }
        paste_logging = Some(file.to_owned());
    }
    let merged = Merged::new(layers);
    let mut config = resolve(&merged)?;
    config.paste_logging = paste_logging;
    let print = bool_of(&merged, "print_config")?;
    let check = bool_of(&merged, "check_config")?;
    let notices = notices(&merged);
    Ok(Outcome::Run(Box::new(Loaded {
        config,
        merged,
        print,
        check,
        notices,
    })))
}

fn named_by(source: &Source, error: ConfigError) -> ConfigError {
    match source {
        // A file error already names the file; say which flag named it
        // only when that adds something (an include, an env variable).
        Source::Env(variable) => ConfigError::new(format!("{variable}: {error}")),
        _ => error,
    }
}

fn bool_of(merged: &Merged, name: &str) -> Result<bool, ConfigError> {
    match merged.value(name) {
        None => Ok(false),
        Some(entry) => resolve::parse_bool(&entry.value).ok_or_else(|| {
            ConfigError::new(format!(
                "{}: {:?} is not a boolean",
                entry.source, entry.value
            ))
        }),
    }
}

/// The interpreter settings the layers read so far give (to start Python
/// for the script sources).
fn python_so_far(merged: &Merged) -> Result<PythonSettings, ConfigError> {
    let path = |name: &str| {
        merged
            .value(name)
            .map(|entry| std::path::PathBuf::from(entry.value.trim()))
    };
    Ok(PythonSettings {
        virtualenv: path("virtualenv").or_else(|| {
            std::env::var_os("VIRTUAL_ENV")
                .filter(|value| !value.is_empty())
                .map(std::path::PathBuf::from)
        }),
        chdir: path("chdir"),
        pythonpath: merged
            .values("pythonpath")
            .iter()
            .flat_map(|entry| entry.value.split(','))
            .map(str::trim)
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
            .collect(),
        chdir2: None,
        raw_env: Vec::new(),
    })
}

/// One warning for unknown options, one info line for ignored ones.
fn notices(merged: &Merged) -> Vec<String> {
    let mut lines = Vec::new();
    let unknown: Vec<String> = merged
        .layers()
        .iter()
        .flat_map(|layer| layer.unknown.iter().map(ToString::to_string))
        .collect();
    if !unknown.is_empty() {
        lines.push(format!(
            "W:options with no meaning here, ignored: {}",
            unknown.join(", ")
        ));
    }
    let ignored: Vec<String> = merged
        .layers()
        .iter()
        .flat_map(|layer| layer.ignored.iter().map(ToString::to_string))
        .collect();
    if !ignored.is_empty() {
        lines.push(format!(
            "I:accepted without effect (see --help): {}",
            ignored.join(", ")
        ));
    }
    lines
}
