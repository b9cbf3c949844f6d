//! The resolved configuration: what [`resolve`](super::resolve()) makes of
//! every source, and the only configuration the server reads.

use std::path::PathBuf;
use std::time::Duration;

use wsgi_core::EnvironOptions;

use crate::listener::BindSpec;

/// Which application to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// A Python WSGI app spec, as gunicorn reads it (`module:app`, `app.py`, ...).
    Python(String),
    /// An application built by PasteDeploy from an ini file.
    Paste {
        /// `config:/absolute/path.ini`.
        uri: String,
        /// The `[app:NAME]` (or composite/pipeline) to load.
        name: String,
        /// `--paste-global` variables.
        global_conf: Vec<(String, String)>,
    },
    /// A built-in pure-Rust application (`hello`, `echo`): no Python at all.
    Rust(String),
}

/// Embedded-interpreter settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonSettings {
    /// `--virtualenv/-H`, or `VIRTUAL_ENV`.
    pub virtualenv: Option<PathBuf>,
    /// `--chdir`: change directory before loading the app.
    pub chdir: Option<PathBuf>,
    /// `--pythonpath`: prepended to `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// uWSGI's `--chdir2`: change directory after loading the app.
    pub chdir2: Option<PathBuf>,
    /// `--env KEY=VALUE`: set in the process environment before the app loads.
    pub raw_env: Vec<(String, String)>,
}

/// Timeouts of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long an idle keep-alive connection waits for its next request.
    pub keep_alive: Duration,
    /// How long a client may take to send a whole request head once it
    /// started (slowloris defence).
    pub header: Duration,
    /// How long a request body may stall, while it is buffered (then 408)
    /// or while the application waits for it.
    pub body: Duration,
    /// How long a graceful stop lets in-flight requests finish.
    pub graceful: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            keep_alive: Duration::from_secs(5),
            header: Duration::from_secs(30),
            body: Duration::from_secs(60),
            graceful: Duration::from_secs(30),
        }
    }
}

/// How request bodies reach the application (`--body-buffer-size`,
/// `--body-buffer-memory`, `--stream-request-body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyBuffering {
    /// Bodies up to this size (a `Content-Length` up to it, or a chunked
    /// body while it stays below it) are read whole on the I/O thread
    /// before the application is called; larger ones are streamed to it.
    pub max_size: u64,
    /// Body bytes one worker may buffer at once, all requests together.
    pub memory: usize,
    /// Bodies above `max_size` and up to this are spooled to an unlinked
    /// temporary file before the application is called (0: streamed).
    pub spool_max: u64,
    /// Call the application at the head and stream every body (the old way).
    pub stream: bool,
    /// Stream the bodies of requests whose `PATH_INFO` starts with one of
    /// these: the per-route opt-in (an application cannot ask for itself,
    /// as the choice is made before it is called).
    pub stream_paths: Vec<String>,
}

impl Default for BodyBuffering {
    fn default() -> Self {
        // Why 1 MiB and 32 MiB: nginx keeps 8-16 KiB in memory and spools
        // the rest to a file, waitress spools past 512 KiB. A spooled body
        // costs a file write and a read per byte, and on this VM a 64 KiB
        // upload in memory runs ~25 % faster than the old streaming (1 MiB:
        // ~40 %; docs/performance.md): so memory up to 1 MiB, which covers
        // forms and JSON APIs, and files above. 32 MiB is 32 such bodies
        // at once, or thousands of small ones, for a worker of ~14 MiB.
        BodyBuffering {
            max_size: 1024 * 1024,
            memory: 32 * 1024 * 1024,
            // As nginx (which spools every body past its buffer): a slow
            // client must not pin a thread by declaring a larger body. Past
            // 1 GiB a body streams: a disk is not unlimited either, and
            // uploads that large usually want to be read as they come.
            spool_max: 1024 * 1024 * 1024,
            stream: false,
            stream_paths: Vec::new(),
        }
    }
}

/// The process model: master, workers, recycling and daemon settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSettings {
    /// Run a master that supervises workers (gunicorn's model). Without it
    /// the single process serves by itself.
    pub master: bool,
    /// Worker processes.
    pub workers: usize,
    /// A request running longer than this is stopped (its stack logged, an
    /// exception raised in its thread); `None`: never.
    pub timeout: Option<Duration>,
    /// After the timeout, how long the request gets to return before its
    /// worker stops accepting and is replaced.
    pub timeout_grace: Duration,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Up to this many more requests, chosen per worker, so workers do not
    /// all recycle at once.
    pub max_requests_jitter: u64,
    /// Recycle a worker after this long.
    pub max_lifetime: Option<Duration>,
    /// Recycle a worker whose resident memory grows past this many bytes.
    pub reload_on_rss: Option<u64>,
    /// Import the application in the master before forking.
    pub preload: bool,
    /// `SO_REUSEPORT` on TCP listeners (gunicorn's `--reuse-port`).
    pub reuse_port: bool,
    /// `TCP_DEFER_ACCEPT` on the TCP listeners we bind (uWSGI's default;
    /// off with `--no-defer-accept`).
    pub defer_accept: bool,
    /// Where to write the master's pid.
    pub pidfile: Option<PathBuf>,
    /// Detach from the terminal.
    pub daemon: bool,
    /// Drop privileges to this user after binding.
    pub user: Option<String>,
    /// Drop privileges to this group after binding.
    pub group: Option<String>,
    /// File mode creation mask.
    pub umask: Option<u32>,
    /// Name in process titles (`wsgi-server: worker 2 [NAME]`).
    pub name: Option<String>,
    /// Remove unix sockets and the pidfile at exit.
    pub vacuum: bool,
    /// With `user`, take that user's supplementary groups.
    pub initgroups: bool,
    /// Restart workers when a loaded source file changes.
    pub reload: bool,
    /// Put before every process title (uWSGI's `--procname-prefix`).
    pub procname_prefix: Option<String>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            master: true,
            workers: 1,
            timeout: Some(Duration::from_secs(30)),
            timeout_grace: Duration::from_secs(10),
            max_requests: 0,
            max_requests_jitter: 0,
            max_lifetime: None,
            reload_on_rss: None,
            preload: false,
            reuse_port: false,
            defer_accept: true,
            pidfile: None,
            daemon: false,
            user: None,
            group: None,
            umask: None,
            name: None,
            vacuum: true,
            initgroups: false,
            reload: false,
            procname_prefix: None,
        }
    }
}

/// Static files served by the I/O thread (`ops::static_files`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticSettings {
    /// `--static-map PREFIX=DIR`: (URL prefix, absolute directory or file).
    pub maps: Vec<(String, PathBuf)>,
    /// `--static-index`: file names served for a directory, tried in order.
    pub index: Vec<String>,
    /// `--static-expires`: `Cache-Control: max-age` in seconds.
    pub expires: Option<u64>,
}

/// The access log.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    /// The file; `None` for standard output.
    pub path: Option<PathBuf>,
    /// The compiled format.
    pub format: super::access_format::Format,
    /// uWSGI's `--log-x-forwarded-for`.
    pub x_forwarded_for: bool,
}

/// The whole server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The application.
    pub app: AppSource,
    /// Every listener.
    pub binds: Vec<BindSpec>,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Mode of unix sockets we create (`--chmod-socket`).
    pub unix_socket_mode: Option<u32>,
    /// Application threads per process.
    pub threads: usize,
    /// Requests parsed and waiting for an application thread, per process;
    /// when full, connections stop reading new requests (backpressure).
    pub queue_size: usize,
    /// Codec limits.
    pub http_limits: wsgi_http::Config,
    /// uwsgi decoder limits (`--buffer-size`).
    pub uwsgi_limits: wsgi_uwsgi::Config,
    /// Largest request body (413 above it); `None` is unlimited.
    pub max_body_size: Option<u64>,
    /// Request-body buffering before the application is called.
    pub body_buffering: BodyBuffering,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// How the environ is shaped.
    pub environ: EnvironOptions,
    /// Peers whose proxy headers are believed (`--forwarded-allow-ips`);
    /// `*` trusts everyone.
    pub forwarded_allow_ips: wsgi_core::proxy::AllowList,
    /// Peers allowed to speak the uwsgi protocol over TCP (`--uwsgi-allow-from`);
    /// `*` allows everyone. Unix sockets are always allowed. The uwsgi
    /// protocol trusts its peer with every CGI variable: it must never face
    /// the internet.
    pub uwsgi_allow_from: wsgi_core::proxy::AllowList,
    /// Interpreter settings.
    pub python: PythonSettings,
    /// The process model.
    pub process: ProcessSettings,
    /// Error log path (`None`: standard error).
    pub error_log: Option<PathBuf>,
    /// A PasteDeploy ini whose `[loggers]` configure Python logging in each
    /// worker (`--paste`, `--ini-paste-logged`), as `pserve` does.
    pub paste_logging: Option<String>,
    /// uWSGI's `--disable-logging`: no access log even if one is named
    /// (resolve then leaves `access_log` empty).
    pub disable_request_log: bool,
    /// Log level.
    pub log_level: crate::log::Level,
    /// Static files.
    pub static_files: StaticSettings,
    /// `--access-logfile` (`-` for standard output) and its format;
    /// `None` when there is no access log (or `--disable-logging`).
    pub access_log: Option<AccessLogSettings>,
    /// `--health-path`, and whether its requests are access-logged.
    pub health: Option<(String, bool)>,
    /// `--drain-delay`: how long a graceful stop keeps accepting while the
    /// health path says 503.
    pub drain_delay: std::time::Duration,
    /// `--log-config` / `--log-config-json`: Python logging set-up files.
    pub python_log_config: Option<(std::path::PathBuf, bool)>,
    /// `--capture-output`.
    pub capture_output: bool,
    /// `--proxy-protocol` and `--proxy-allow-from`.
    pub proxy_protocol: (
        crate::net::proxy_protocol::Mode,
        wsgi_core::proxy::AllowList,
    ),
    /// `--metrics-bind`: where the master serves Prometheus metrics.
    pub metrics_bind: Option<BindSpec>,
    /// `--stats`: where the master serves uWSGI's stats, and whether over
    /// HTTP (`--stats-http`).
    pub stats: Option<(BindSpec, bool)>,
}

impl ServerConfig {
    /// A configuration with the defaults, serving `app` on `binds`.
    pub fn new(app: AppSource, binds: Vec<BindSpec>) -> Self {
        ServerConfig {
            app,
            binds,
            backlog: 2048,
            unix_socket_mode: None,
            threads: 4,
            queue_size: 64,
            http_limits: wsgi_http::Config::default(),
            uwsgi_limits: wsgi_uwsgi::Config::default(),
            max_body_size: None,
            body_buffering: BodyBuffering::default(),
            timeouts: Timeouts::default(),
            environ: EnvironOptions::default(),
            forwarded_allow_ips: loopback(),
            uwsgi_allow_from: loopback(),
            python: PythonSettings::default(),
            process: ProcessSettings::default(),
            error_log: None,
            disable_request_log: false,
            paste_logging: None,
            log_level: crate::log::Level::Info,
            static_files: StaticSettings::default(),
            proxy_protocol: (crate::net::proxy_protocol::Mode::Off, loopback()),
            access_log: None,
            drain_delay: std::time::Duration::ZERO,
            health: None,
            python_log_config: None,
            capture_output: false,
            metrics_bind: None,
            stats: None,
        }
    }
}

fn loopback() -> wsgi_core::proxy::AllowList {
    wsgi_core::proxy::AllowList::parse("127.0.0.1,::1").expect("valid addresses")
}

/// Whether `peer` is in an allow-list (addresses, CIDR networks, `*`). A
/// unix-socket peer always is: only local processes (nginx) reach it.
pub fn peer_in_list(peer: &wsgi_core::PeerAddr, list: &wsgi_core::proxy::AllowList) -> bool {
    match peer {
        wsgi_core::PeerAddr::Unix => true,
        wsgi_core::PeerAddr::Tcp(address) => list.contains(address.ip()),
    }
}
