//! `--help` and `--print-config`, both drawn from the settings table.

use std::fmt::Write as _;

use super::layer::Merged;
use super::settings::{Group, Kind, SETTINGS};

/// `--help`.
pub fn help() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "wsgi-server {}: a WSGI application server\n\n\
         Usage: wsgi-server [OPTIONS] [APP]\n       \
         wsgi-server --ini FILE | --json FILE | --paste FILE.ini | -c gunicorn.conf.py\n\n\
         gunicorn's flags, uWSGI's long options (and their ini/json keys) and PasteDeploy\n\
         files all work. Precedence, lowest first: defaults < PasteDeploy [server:NAME] <\n\
         uWSGI file or gunicorn.conf.py < environment (GUNICORN_CMD_ARGS, UWSGI_*,\n\
         WEB_CONCURRENCY, PORT, FORWARDED_ALLOW_IPS) < command line.",
        env!("CARGO_PKG_VERSION")
    );
    let mut group = None;
    for setting in SETTINGS {
        if group != Some(setting.group) {
            group = Some(setting.group);
            let _ = writeln!(out, "\n{}:", setting.group.title());
        }
        let mut names = Vec::new();
        if let Some(short) = setting.short {
            names.push(format!("-{short}"));
        }
        names.extend(setting.flags.iter().map(|flag| format!("--{flag}")));
        names.extend(
            setting
                .uwsgi
                .iter()
                .filter(|key| !setting.flags.contains(key))
                .map(|key| format!("--{key}")),
        );
        names.extend(setting.negations.iter().map(|flag| format!("--{flag}")));
        let mut line = names.join(", ");
        match setting.kind {
            Kind::Value | Kind::List | Kind::Ignored { takes_value: true } => {
                let _ = write!(line, " {}", setting.metavar);
            }
            Kind::OptionalValue(_) => {
                let _ = write!(line, " [{}]", setting.metavar);
            }
            Kind::Bool | Kind::Ignored { takes_value: false } => {}
        }
        let mut help = setting.help.to_owned();
        if !setting.default.is_empty() && setting.group != Group::Compat {
            let _ = write!(help, " [default: {}]", setting.default);
        }
        let _ = writeln!(out, "  {line}\n      {help}");
    }
    let _ = writeln!(
        out,
        "\n  -h, --help     Print this help\n  -v, --version  Print the version\n\n\
         Exit status: 0 clean stop, 1 bad usage or configuration, 4 the application could not be loaded."
    );
    out
}

/// `--print-config`: every setting, its effective value and its source.
pub fn print_config(merged: &Merged) -> String {
    let mut out = String::from("# setting = value  # where it came from\n");
    for setting in SETTINGS {
        if matches!(setting.kind, Kind::Ignored { .. })
            || setting.group == Group::Files && setting.name != "config"
        {
            continue;
        }
        let values = merged.values(setting.name);
        if values.is_empty() {
            let listening_elsewhere = setting.name == "bind"
                && ["socket", "http_socket"]
                    .iter()
                    .any(|other| !merged.values(other).is_empty());
            let default = match setting.default {
                _ if listening_elsewhere => "(none)",
                "" => "(none)",
                default => default,
            };
            let _ = writeln!(out, "{} = {default}  # default", setting.name);
            continue;
        }
        for entry in values {
            let _ = writeln!(
                out,
                "{} = {}  # {}",
                setting.name, entry.value, entry.source
            );
        }
    }
    out
}
