//! The one step that turns merged layers into a [`ServerConfig`]: defaults,
//! derivations (queue size from threads, `0` limits, the head size that
//! must hold the request line, `$SCRIPT_NAME` and `$VIRTUAL_ENV`) and every
//! check, whatever the source. Errors name the source of the bad value.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::layer::{Entry, Merged, Source};
use super::model::{
    AppSource, BodyBuffering, ProcessSettings, PythonSettings, ServerConfig, StaticSettings,
    Timeouts,
};
use super::ConfigError;
use crate::listener::{BindSpec, Protocol};
use crate::log::Level;
use wsgi_core::proxy::AllowList;

/// The most request header fields `--limit-request-fields 0` allows
/// (gunicorn's own ceiling).
pub const MAX_REQUEST_FIELDS: usize = 32768;

/// Resolves the merged settings.
///
/// # Errors
/// The first bad value, naming where it came from.
pub fn resolve(merged: &Merged) -> Result<ServerConfig, ConfigError> {
    let get = Getter { merged };
    let app = app_source(&get)?;
    let binds = listeners(&get)?;
    let mut config = ServerConfig::new(app, binds);
    config.unix_socket_mode = get
        .text("chmod_socket")
        .map(|(mode, entry)| {
            u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                .ok()
                .filter(|mode| *mode <= 0o7777)
                .ok_or_else(|| get.bad(entry, "is not an octal mode"))
        })
        .transpose()?;
    config.threads = get.count("threads", 1)?.unwrap_or(4);
    config.queue_size = (config.threads * 16).max(64);
    config.backlog = match get.count("backlog", 1)? {
        Some(backlog) => i32::try_from(backlog).unwrap_or(i32::MAX),
        None => 2048,
    };
    let defaults = Timeouts::default();
    config.timeouts = Timeouts {
        keep_alive: get.seconds("keepalive")?.unwrap_or(defaults.keep_alive),
        header: get.seconds("header_timeout")?.unwrap_or(defaults.header),
        body: get.seconds("body_timeout")?.unwrap_or(defaults.body),
        graceful: get
            .seconds("graceful_timeout")?
            .unwrap_or(defaults.graceful),
    };
    limits(&get, &mut config)?;
    let script_name = match get.text("script_name") {
        Some((name, _)) => name.to_owned(),
        None => std::env::var("SCRIPT_NAME").unwrap_or_default(),
    };
    config.environ.script_name = Bytes::from(script_name);
    config.environ.allow_underscore_headers =
        get.flag("allow_underscore_headers")?.unwrap_or(false);
    if let Some((ips, entry)) = get.text("forwarded_allow_ips") {
        config.forwarded_allow_ips =
            AllowList::parse(ips).map_err(|problem| get.at(entry, &problem))?;
    }
    if let Some((ips, entry)) = get.text("uwsgi_allow_from") {
        config.uwsgi_allow_from =
            AllowList::parse(ips).map_err(|problem| get.at(entry, &problem))?;
    }
    config.environ.trusted_proxies = config.forwarded_allow_ips.clone();
    if let Some((mode, entry)) = get.text("proxy_protocol") {
        config.proxy_protocol.0 = crate::net::proxy_protocol::Mode::parse(mode)
            .ok_or_else(|| get.bad(entry, "is not a PROXY protocol mode (off, v1, v2, auto)"))?;
    }
    if let Some((ips, entry)) = get.text("proxy_allow_ips") {
        config.proxy_protocol.1 =
            AllowList::parse(ips).map_err(|problem| get.at(entry, &problem))?;
    }
    config.environ.forwarded_remote_addr = get.flag("forwarded_remote_addr")?.unwrap_or(false);
    config.python = python(&get)?;
    config.process = process(&get)?;
    config.error_log = get.text("errorlog").map(|(path, _)| PathBuf::from(path));
    if let Some((path, _)) = get.text("daemonize") {
        // uWSGI's --daemonize LOGFILE: detach, and log there.
        config.process.daemon = true;
        config.error_log = Some(PathBuf::from(path));
    }
    config.error_log = config.error_log.filter(|path| path.as_os_str() != "-");
    config.disable_request_log = get.flag("disable_logging")?.unwrap_or(false);
    if let Some((path, _)) = get.text("accesslog") {
        let format = match get.text("access_log_format") {
            Some((text, entry)) if text.trim() != "combined" => {
                super::access_format::Format::parse(text)
                    .map_err(|problem| get.at(entry, &problem))?
            }
            _ => super::access_format::Format::parse(super::access_format::COMBINED)
                .expect("the default parses"),
        };
        if !config.disable_request_log {
            config.access_log = Some(super::model::AccessLogSettings {
                path: (path.trim() != "-").then(|| PathBuf::from(path.trim())),
                format,
                x_forwarded_for: get.flag("log_x_forwarded_for")?.unwrap_or(false),
            });
        }
    }
    if let Some((path, entry)) = get.text("health_path") {
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(get.bad(entry, "must start with /"));
        }
        config.health = Some((path.to_owned(), get.flag("health_log")?.unwrap_or(false)));
    }
    config.drain_delay = get.seconds("drain_delay")?.unwrap_or_default();
    config.python_log_config = match (get.text("logconfig"), get.text("logconfig_json")) {
        (Some((path, _)), _) => Some((PathBuf::from(path.trim()), false)),
        (None, Some((path, _))) => Some((PathBuf::from(path.trim()), true)),
        (None, None) => None,
    };
    config.capture_output = get.flag("capture_output")?.unwrap_or(false);
    if let Some((level, entry)) = get.text("loglevel") {
        config.log_level = Level::parse(level).ok_or_else(|| {
            get.bad(
                entry,
                "is not a log level (debug, info, warning, error, critical)",
            )
        })?;
    }
    config.static_files = static_files(&get, config.python.chdir.as_deref())?;
    worker_class(&get)?;
    let endpoint = |name: &str| -> Result<Option<BindSpec>, ConfigError> {
        get.text(name)
            .map(|(address, entry)| {
                BindSpec::parse(address.trim(), Protocol::Http)
                    .map_err(|problem| get.at(entry, &problem))
            })
            .transpose()
    };
    config.metrics_bind = endpoint("metrics_bind")?;
    config.stats = endpoint("stats")?.map(|spec| (spec, false));
    if let Some((_, http)) = &mut config.stats {
        *http = get.flag("stats_http")?.unwrap_or(false);
    }
    Ok(config)
}

/// `--static-map PREFIX=DIR` (DIR relative to `--chdir`, else to the
/// current directory, and made absolute now: workers may change directory),
/// `--static-index NAME`, `--static-expires SECONDS`.
fn static_files(
    get: &Getter<'_>,
    chdir: Option<&std::path::Path>,
) -> Result<StaticSettings, ConfigError> {
    let base = std::env::current_dir()
        .map(|cwd| chdir.map_or_else(|| cwd.clone(), |dir| cwd.join(dir)))
        .unwrap_or_default();
    let mut settings = StaticSettings::default();
    for entry in get.list("static_map") {
        let Some((prefix, dir)) = entry.value.split_once('=') else {
            return Err(get.bad(entry, "is not PREFIX=DIR"));
        };
        let (prefix, dir) = (prefix.trim(), dir.trim());
        if !prefix.starts_with('/') || dir.is_empty() {
            return Err(get.bad(entry, "is not PREFIX=DIR with PREFIX starting with /"));
        }
        let path = base.join(dir);
        if !path.exists() {
            return Err(get.bad(
                entry,
                &format!("names {}, which does not exist", path.display()),
            ));
        }
        settings.maps.push((prefix.to_owned(), path));
    }
    for entry in get.list("static_index") {
        let name = entry.value.trim();
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.contains('\0')
        {
            return Err(get.bad(entry, "is not a file name"));
        }
        settings.index.push(name.to_owned());
    }
    settings.expires = get.number("static_expires")?.filter(|age| *age > 0);
    Ok(settings)
}

/// Typed reads of merged values, with errors naming their source.
struct Getter<'a> {
    merged: &'a Merged,
}

impl<'a> Getter<'a> {
    fn bad(&self, entry: &Entry, problem: &str) -> ConfigError {
        ConfigError::new(format!("{}: {:?} {problem}", entry.source, entry.value))
    }

    /// A problem that already quotes the value.
    fn at(&self, entry: &Entry, problem: &str) -> ConfigError {
        ConfigError::new(format!("{}: {problem}", entry.source))
    }

    fn text(&self, name: &str) -> Option<(&'a str, &'a Entry)> {
        self.merged
            .value(name)
            .map(|entry| (entry.value.as_str(), entry))
    }

    fn list(&self, name: &str) -> Vec<&'a Entry> {
        self.merged.values(name)
    }

    /// A whole number of at least `min`.
    fn count(&self, name: &str, min: u64) -> Result<Option<usize>, ConfigError> {
        let Some((text, entry)) = self.text(name) else {
            return Ok(None);
        };
        let number: u64 = text
            .trim()
            .parse()
            .map_err(|_| self.bad(entry, "is not a whole number"))?;
        if number < min {
            return Err(self.bad(entry, &format!("must be at least {min}")));
        }
        usize::try_from(number)
            .map(Some)
            .map_err(|_| self.bad(entry, "is too large"))
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        Ok(self.count(name, 0)?.map(|count| count as u64))
    }

    fn seconds(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        let Some((text, entry)) = self.text(name) else {
            return Ok(None);
        };
        let seconds: f64 = text
            .trim()
            .parse()
            .map_err(|_| self.bad(entry, "is not a number of seconds"))?;
        if !(seconds.is_finite() && (0.0..=1e9).contains(&seconds)) {
            return Err(self.bad(entry, "is not a number of seconds"));
        }
        Ok(Some(Duration::from_secs_f64(seconds)))
    }

    fn flag(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        let Some((text, entry)) = self.text(name) else {
            return Ok(None);
        };
        parse_bool(text)
            .map(Some)
            .ok_or_else(|| self.bad(entry, "is not a boolean (true/false, 1/0, yes/no, on/off)"))
    }
}

/// uWSGI's (and gunicorn's) boolean spellings.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" | "t" => Some(true),
        "false" | "0" | "no" | "off" | "n" | "f" | "" => Some(false),
        _ => None,
    }
}

fn app_source(get: &Getter<'_>) -> Result<AppSource, ConfigError> {
    let python = get.text("wsgi_app");
    let file = get.text("wsgi_file");
    let paste = get
        .text("paste")
        .or_else(|| get.text("ini_paste_logged"))
        .or_else(|| get.text("ini_paste"));
    let rust = get.text("rust_app");
    let given: Vec<&Entry> = [python, file, paste, rust]
        .into_iter()
        .flatten()
        .map(|(_, entry)| entry)
        .collect();
    if given.len() > 1 {
        return Err(ConfigError::new(format!(
            "{}: an application is already given by {}; give one",
            given[1].source, given[0].source
        )));
    }
    let callable = get.text("callable").map(|(name, _)| name.trim());
    if let Some((name, entry)) = rust {
        if wsgi_core::testing::app_by_name(name).is_none() {
            return Err(get.bad(
                entry,
                &format!(
                    "is not a built-in application (known: {})",
                    wsgi_core::testing::APP_NAMES.join(", ")
                ),
            ));
        }
        return Ok(AppSource::Rust(name.to_owned()));
    }
    if let Some((spec, _)) = python {
        let spec = spec.trim();
        return Ok(AppSource::Python(match callable {
            Some(callable) if !spec.contains(':') => format!("{spec}:{callable}"),
            _ => spec.to_owned(),
        }));
    }
    if let Some((path, _)) = file {
        return Ok(AppSource::Python(match callable {
            Some(callable) => format!("{}:{callable}", path.trim()),
            None => path.trim().to_owned(),
        }));
    }
    if let Some((uri, entry)) = paste {
        let (path, name) = split_paste_uri(uri);
        if path.is_empty() {
            return Err(get.bad(entry, "names no file"));
        }
        let absolute = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        let name = get
            .text("app_name")
            .map(|(name, _)| name.to_owned())
            .or(name)
            .unwrap_or_else(|| "main".to_owned());
        let mut global_conf = Vec::new();
        for entry in get.list("raw_paste_global_conf") {
            let Some((key, value)) = entry.value.split_once('=') else {
                return Err(get.bad(entry, "is not KEY=VALUE"));
            };
            global_conf.push((key.trim().to_owned(), value.trim().to_owned()));
        }
        return Ok(AppSource::Paste {
            uri: format!("config:{}", absolute.display()),
            name,
            global_conf,
        });
    }
    Err(ConfigError::new(
        "no application given: wsgi-server [OPTIONS] module:app (or --module, --wsgi-file, --paste, --ini FILE)",
    ))
}

/// `config:FILE#name` → (`FILE`, `name`).
pub fn split_paste_uri(uri: &str) -> (&str, Option<String>) {
    let uri = uri.trim();
    let uri = uri.strip_prefix("config:").unwrap_or(uri);
    match uri.split_once('#') {
        Some((path, name)) if !name.is_empty() => (path, Some(name.to_owned())),
        Some((path, _)) => (path, None),
        None => (uri, None),
    }
}

fn listeners(get: &Getter<'_>) -> Result<Vec<BindSpec>, ConfigError> {
    let protocol = match get.text("protocol") {
        None => None,
        Some((name, entry)) => Some(match name.trim().to_ascii_lowercase().as_str() {
            "http" | "http11" => Protocol::Http,
            "uwsgi" => Protocol::Uwsgi,
            _ => return Err(get.bad(entry, "is not a protocol (http, uwsgi)")),
        }),
    };
    let mut binds = Vec::new();
    for (name, default) in [
        ("bind", Protocol::Http),
        ("socket", Protocol::Uwsgi),
        ("http_socket", Protocol::Http),
    ] {
        let protocol = if name == "http_socket" {
            Protocol::Http
        } else {
            protocol.unwrap_or(default)
        };
        for entry in get.list(name) {
            // gunicorn: one --bind may hold several addresses, space-separated
            // in a config file's string.
            for address in entry.value.split_whitespace() {
                binds.push(
                    BindSpec::parse(address, protocol).map_err(|problem| {
                        ConfigError::new(format!("{}: {problem}", entry.source))
                    })?,
                );
            }
        }
    }
    if binds.is_empty() {
        binds.push(BindSpec::parse(
            "127.0.0.1:8000",
            protocol.unwrap_or(Protocol::Http),
        )?);
    }
    Ok(binds)
}

fn limits(get: &Getter<'_>, config: &mut ServerConfig) -> Result<(), ConfigError> {
    let limits = &mut config.http_limits;
    let hard_max = limits.max_head_size;
    if let Some(line) = get.count("limit_request_line", 0)? {
        // gunicorn: 0 means "no limit"; ours is the largest head we read.
        limits.max_request_line = if line == 0 { hard_max } else { line };
    }
    if let Some(fields) = get.count("limit_request_fields", 0)? {
        limits.max_headers = if fields == 0 {
            MAX_REQUEST_FIELDS
        } else {
            fields
        };
    }
    if let Some(size) = get.count("limit_request_field_size", 0)? {
        limits.max_field_size = if size == 0 { hard_max } else { size };
    }
    if let Some(size) = get.count("buffer_size", 1)? {
        // uWSGI's buffer: the whole request head, and the uwsgi vars block.
        limits.max_head_size = size;
        config.uwsgi_limits.max_vars_size = size.min(usize::from(u16::MAX));
    }
    // The head must be able to hold what the per-field limits allow.
    limits.max_head_size = limits.max_head_size.max(limits.max_request_line + 2);
    config.max_body_size = get.number("limit_request_body")?.filter(|limit| *limit > 0);
    let defaults = BodyBuffering::default();
    config.body_buffering = BodyBuffering {
        max_size: get.number("body_buffer_size")?.unwrap_or(defaults.max_size),
        memory: get
            .count("body_buffer_memory", 1)?
            .unwrap_or(defaults.memory),
        spool_max: get.number("body_spool_size")?.unwrap_or(defaults.spool_max),
        stream: get.flag("stream_request_body")?.unwrap_or(defaults.stream),
        stream_paths: get
            .list("stream_request_body_path")
            .into_iter()
            .map(|entry| entry.value.trim().to_owned())
            .filter(|path| !path.is_empty())
            .collect(),
    };
    Ok(())
}

fn python(get: &Getter<'_>) -> Result<PythonSettings, ConfigError> {
    let path = |name: &str| get.text(name).map(|(path, _)| PathBuf::from(path.trim()));
    let mut pythonpath = Vec::new();
    for entry in get.list("pythonpath") {
        pythonpath.extend(
            entry
                .value
                .split(',')
                .map(str::trim)
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
        );
    }
    let mut raw_env = Vec::new();
    for entry in get.list("raw_env") {
        let Some((key, value)) = entry.value.split_once('=') else {
            return Err(get.bad(entry, "is not KEY=VALUE"));
        };
        if key.is_empty() || key.contains('\0') || value.contains('\0') {
            return Err(get.bad(entry, "is not KEY=VALUE"));
        }
        raw_env.push((key.to_owned(), value.to_owned()));
    }
    Ok(PythonSettings {
        virtualenv: path("virtualenv").or_else(|| {
            std::env::var_os("VIRTUAL_ENV")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        }),
        chdir: path("chdir"),
        pythonpath,
        chdir2: path("chdir2"),
        raw_env,
    })
}

fn process(get: &Getter<'_>) -> Result<ProcessSettings, ConfigError> {
    let defaults = ProcessSettings::default();
    let nonzero = |duration: Option<Duration>| duration.filter(|duration| !duration.is_zero());
    let reload = match get.flag("reload")? {
        Some(reload) => reload,
        None => get
            .seconds("py_autoreload")?
            .is_some_and(|every| !every.is_zero()),
    };
    let daemon = get.flag("daemon")?.unwrap_or(false);
    Ok(ProcessSettings {
        master: get.flag("master")?.unwrap_or(defaults.master),
        workers: get.count("workers", 1)?.unwrap_or(defaults.workers),
        timeout: match get.seconds("timeout")? {
            Some(timeout) => nonzero(Some(timeout)),
            None => defaults.timeout,
        },
        timeout_grace: get
            .seconds("timeout_grace")?
            .unwrap_or(defaults.timeout_grace),
        max_requests: get.number("max_requests")?.unwrap_or(0),
        max_requests_jitter: get.number("max_requests_jitter")?.unwrap_or(0),
        max_lifetime: nonzero(get.seconds("max_worker_lifetime")?),
        reload_on_rss: get
            .number("reload_on_rss")?
            .filter(|megabytes| *megabytes > 0)
            .map(|megabytes| megabytes << 20),
        preload: get.flag("preload_app")?.unwrap_or(false),
        reuse_port: get.flag("reuse_port")?.unwrap_or(false),
        defer_accept: !get.flag("no_defer_accept")?.unwrap_or(false),
        pidfile: get
            .text("pidfile")
            .map(|(path, _)| PathBuf::from(path.trim())),
        daemon,
        user: get.text("user").map(|(user, _)| user.trim().to_owned()),
        group: get.text("group").map(|(group, _)| group.trim().to_owned()),
        umask: get
            .text("umask")
            .map(|(mask, entry)| {
                let digits = mask.trim();
                let digits = digits.strip_prefix("0o").unwrap_or(digits);
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|mask| *mask <= 0o777)
                    .ok_or_else(|| get.bad(entry, "is not an octal mask"))
            })
            .transpose()?,
        name: get.text("proc_name").map(|(name, _)| name.to_owned()),
        vacuum: get.flag("vacuum")?.unwrap_or(defaults.vacuum),
        initgroups: get.flag("initgroups")?.unwrap_or(false),
        reload,
        procname_prefix: get
            .text("procname_prefix")
            .map(|(prefix, _)| prefix.to_owned()),
    })
}

/// gunicorn's `-k`: every worker here is a threaded one.
fn worker_class(get: &Getter<'_>) -> Result<(), ConfigError> {
    let Some((class, entry)) = get.text("worker_class") else {
        return Ok(());
    };
    let short = class.trim().rsplit(['.', ':']).next().unwrap_or("");
    match short.to_ascii_lowercase().as_str() {
        "sync" | "gthread" | "syncworker" | "threadworker" => Ok(()),
        _ => Err(get.bad(
            entry,
            "is not available: wsgi-server's workers are threaded (gunicorn's sync and gthread); \
             for gevent or eventlet style concurrency raise --threads",
        )),
    }
}

impl Source {
    /// Whether this value came from the built-in default.
    pub fn is_default(&self) -> bool {
        matches!(self, Source::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::{parse_command_line, Command};
    use crate::config::layer::{Layer, Rank};
    use crate::config::settings;

    fn layer(rank: Rank, pairs: &[(&str, &str)], source: &str) -> Layer {
        let mut layer = Layer::new(rank);
        for (name, value) in pairs {
            layer.push(
                settings::by_name(name).unwrap(),
                *value,
                Source::Flag(format!("{source}{name}")),
            );
        }
        layer
    }

    fn cli(args: &[&str]) -> Layer {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        match parse_command_line(&args).unwrap() {
            Command::Run(layer) => layer,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn precedence_table() {
        // (file, env, flag) → expected; None = not given at that level.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, usize);
        let cases: &[Case<'_>] = &[
            (Some("2"), None, None, 2),
            (Some("2"), Some("3"), None, 3),
            (Some("2"), Some("3"), Some("4"), 4),
            (None, Some("3"), Some("4"), 4),
            (Some("2"), None, Some("4"), 4),
            (None, None, None, 1),
        ];
        for (file, env, flag, expected) in cases {
            let mut layers = vec![layer(Rank::PasteServer, &[("workers", "9")], "paste ")];
            layers[0].entries.clear();
            if let Some(value) = file {
                layers.push(layer(Rank::File, &[("workers", value)], "file "));
            }
            if let Some(value) = env {
                layers.push(layer(Rank::Env, &[("workers", value)], "env "));
            }
            let mut args = vec!["app:x"];
            if let Some(value) = flag {
                args.extend(["--workers", value]);
            }
            layers.push(cli(&args));
            let config = resolve(&Merged::new(layers)).unwrap();
            assert_eq!(
                config.process.workers, *expected,
                "{file:?} {env:?} {flag:?}"
            );
        }
    }

    #[test]
    fn uwsgi_module_and_protocol() {
        let config = resolve(&Merged::new(vec![cli(&[
            "--socket",
            "127.0.0.1:9",
            "--protocol=http",
            "-w",
            "wsgi",
        ])]))
        .unwrap();
        assert_eq!(config.app, AppSource::Python("wsgi".into()));
        assert_eq!(config.binds[0].protocol, Protocol::Http);
        let config = resolve(&Merged::new(vec![cli(&[
            "--socket",
            "127.0.0.1:9",
            "--module",
            "mod",
            "--callable",
            "app",
        ])]))
        .unwrap();
        assert_eq!(config.app, AppSource::Python("mod:app".into()));
        assert_eq!(config.binds[0].protocol, Protocol::Uwsgi);
    }

    #[test]
    fn static_files() {
        let dir = std::env::temp_dir();
        let map = format!("/static={}", dir.display());
        let config = resolve(&Merged::new(vec![cli(&[
            "--static-map",
            &map,
            "--static-map",
            "/s2=.",
            "--static-index",
            "index.html",
            "--static-expires",
            "60",
            "a",
        ])]))
        .unwrap();
        let statics = config.static_files;
        assert_eq!(statics.maps[0], ("/static".to_owned(), dir.clone()));
        // Relative to the current directory, made absolute.
        assert!(statics.maps[1].1.is_absolute());
        assert_eq!(statics.index, ["index.html"]);
        assert_eq!(statics.expires, Some(60));
        let error = |args: &[&str]| {
            resolve(&Merged::new(vec![cli(args)]))
                .unwrap_err()
                .to_string()
        };
        assert!(error(&["--static-map", "static", "a"]).contains("is not PREFIX=DIR"));
        assert!(error(&["--static-map", "s=/tmp", "a"]).contains("starting with /"));
        assert!(error(&["--static-map", "/s=/no/such/dir/here", "a"]).contains("does not exist"));
        assert!(error(&["--static-index", "a/b", "a"]).contains("is not a file name"));
        assert!(error(&["--static-expires", "soon", "a"]).contains("is not a whole number"));
    }

    #[test]
    fn bad_values_name_their_source() {
        let error = |args: &[&str]| {
            resolve(&Merged::new(vec![cli(args)]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(&["--threads", "0", "a"]),
            "--threads: \"0\" must be at least 1"
        );
        assert_eq!(
            error(&["--workers", "five", "a"]),
            "--workers: \"five\" is not a whole number"
        );
        assert_eq!(
            error(&["--master=maybe", "a"]),
            "--master: \"maybe\" is not a boolean (true/false, 1/0, yes/no, on/off)"
        );
        assert!(error(&["-k", "gevent", "a"]).starts_with("-k: \"gevent\" is not available"));
        assert!(error(&["--paste", "x.ini", "a"]).contains("already given"));
        assert!(error(&[]).starts_with("no application given"));
        assert_eq!(
            error(&["--protocol", "gopher", "a"]),
            "--protocol: \"gopher\" is not a protocol (http, uwsgi)"
        );
    }

    #[test]
    fn limits_zero_means_largest() {
        let config = resolve(&Merged::new(vec![cli(&[
            "--limit-request-line",
            "0",
            "--limit-request-fields",
            "0",
            "--limit-request-field_size",
            "0",
            "a",
        ])]))
        .unwrap();
        assert_eq!(config.http_limits.max_headers, MAX_REQUEST_FIELDS);
        assert!(config.http_limits.max_request_line >= 65536);
        assert!(config.http_limits.max_head_size >= config.http_limits.max_request_line + 2);
    }

    #[test]
    fn paste_uris() {
        assert_eq!(
            split_paste_uri("config:a.ini#main2"),
            ("a.ini", Some("main2".into()))
        );
        assert_eq!(split_paste_uri("a.ini"), ("a.ini", None));
        let config = resolve(&Merged::new(vec![cli(&["--paste", "/srv/x.ini#two"])])).unwrap();
        assert_eq!(
            config.app,
            AppSource::Paste {
                uri: "config:/srv/x.ini".into(),
                name: "two".into(),
                global_conf: vec![]
            }
        );
    }

    #[test]
    fn daemonize_logs_to_its_file() {
        let config = resolve(&Merged::new(vec![cli(&["--daemonize", "/tmp/x.log", "a"])])).unwrap();
        assert!(config.process.daemon);
        assert_eq!(config.error_log, Some(PathBuf::from("/tmp/x.log")));
    }
}
