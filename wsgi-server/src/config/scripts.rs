//! Sources that need the interpreter to read them: `gunicorn.conf.py`
//! (executed) and a PasteDeploy `[server:NAME]` section (read with
//! PasteDeploy's own loader). The runtime reads them through
//! [`ScriptHost`]; this module maps what it found onto settings.

use std::path::Path;
use std::sync::Arc;

use super::layer::{Layer, Rank, Source};
use super::model::PythonSettings;
use super::settings::{self, Kind};
use super::ConfigError;

/// A value found in a configuration script, free of the runtime's types.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptValue {
    /// `None`: the setting keeps its default.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list or tuple.
    List(Vec<ScriptValue>),
    /// A callable (a server hook).
    Callable,
    /// Anything else, as its `repr`.
    Other(String),
}

/// One module-level name of a configuration script.
#[derive(Debug, Clone)]
pub struct ScriptEntry {
    /// The name.
    pub name: String,
    /// Its value.
    pub value: ScriptValue,
    /// The line it is set on, when known.
    pub line: Option<u32>,
}

/// A PasteDeploy `[server:NAME]` section as read by PasteDeploy.
#[derive(Debug, Clone)]
pub struct PasteServerSection {
    /// Its `use =` (`egg:waitress#main`), not imported.
    pub use_: Option<String>,
    /// Its other keys, interpolated, with their lines.
    pub settings: Vec<(String, String, Option<u32>)>,
}

/// What reads the script sources: the runtime (CPython), started in the
/// master on first use with the interpreter settings known so far.
pub trait ScriptHost {
    /// Runs a `gunicorn.conf.py` (or `python:module`) and returns its
    /// public names; hooks among them are the host's to keep.
    ///
    /// # Errors
    /// One line: the file (and line) and the problem.
    fn gunicorn_config(
        &mut self,
        spec: &str,
        python: &PythonSettings,
    ) -> Result<Vec<ScriptEntry>, String>;

    /// Reads `[server:NAME]` of a PasteDeploy ini; `Ok(None)` if the file
    /// has no such section.
    ///
    /// # Errors
    /// One line: the file and the problem.
    fn paste_server(
        &mut self,
        path: &Path,
        name: &str,
        global_conf: &[(String, String)],
        python: &PythonSettings,
    ) -> Result<Option<PasteServerSection>, String>;
}

/// A host for builds without a runtime that reads scripts.
#[derive(Debug, Default)]
pub struct NoScripts;

impl ScriptHost for NoScripts {
    fn gunicorn_config(
        &mut self,
        spec: &str,
        _: &PythonSettings,
    ) -> Result<Vec<ScriptEntry>, String> {
        Err(format!(
            "{spec}: this build has no Python to run configuration files"
        ))
    }

    fn paste_server(
        &mut self,
        path: &Path,
        _: &str,
        _: &[(String, String)],
        _: &PythonSettings,
    ) -> Result<Option<PasteServerSection>, String> {
        Err(format!(
            "{}: this build has no Python to read PasteDeploy files",
            path.display()
        ))
    }
}

/// gunicorn's server hooks: callables with these names are hooks, not settings.
pub const HOOK_NAMES: &[&str] = &[
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
];

/// gunicorn settings we do not implement (yet): named in one warning, so
/// a copied file is not silently half-applied.
const GUNICORN_UNSUPPORTED: &[&str] = &[
    "certfile",
    "keyfile",
    "ca_certs",
    "cert_reqs",
    "ssl_version",
    "ciphers",
    "do_handshake_on_connect",
    "suppress_ragged_eofs",
    "logconfig_dict",
    "logger_class",
    "syslog",
    "syslog_addr",
    "syslog_facility",
    "syslog_prefix",
    "enable_stdio_inheritance",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "disable_redirect_access_to_syslog",
    "secure_scheme_headers",
    "sendfile",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "tmp_upload_dir",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "header_map",
    "forwarder_headers",
    "pythonpath_insert",
];

/// Maps a gunicorn config file's names onto settings (file rank).
///
/// # Errors
/// A value of the wrong shape, naming the file, line and name.
pub fn gunicorn_layer(display: &str, entries: &[ScriptEntry]) -> Result<Layer, ConfigError> {
    let path = Arc::<str>::from(display);
    let mut layer = Layer::new(Rank::File);
    for entry in entries {
        let source = Source::File {
            path: path.clone(),
            line: entry.line,
            key: entry.name.clone(),
        };
        if HOOK_NAMES.contains(&entry.name.as_str()) {
            if !matches!(entry.value, ScriptValue::Callable | ScriptValue::None) {
                return Err(ConfigError::new(format!(
                    "{source}: a server hook must be a function"
                )));
            }
            continue;
        }
        let Some(setting) = settings::by_py_name(&entry.name) else {
            if GUNICORN_UNSUPPORTED.contains(&entry.name.as_str()) {
                layer.unknown.push(source);
            }
            // Other names are the file's own variables (gunicorn ignores them).
            continue;
        };
        push_script_value(&mut layer, setting, &entry.value, &source)?;
    }
    Ok(layer)
}

fn push_script_value(
    layer: &mut Layer,
    setting: &'static settings::Setting,
    value: &ScriptValue,
    source: &Source,
) -> Result<(), ConfigError> {
    let text = |value: &ScriptValue| -> Result<Option<String>, ConfigError> {
        Ok(match value {
            ScriptValue::None => None,
            ScriptValue::Bool(flag) => Some(flag.to_string()),
            ScriptValue::Int(number) => Some(number.to_string()),
            ScriptValue::Float(number) => Some(number.to_string()),
            ScriptValue::Str(text) => Some(text.clone()),
            ScriptValue::List(_) => {
                return Err(ConfigError::new(format!(
                    "{source}: expected one value, not a list"
                )))
            }
            ScriptValue::Callable => {
                return Err(ConfigError::new(format!(
                    "{source}: expected a value, not a function"
                )))
            }
            ScriptValue::Other(repr) => {
                return Err(ConfigError::new(format!(
                    "{source}: {repr} is not a string, number or boolean"
                )))
            }
        })
    };
    match (value, setting.kind) {
        (ScriptValue::List(items), Kind::List) => {
            for item in items {
                if let Some(item) = text(item)? {
                    layer.push(setting, item, source.clone());
                }
            }
        }
        (value, _) => {
            if let Some(value) = text(value)? {
                if let Kind::Ignored { .. } = setting.kind {
                    layer.ignored.push(source.clone());
                }
                layer.push(setting, value, source.clone());
            }
        }
    }
    Ok(())
}

/// Maps a PasteDeploy `[server:NAME]` section onto settings (the lowest
/// rank), whatever server its `use` names: the keys of Paste's `http`,
/// PasteScript's `cherrypy`, waitress, gunicorn and pyruvate.
///
/// # Errors
/// A malformed address, naming the file, line and key.
pub fn paste_layer(path: &str, section: &PasteServerSection) -> Result<Layer, ConfigError> {
    let file = Arc::<str>::from(path);
    let mut layer = Layer::new(Rank::PasteServer);
    let source = |key: &str, line: Option<u32>| Source::File {
        path: file.clone(),
        line,
        key: key.to_owned(),
    };
    let runner = section.use_.as_deref().unwrap_or("").to_ascii_lowercase();
    let ours = runner.contains("wsgi-server") || runner.contains("wsgi_server");
    let gunicorn_like = runner.contains("gunicorn") || ours;
    let find = |key: &str| {
        section
            .settings
            .iter()
            .find(|(name, _, _)| name == key)
            .map(|(_, value, line)| (value.trim(), *line))
    };
    let host = find("host");
    let port = find("port");
    if host.is_some() || port.is_some() {
        let (host_text, host_line) = host.unwrap_or(("127.0.0.1", None));
        let (port_text, port_line) = port.unwrap_or(("8080", None));
        let bind = settings::by_name("bind").expect("in the table");
        let origin = if host.is_some() {
            source("host", host_line)
        } else {
            source("port", port_line)
        };
        if host_text.contains('/') {
            // A host that is a path: a unix socket (PasteScript, uWSGI habit).
            layer.push(bind, format!("unix:{host_text}"), origin);
        } else {
            let host_text = match host_text {
                "*" | "" => "0.0.0.0",
                other => other,
            };
            if port_text.parse::<u16>().is_err() {
                return Err(ConfigError::new(format!(
                    "{}: {port_text:?} is not a port number",
                    source("port", port_line)
                )));
            }
            let address = if host_text.contains(':') && !host_text.starts_with('[') {
                format!("[{host_text}]:{port_text}")
            } else {
                format!("{host_text}:{port_text}")
            };
            layer.push(bind, address, origin);
        }
    }
    for (key, value, line) in &section.settings {
        let origin = source(key, *line);
        let name = match key.as_str() {
            "host" | "port" | "use_threadpool" => continue,
            "listen" if !gunicorn_like => {
                // waitress: `listen = host:port [host:port ...]`, `*:port`.
                let bind = settings::by_name("bind").expect("in the table");
                for address in value.split_whitespace() {
                    let address = address
                        .strip_prefix("*:")
                        .map_or_else(|| address.to_owned(), |port| format!("0.0.0.0:{port}"));
                    layer.push(bind, address, origin.clone());
                }
                continue;
            }
            "unix_socket" => {
                let bind = settings::by_name("bind").expect("in the table");
                layer.push(bind, format!("unix:{}", value.trim()), origin);
                continue;
            }
            "socket" if runner.contains("pyruvate") => "bind",
            "unix_socket_perms" => "chmod_socket",
            "threadpool_workers" | "numthreads" | "threads" => "threads",
            "request_queue_size" | "backlog" => "backlog",
            "url_prefix" => "script_name",
            "trusted_proxy" => "forwarded_allow_ips",
            "timeout" if gunicorn_like => "timeout",
            "timeout" | "socket_timeout" | "channel_timeout" => {
                // A connection's idle timeout in Paste, CherryPy and waitress.
                for name in ["header_timeout", "body_timeout"] {
                    let setting = settings::by_name(name).expect("in the table");
                    layer.push(setting, value.trim(), origin.clone());
                }
                continue;
            }
            other => match settings::by_py_name(other)
                .or_else(|| settings::by_flag(&other.replace('_', "-")).map(|found| found.setting))
            {
                Some(setting) if gunicorn_like || other == "workers" => setting.name,
                // Our own runner's section is our namespace: a typo there
                // is an error, not another server's option.
                None if ours => {
                    let hint = settings::closest(&other.replace('_', "-"), settings::all_flags())
                        .map(|near| format!(" (did you mean {}?)", near.replace('-', "_")))
                        .unwrap_or_default();
                    return Err(ConfigError::new(format!("{origin}: unknown option{hint}")));
                }
                _ => {
                    layer.unknown.push(origin);
                    continue;
                }
            },
        };
        let setting = settings::by_name(name).expect("in the table");
        push_script_value(
            &mut layer,
            setting,
            &ScriptValue::Str(value.clone()),
            &origin,
        )?;
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(use_: &str, pairs: &[(&str, &str)]) -> PasteServerSection {
        PasteServerSection {
            use_: Some(use_.to_owned()),
            settings: pairs
                .iter()
                .enumerate()
                .map(|(line, (key, value))| {
                    (
                        (*key).to_owned(),
                        (*value).to_owned(),
                        Some(line as u32 + 2),
                    )
                })
                .collect(),
        }
    }

    fn values(layer: &Layer, name: &str) -> Vec<String> {
        layer.all(name).map(|entry| entry.value.clone()).collect()
    }

    #[test]
    fn paste_http() {
        let layer = paste_layer(
            "dev.ini",
            &section(
                "egg:Paste#http",
                &[
                    ("host", "127.0.0.1"),
                    ("port", "6543"),
                    ("use_threadpool", "True"),
                    ("threadpool_workers", "10"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(values(&layer, "bind"), ["127.0.0.1:6543"]);
        assert_eq!(values(&layer, "threads"), ["10"]);
        assert!(layer.unknown.is_empty());
    }

    #[test]
    fn cherrypy_unix_socket() {
        let layer = paste_layer(
            "site.ini",
            &section(
                "egg:PasteScript#cherrypy",
                &[
                    ("host", "/srv/site-python.sock"),
                    ("numthreads", "10"),
                    ("timeout", "180"),
                    ("request_queue_size", "200"),
                    ("server_name", "x"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(values(&layer, "bind"), ["unix:/srv/site-python.sock"]);
        assert_eq!(values(&layer, "threads"), ["10"]);
        assert_eq!(values(&layer, "backlog"), ["200"]);
        assert_eq!(values(&layer, "header_timeout"), ["180"]);
        assert_eq!(layer.unknown.len(), 1);
        assert_eq!(layer.unknown[0].to_string(), "site.ini:6: server_name");
    }

    #[test]
    fn waitress_and_gunicorn() {
        let layer = paste_layer(
            "w.ini",
            &section(
                "egg:waitress#main",
                &[("listen", "127.0.0.1:1 *:2"), ("threads", "8")],
            ),
        )
        .unwrap();
        assert_eq!(values(&layer, "bind"), ["127.0.0.1:1", "0.0.0.0:2"]);
        let layer = paste_layer(
            "g.ini",
            &section(
                "egg:gunicorn#main",
                &[
                    ("bind", "127.0.0.1:3"),
                    ("workers", "2"),
                    ("timeout", "9"),
                    ("max_requests", "5"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(values(&layer, "bind"), ["127.0.0.1:3"]);
        assert_eq!(values(&layer, "timeout"), ["9"]);
        assert_eq!(values(&layer, "max_requests"), ["5"]);
        let error =
            paste_layer("p.ini", &section("egg:Paste#http", &[("port", "eighty")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.ini:2: port: \"eighty\" is not a port number"
        );
    }

    #[test]
    fn gunicorn_file() {
        let entries = vec![
            ScriptEntry {
                name: "bind".into(),
                value: ScriptValue::List(vec![
                    ScriptValue::Str("127.0.0.1:1".into()),
                    ScriptValue::Str("unix:/x".into()),
                ]),
                line: Some(1),
            },
            ScriptEntry {
                name: "workers".into(),
                value: ScriptValue::Int(3),
                line: Some(2),
            },
            ScriptEntry {
                name: "preload_app".into(),
                value: ScriptValue::Bool(true),
                line: Some(3),
            },
            ScriptEntry {
                name: "post_fork".into(),
                value: ScriptValue::Callable,
                line: Some(4),
            },
            ScriptEntry {
                name: "statsd_host".into(),
                value: ScriptValue::Str("-".into()),
                line: Some(5),
            },
            ScriptEntry {
                name: "my_helper".into(),
                value: ScriptValue::Int(1),
                line: Some(6),
            },
        ];
        let layer = gunicorn_layer("gunicorn.conf.py", &entries).unwrap();
        assert_eq!(values(&layer, "bind"), ["127.0.0.1:1", "unix:/x"]);
        assert_eq!(values(&layer, "workers"), ["3"]);
        assert_eq!(values(&layer, "preload_app"), ["true"]);
        assert_eq!(layer.unknown.len(), 1);
        let bad = vec![ScriptEntry {
            name: "workers".into(),
            value: ScriptValue::List(vec![]),
            line: Some(7),
        }];
        assert_eq!(
            gunicorn_layer("g.py", &bad).unwrap_err().to_string(),
            "g.py:7: workers: expected one value, not a list"
        );
    }
}
