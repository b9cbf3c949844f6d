//! The gunicorn-style command line (with uWSGI's names where users know
//! them), turned into the typed [`ServerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;

use crate::config::{AppSource, PythonSettings, ServerConfig, Timeouts};
use crate::listener::{BindSpec, Protocol};
use crate::log::Level;

/// A WSGI application server.
#[derive(Debug, Parser)]
#[command(name = "wsgi-server", version, about, max_term_width = 100)]
pub struct Cli {
    /// The WSGI application: `module:callable`, `module` (= module:application),
    /// `module:factory()`, `module:factory('arg', debug=True)`, or `path/app.py[:callable]`.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Serve a built-in pure-Rust application instead of Python (`hello`, `echo`).
    #[arg(long, value_name = "NAME")]
    pub rust_app: Option<String>,

    /// Where to listen for HTTP: `HOST:PORT`, `[::1]:PORT`, `:PORT`, `unix:PATH`, `fd://N` (repeatable).
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// The protocol of the --bind listeners: `http` or `uwsgi`.
    #[arg(long, value_name = "PROTOCOL", default_value = "http")]
    pub protocol: String,

    /// Listen for the uwsgi protocol (nginx uwsgi_pass) (repeatable).
    #[arg(
        long = "socket",
        visible_alias = "uwsgi-socket",
        value_name = "ADDRESS"
    )]
    pub uwsgi_socket: Vec<String>,

    /// Listen for HTTP (uWSGI's name for --bind) (repeatable).
    #[arg(long = "http-socket", value_name = "ADDRESS")]
    pub http_socket: Vec<String>,

    /// Mode of the unix sockets we create, octal (uWSGI's --chmod-socket; default 666 if given bare).
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "666")]
    pub chmod_socket: Option<String>,

    /// Worker processes (uWSGI: --processes).
    #[arg(
        short = 'w',
        long,
        visible_alias = "processes",
        value_name = "N",
        default_value_t = 1
    )]
    pub workers: usize,

    /// Serve in this process, without a master (for debugging; no recycling or timeouts).
    #[arg(long)]
    pub no_master: bool,

    /// Kill and replace a worker stuck longer than this in one request, after
    /// logging its Python stacks (uWSGI: --harakiri; 0 = never).
    #[arg(
        short = 't',
        long,
        visible_alias = "harakiri",
        value_name = "SECONDS",
        default_value_t = 0.0
    )]
    pub timeout: f64,

    /// Recycle a worker after this many requests (0 = never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,

    /// Add up to this many requests, chosen per worker, to --max-requests
    /// (uWSGI: --max-requests-delta).
    #[arg(
        long,
        visible_alias = "max-requests-delta",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_requests_jitter: u64,

    /// Recycle a worker after this many seconds (0 = never).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub max_worker_lifetime: f64,

    /// Recycle a worker whose resident memory exceeds this many MiB (0 = never).
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub reload_on_rss: u64,

    /// Import the application in the master before forking the workers
    /// (shares memory copy-on-write; the app must not start threads at import).
    #[arg(long)]
    pub preload: bool,

    /// Set SO_REUSEPORT on TCP listeners, as gunicorn does (another server
    /// may then bind the same port, e.g. during a binary upgrade).
    #[arg(long)]
    pub reuse_port: bool,

    /// Write the master's pid to this file.
    #[arg(short = 'p', long, visible_alias = "pidfile", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Detach from the terminal (logs need --error-logfile).
    #[arg(short = 'D', long, visible_alias = "daemonize")]
    pub daemon: bool,

    /// Switch to this user after binding (name or uid); Python starts
    /// after the switch, so the interpreter, the virtualenv and the app
    /// must be readable by this user.
    #[arg(short = 'u', long, visible_alias = "uid", value_name = "USER")]
    pub user: Option<String>,

    /// Switch to this group after binding (name or gid).
    #[arg(short = 'g', long, visible_alias = "gid", value_name = "GROUP")]
    pub group: Option<String>,

    /// File mode creation mask, octal.
    #[arg(short = 'm', long, value_name = "MASK")]
    pub umask: Option<String>,

    /// Name shown in process titles (gunicorn: --name, uWSGI: --procname).
    #[arg(short = 'n', long, visible_alias = "procname", value_name = "NAME")]
    pub name: Option<String>,

    /// Keep unix sockets and the pidfile at exit (they are removed by default).
    #[arg(long)]
    pub no_vacuum: bool,

    /// Application threads per process.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub threads: usize,

    /// Maximum pending connections (listen backlog).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub backlog: i32,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub keep_alive: f64,

    /// Seconds a client may take to send a whole request head.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub header_timeout: f64,

    /// Seconds a request body may stall while the application waits for it.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub body_timeout: f64,

    /// Seconds in-flight requests get to finish on a graceful stop.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub graceful_timeout: f64,

    /// Maximum size of the request line in bytes (414 above it; 0 = the codec's maximum).
    #[arg(long, value_name = "BYTES", default_value_t = wsgi_http::DEFAULT_MAX_REQUEST_LINE)]
    pub limit_request_line: usize,

    /// Maximum number of request headers (431 above it).
    #[arg(long, value_name = "N", default_value_t = wsgi_http::DEFAULT_MAX_HEADERS)]
    pub limit_request_fields: usize,

    /// Maximum size of one request header line in bytes (431 above it).
    #[arg(long, value_name = "BYTES", default_value_t = wsgi_http::DEFAULT_MAX_FIELD_SIZE)]
    pub limit_request_field_size: usize,

    /// Maximum request body in bytes (413 above it; 0 = unlimited). uWSGI: --limit-post.
    #[arg(
        long,
        visible_alias = "limit-post",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub limit_request_body: u64,

    /// Use this virtualenv (uWSGI: -H/--home/--venv; default: $VIRTUAL_ENV).
    #[arg(short = 'H', long, visible_aliases = ["home", "venv", "pyhome"], value_name = "DIR")]
    pub virtualenv: Option<PathBuf>,

    /// Change to this directory before loading the application.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Add to sys.path (repeatable, or comma-separated).
    #[arg(long, value_name = "DIR", value_delimiter = ',')]
    pub pythonpath: Vec<PathBuf>,

    /// Mount the application under this prefix (default: $SCRIPT_NAME).
    #[arg(long, value_name = "PATH")]
    pub script_name: Option<String>,

    /// Peers whose SCRIPT_NAME and X-Forwarded-Proto headers are trusted (comma-separated, `*` for all).
    #[arg(long, value_name = "IPS", default_value = "127.0.0.1,::1")]
    pub forwarded_allow_ips: String,

    /// Peers allowed to connect to uwsgi-protocol TCP listeners (comma-separated, `*` for all;
    /// unix sockets are always allowed).
    #[arg(long, value_name = "IPS", default_value = "127.0.0.1,::1")]
    pub uwsgi_allow_from: String,

    /// Keep request headers whose names contain underscores (dropped by default).
    #[arg(long)]
    pub allow_underscore_headers: bool,

    /// Error log file (`-` = standard error).
    #[arg(long, visible_alias = "log-file", value_name = "FILE")]
    pub error_logfile: Option<PathBuf>,

    /// Log level: debug, info, warning, error.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

fn ip_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|ip| ip.trim().to_owned())
        .filter(|ip| !ip.is_empty())
        .collect()
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("--{flag}: {value} is not a number of seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

impl Cli {
    /// Checks the flags and builds the configuration.
    ///
    /// # Errors
    /// One line naming the flag and the problem.
    pub fn into_config(self) -> Result<ServerConfig, String> {
        let app = match (self.app, self.rust_app) {
            (Some(_), Some(_)) => {
                return Err("give either an APP or --rust-app, not both".into());
            }
            (None, Some(name)) => {
                if wsgi_core::testing::app_by_name(&name).is_none() {
                    return Err(format!(
                        "--rust-app: unknown application {name:?} (known: {})",
                        wsgi_core::testing::APP_NAMES.join(", ")
                    ));
                }
                AppSource::Rust(name)
            }
            (Some(spec), None) => AppSource::Python(spec),
            (None, None) => {
                return Err("no application given: wsgi-server [OPTIONS] module:app".into());
            }
        };
        let bind_protocol = match self.protocol.as_str() {
            "http" => Protocol::Http,
            "uwsgi" => Protocol::Uwsgi,
            other => {
                return Err(format!(
                    "--protocol: unknown protocol {other:?} (http, uwsgi)"
                ))
            }
        };
        let mut binds = Vec::new();
        for (flag, addresses, protocol) in [
            ("bind", &self.bind, bind_protocol),
            ("http-socket", &self.http_socket, Protocol::Http),
            ("socket", &self.uwsgi_socket, Protocol::Uwsgi),
        ] {
            for address in addresses {
                binds.push(
                    BindSpec::parse(address, protocol)
                        .map_err(|error| format!("--{flag}: {error}"))?,
                );
            }
        }
        if binds.is_empty() {
            binds.push(BindSpec::parse("127.0.0.1:8000", bind_protocol)?);
        }
        let mut config = ServerConfig::new(app, binds);
        config.unix_socket_mode = self
            .chmod_socket
            .map(|mode| {
                u32::from_str_radix(&mode, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| format!("--chmod-socket: {mode:?} is not an octal mode"))
            })
            .transpose()?;
        if self.threads == 0 {
            return Err("--threads: must be at least 1".into());
        }
        config.threads = self.threads;
        config.queue_size = (self.threads * 16).max(64);
        if self.backlog <= 0 {
            return Err("--backlog: must be positive".into());
        }
        config.backlog = self.backlog;
        config.timeouts = Timeouts {
            keep_alive: seconds("keep-alive", self.keep_alive)?,
            header: seconds("header-timeout", self.header_timeout)?,
            body: seconds("body-timeout", self.body_timeout)?,
            graceful: seconds("graceful-timeout", self.graceful_timeout)?,
        };
        let limits = &mut config.http_limits;
        // gunicorn: 0 means "no limit"; ours is the codec's hard maximum.
        limits.max_request_line = match self.limit_request_line {
            0 => limits.max_head_size,
            line => line,
        };
        if self.limit_request_fields == 0 {
            return Err("--limit-request-fields: must be at least 1".into());
        }
        limits.max_headers = self.limit_request_fields;
        limits.max_field_size = match self.limit_request_field_size {
            0 => limits.max_head_size,
            size => size,
        };
        // The head must be able to hold what the per-field limits allow.
        limits.max_head_size = limits.max_head_size.max(limits.max_request_line + 2);
        config.max_body_size = (self.limit_request_body > 0).then_some(self.limit_request_body);
        let script_name = self
            .script_name
            .or_else(|| std::env::var("SCRIPT_NAME").ok())
            .unwrap_or_default();
        config.environ.script_name = Bytes::from(script_name);
        config.environ.allow_underscore_headers = self.allow_underscore_headers;
        config.forwarded_allow_ips = ip_list(&self.forwarded_allow_ips);
        config.uwsgi_allow_from = ip_list(&self.uwsgi_allow_from);
        config.python = PythonSettings {
            virtualenv: self
                .virtualenv
                .or_else(|| std::env::var_os("VIRTUAL_ENV").map(PathBuf::from)),
            chdir: self.chdir,
            pythonpath: self.pythonpath,
        };
        let lifetime = seconds("max-worker-lifetime", self.max_worker_lifetime)?;
        let timeout = seconds("timeout", self.timeout)?;
        if self.workers == 0 {
            return Err("--workers: must be at least 1".into());
        }
        if self.daemon && self.error_logfile.is_none() {
            return Err("--daemon: give --error-logfile too, or the logs are lost".into());
        }
        config.process = crate::config::ProcessSettings {
            master: !self.no_master,
            workers: self.workers,
            timeout: (!timeout.is_zero()).then_some(timeout),
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_lifetime: (!lifetime.is_zero()).then_some(lifetime),
            reload_on_rss: (self.reload_on_rss > 0).then_some(self.reload_on_rss << 20),
            preload: self.preload,
            reuse_port: self.reuse_port,
            pidfile: self.pid,
            daemon: self.daemon,
            user: self.user,
            group: self.group,
            umask: self
                .umask
                .map(|mask| {
                    u32::from_str_radix(mask.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|mask| *mask <= 0o777)
                        .ok_or_else(|| format!("--umask: {mask:?} is not an octal mask"))
                })
                .transpose()?,
            name: self.name,
            vacuum: !self.no_vacuum,
        };
        config.error_log = self.error_logfile;
        config.log_level = Level::parse(&self.log_level)
            .ok_or_else(|| format!("--log-level: unknown level {:?}", self.log_level))?;
        Ok(config)
    }
}
