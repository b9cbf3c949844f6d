//! The table of every setting: its name in each source (command-line flags,
//! uWSGI option names, `gunicorn.conf.py` names), its kind, default and help.
//! The command-line parser, the file readers, `--help` and `--print-config`
//! are all driven by this one table, so a setting is added in one place.

/// How a setting takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `--flag` alone means true; `--flag=no` and files take
    /// uWSGI's booleans (`true/false/1/0/yes/no/on/off`).
    Bool,
    /// One value; a later one replaces it.
    Value,
    /// Like [`Kind::Value`], but `--flag` alone means the given value.
    OptionalValue(&'static str),
    /// Repeatable: values accumulate within one source (two `socket` lines
    /// are two listeners); a higher source replaces them all.
    List,
    /// A peer's option with no meaning here: accepted (with or without a
    /// value) and reported at start-up; the help says what we do instead.
    Ignored {
        /// Whether it takes a value on the command line.
        takes_value: bool,
    },
}

/// Where a setting is listed in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// What to serve.
    App,
    /// Configuration files.
    Files,
    /// Where to listen.
    Listen,
    /// Processes and threads.
    Process,
    /// Timeouts and limits.
    Limits,
    /// The interpreter.
    Python,
    /// Logging.
    Logging,
    /// Static files.
    Static,
    /// Options of the peers accepted without effect.
    Compat,
}

impl Group {
    /// The heading in `--help`.
    pub fn title(self) -> &'static str {
        match self {
            Group::App => "Application",
            Group::Files => "Configuration files",
            Group::Listen => "Listeners",
            Group::Process => "Processes and threads",
            Group::Limits => "Timeouts and limits",
            Group::Python => "Python",
            Group::Logging => "Logging",
            Group::Static => "Static files (served without the application)",
            Group::Compat => "Accepted for compatibility (no effect here)",
        }
    }
}

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// Canonical name: the `gunicorn.conf.py` name where gunicorn has one,
    /// the key in `--print-config`.
    pub name: &'static str,
    /// Long command-line flags, without `--`; the first is shown in help.
    pub flags: &'static [&'static str],
    /// The short flag, if any (gunicorn's spellings own the short flags).
    pub short: Option<char>,
    /// Flags that set a [`Kind::Bool`] to false (`--no-master`).
    pub negations: &'static [&'static str],
    /// uWSGI option names: keys in `--ini`/`--json` files and `UWSGI_*`
    /// variables, and accepted as long flags too.
    pub uwsgi: &'static [&'static str],
    /// Other `gunicorn.conf.py` / PasteDeploy `[server:main]` names.
    pub py_names: &'static [&'static str],
    /// How it takes values.
    pub kind: Kind,
    /// The value's placeholder in help.
    pub metavar: &'static str,
    /// The default, as printed (empty: none).
    pub default: &'static str,
    /// Help group.
    pub group: Group,
    /// One line of help.
    pub help: &'static str,
}

/// The first of zero or one short flags (the table macro's optional part).
const fn first(shorts: &[char]) -> Option<char> {
    match shorts {
        [short, ..] => Some(*short),
        [] => None,
    }
}

macro_rules! setting {
    ($name:literal, $group:ident, $kind:expr, $metavar:literal, $default:literal, $help:literal
     $(, flags = [$($flag:literal),*])? $(, short = $short:literal)? $(, no = [$($neg:literal),*])?
     $(, uwsgi = [$($uwsgi:literal),*])? $(, py = [$($py:literal),*])?) => {
        Setting {
            name: $name,
            flags: &[$($($flag),*)?],
            short: first(&[$($short)?]),
            negations: &[$($($neg),*)?],
            uwsgi: &[$($($uwsgi),*)?],
            py_names: &[$($($py),*)?],
            kind: $kind,
            metavar: $metavar,
            default: $default,
            group: Group::$group,
            help: $help,
        }
    };
}

use Kind::{Bool, List, OptionalValue, Value};

const IGNORED_FLAG: Kind = Kind::Ignored { takes_value: false };
const IGNORED_VALUE: Kind = Kind::Ignored { takes_value: true };

/// Every setting, in help order.
pub static SETTINGS: &[Setting] = &[
    // --- what to serve --------------------------------------------------------
    setting!("wsgi_app", App, Value, "APP", "",
        "The application: `module:callable`, `module` (= module:application), `module:factory(...)` with literal arguments, or `path/app.py[:callable]`; also the positional APP, and uWSGI's `-w module[:callable]`",
        flags = ["module", "wsgi"], uwsgi = ["module", "wsgi"]),
    setting!("callable", App, Value, "NAME", "application",
        "The callable in --module or --wsgi-file (uWSGI)",
        flags = ["callable"], uwsgi = ["callable"]),
    setting!("wsgi_file", App, Value, "FILE", "",
        "Load the application from this Python file (uWSGI)",
        flags = ["wsgi-file", "file"], uwsgi = ["wsgi-file", "file"]),
    setting!("paste", App, Value, "CONFIG[#NAME]", "",
        "Load the application from a PasteDeploy ini (`FILE`, `FILE#name`, `config:FILE`); its [server:NAME] section gives server settings",
        flags = ["paste", "paster"]),
    setting!("app_name", App, Value, "NAME", "main",
        "The [app:NAME] of --paste (default: the #name, else main)",
        flags = ["app-name"]),
    setting!("server_name", App, Value, "NAME", "main",
        "The [server:NAME] of --paste (default: the #name, else main)",
        flags = ["server-name"]),
    setting!("raw_paste_global_conf", App, List, "KEY=VALUE", "",
        "A PasteDeploy global variable (%(KEY)s in the ini) (repeatable)",
        flags = ["paste-global"]),
    setting!("rust_app", App, Value, "NAME", "",
        "Serve a built-in pure-Rust application instead of Python (`hello`, `echo`)",
        flags = ["rust-app"]),
    // --- files ----------------------------------------------------------------
    setting!("config", Files, Value, "FILE", "./gunicorn.conf.py",
        "A gunicorn configuration file (`python:module` too), run by the embedded interpreter",
        flags = ["config"], short = 'c'),
    setting!("ini", Files, List, "FILE[:SECTION]", "",
        "Read a uWSGI ini file ([uwsgi] by default) (repeatable)",
        flags = ["ini"], uwsgi = ["ini"]),
    setting!("json", Files, List, "FILE[:SECTION]", "",
        "Read a uWSGI JSON file (\"uwsgi\" by default) (repeatable)",
        flags = ["json"], uwsgi = ["json"]),
    setting!("ini_paste", Files, Value, "FILE", "",
        "A PasteDeploy ini: server settings from its [uwsgi] section, the application from [app:main]",
        flags = ["ini-paste"], uwsgi = ["ini-paste"]),
    setting!("ini_paste_logged", Files, Value, "FILE", "",
        "As --ini-paste, and configure Python logging from the file's [loggers]",
        flags = ["ini-paste-logged"], uwsgi = ["ini-paste-logged"]),
    setting!("print_config", Files, Bool, "", "false",
        "Print every effective setting with where it came from, then exit",
        flags = ["print-config"]),
    setting!("check_config", Files, Bool, "", "false",
        "Load the configuration and import the application (nothing is bound), then exit 0, or 1 with the reason",
        flags = ["check-config"]),
    // --- listeners --------------------------------------------------------------
    setting!("bind", Listen, List, "ADDRESS", "127.0.0.1:8000",
        "Listen here: `HOST:PORT`, `[::1]:PORT`, `:PORT`, `unix:PATH`, `fd://N`; speaks --protocol (repeatable; $PORT binds 0.0.0.0:$PORT)",
        flags = ["bind"], short = 'b'),
    setting!("socket", Listen, List, "ADDRESS", "",
        "Listen for the uwsgi protocol (nginx uwsgi_pass), or for --protocol (repeatable)",
        flags = ["socket", "uwsgi-socket"], short = 's', uwsgi = ["socket", "uwsgi-socket"]),
    setting!("http_socket", Listen, List, "ADDRESS", "",
        "Listen for HTTP whatever --protocol says (repeatable)",
        flags = ["http-socket"], uwsgi = ["http-socket"]),
    setting!("protocol", Listen, Value, "PROTOCOL", "",
        "The protocol of --bind and --socket listeners: `http` or `uwsgi` (default: http for --bind, uwsgi for --socket)",
        flags = ["protocol"], uwsgi = ["protocol"]),
    setting!("chmod_socket", Listen, OptionalValue("666"), "MODE", "",
        "Mode of the unix sockets we create, octal (666 if given bare)",
        flags = ["chmod-socket"], uwsgi = ["chmod-socket"]),
    setting!("backlog", Listen, Value, "N", "2048",
        "Listen queue size (uWSGI: --listen)",
        flags = ["backlog", "listen"], uwsgi = ["listen"], py = ["request_queue_size"]),
    setting!("reuse_port", Listen, Bool, "", "false",
        "Set SO_REUSEPORT on TCP listeners",
        flags = ["reuse-port"], uwsgi = ["reuse-port"]),
    setting!("no_defer_accept", Listen, Bool, "", "false",
        "Do not set TCP_DEFER_ACCEPT on the TCP listeners we bind (by default, as uWSGI, a connection is accepted once its first bytes are in, or after --header-timeout)",
        flags = ["no-defer-accept"], uwsgi = ["no-defer-accept"]),
    setting!("proxy_protocol", Listen, OptionalValue("auto"), "MODE", "off",
        "Read HAProxy's PROXY protocol header on every TCP connection from --proxy-allow-from: off, v1, v2, or auto (either; the default when given bare)",
        flags = ["proxy-protocol"]),
    setting!("proxy_allow_ips", Listen, Value, "IPS", "127.0.0.1,::1",
        "Load balancers allowed to send a PROXY header (addresses and CIDR networks, `*` for all); from anyone else the header is a bad request",
        flags = ["proxy-allow-from"]),
    setting!("uwsgi_allow_from", Listen, Value, "IPS", "127.0.0.1,::1",
        "Peers allowed on uwsgi-protocol TCP listeners: addresses and CIDR networks (comma-separated, `*` for all; unix sockets always)",
        flags = ["uwsgi-allow-from"]),
    // --- processes --------------------------------------------------------------
    setting!("workers", Process, Value, "N", "1",
        "Worker processes ($WEB_CONCURRENCY; `-w` with a number)",
        flags = ["workers", "processes"], short = 'w', uwsgi = ["processes", "workers"]),
    setting!("threads", Process, Value, "N", "4",
        "Application threads per worker",
        flags = ["threads"], uwsgi = ["threads"]),
    setting!("worker_class", Process, Value, "CLASS", "gthread",
        "gunicorn's worker class: `sync` and `gthread` are accepted (every worker here is a threaded one); others are refused",
        flags = ["worker-class"], short = 'k'),
    setting!("worker_connections", Process, IGNORED_VALUE, "N", "",
        "gunicorn's limit for async workers; a threaded worker holds any number of idle connections",
        flags = ["worker-connections"]),
    setting!("master", Process, Bool, "", "true",
        "Supervise workers from a master process (--no-master: serve in this process)",
        flags = ["master"], short = 'M', no = ["no-master"], uwsgi = ["master"]),
    setting!("preload_app", Process, Bool, "", "false",
        "Import the application in the master before forking (copy-on-write; the app must not start threads at import)",
        flags = ["preload"]),
    setting!("reload", Process, Bool, "", "false",
        "Restart workers when a loaded Python source file changes (development)",
        flags = ["reload"]),
    setting!("py_autoreload", Process, Value, "SECONDS", "0",
        "uWSGI's source-change reload: any positive value turns --reload on",
        flags = ["py-autoreload"], uwsgi = ["py-autoreload", "python-autoreload"]),
    setting!("max_requests", Process, Value, "N", "0",
        "Recycle a worker after this many requests (0: never)",
        flags = ["max-requests"], uwsgi = ["max-requests"]),
    setting!("max_requests_jitter", Process, Value, "N", "0",
        "Add up to this many requests, chosen per worker, to --max-requests",
        flags = ["max-requests-jitter", "max-requests-delta"], uwsgi = ["max-requests-delta"]),
    setting!("max_worker_lifetime", Process, Value, "SECONDS", "0",
        "Recycle a worker after this long (0: never)",
        flags = ["max-worker-lifetime"], uwsgi = ["max-worker-lifetime"]),
    setting!("reload_on_rss", Process, Value, "MB", "0",
        "Recycle a worker whose resident memory exceeds this many MiB (0: never)",
        flags = ["reload-on-rss"], uwsgi = ["reload-on-rss"]),
    setting!("daemon", Process, Bool, "", "false",
        "Detach from the terminal (the terminal is told where the logs go)",
        flags = ["daemon"], short = 'D'),
    setting!("daemonize", Process, Value, "LOGFILE", "",
        "Detach and log to LOGFILE (uWSGI)",
        flags = ["daemonize"], short = 'd', uwsgi = ["daemonize"]),
    setting!("pidfile", Process, Value, "FILE", "",
        "Write the master's pid here",
        flags = ["pid", "pidfile"], short = 'p', uwsgi = ["pidfile", "pidfile2"]),
    setting!("user", Process, Value, "USER", "",
        "Switch to this user after binding (name or uid); Python starts after the switch",
        flags = ["user", "uid"], short = 'u', uwsgi = ["uid"]),
    setting!("group", Process, Value, "GROUP", "",
        "Switch to this group after binding (name or gid)",
        flags = ["group", "gid"], short = 'g', uwsgi = ["gid"]),
    setting!("initgroups", Process, Bool, "", "false",
        "With --user, take that user's supplementary groups (else only --group)",
        flags = ["initgroups"]),
    setting!("umask", Process, Value, "MASK", "",
        "File mode creation mask, octal",
        flags = ["umask"], short = 'm', uwsgi = ["umask"]),
    setting!("proc_name", Process, Value, "NAME", "",
        "Name shown in process titles",
        flags = ["name", "procname"], short = 'n', uwsgi = ["procname"]),
    setting!("procname_prefix", Process, Value, "PREFIX", "",
        "Put this before every process title (uWSGI)",
        flags = ["procname-prefix", "procname-prefix-spaced"], uwsgi = ["procname-prefix", "procname-prefix-spaced"]),
    setting!("vacuum", Process, Bool, "", "true",
        "Remove our unix sockets and the pidfile at exit (--no-vacuum keeps them)",
        flags = ["vacuum"], no = ["no-vacuum"], uwsgi = ["vacuum"]),
    // --- timeouts and limits ------------------------------------------------------
    setting!("timeout", Limits, Value, "SECONDS", "30",
        "A request running longer is stopped: its thread's stack is logged and RequestTimeout raised in it; if it does not return within --timeout-grace, the worker is replaced (0: never)",
        flags = ["timeout", "harakiri"], short = 't', uwsgi = ["harakiri"]),
    setting!("timeout_grace", Limits, Value, "SECONDS", "10",
        "How long a timed-out request gets to return after RequestTimeout before its worker stops accepting and is replaced (its other requests finish)",
        flags = ["timeout-grace"]),
    setting!("graceful_timeout", Limits, Value, "SECONDS", "30",
        "In-flight requests get this long on a graceful stop",
        flags = ["graceful-timeout"], uwsgi = ["worker-reload-mercy"]),
    setting!("keepalive", Limits, Value, "SECONDS", "5",
        "An idle keep-alive connection is closed after this long",
        flags = ["keep-alive", "keepalive"]),
    setting!("header_timeout", Limits, Value, "SECONDS", "30",
        "A client must send a whole request head within this (408 after)",
        flags = ["header-timeout"]),
    setting!("body_timeout", Limits, Value, "SECONDS", "60",
        "A request body that stalls this long: 408 while it is buffered, a failed read for a streamed one",
        flags = ["body-timeout"], uwsgi = ["socket-timeout"]),
    setting!("limit_request_line", Limits, Value, "BYTES", "4094",
        "Largest request line (414 above it; 0: the largest allowed)",
        flags = ["limit-request-line"]),
    setting!("limit_request_fields", Limits, Value, "N", "100",
        "Most request header fields (431 above it; 0: the largest allowed)",
        flags = ["limit-request-fields"]),
    setting!("limit_request_field_size", Limits, Value, "BYTES", "8190",
        "Largest request header field (431 above it; 0: the largest allowed)",
        flags = ["limit-request-field-size", "limit-request-field_size"]),
    setting!("limit_request_body", Limits, Value, "BYTES", "0",
        "Largest request body (413 above it; 0: unlimited)",
        flags = ["limit-request-body", "limit-post"], uwsgi = ["limit-post"]),
    setting!("body_buffer_size", Limits, Value, "BYTES", "1048576",
        "Request bodies up to this size are read whole into memory before the application is called, so a slow client holds no application thread; larger ones are spooled to a file (--body-spool-size)",
        flags = ["body-buffer-size"]),
    setting!("body_buffer_memory", Limits, Value, "BYTES", "33554432",
        "Request-body bytes a worker buffers at once; past it, requests wait (unread, outside the application) until memory frees",
        flags = ["body-buffer-memory"]),
    setting!("body_spool_size", Limits, Value, "BYTES", "1073741824",
        "Request bodies above --body-buffer-size and up to this are read whole into an unlinked temporary file ($TMPDIR) before the application is called; larger ones are streamed to it (0: stream all of them)",
        flags = ["body-spool-size"]),
    setting!("stream_request_body", Limits, Bool, "", "false",
        "Call the application as soon as the request head arrives and let it read the body as it comes (upload progress, proxying)",
        flags = ["stream-request-body"]),
    setting!("stream_request_body_path", Limits, List, "PATH", "",
        "Stream the bodies of requests whose PATH_INFO starts with this, as --stream-request-body does for all (repeatable)",
        flags = ["stream-request-body-path"]),
    setting!("buffer_size", Limits, Value, "BYTES", "65536",
        "Largest uwsgi request variables block, and of an HTTP request head (uWSGI's --buffer-size)",
        flags = ["buffer-size"], uwsgi = ["buffer-size"]),
    // --- python -----------------------------------------------------------------
    setting!("virtualenv", Python, Value, "DIR", "$VIRTUAL_ENV",
        "The virtualenv to use",
        flags = ["virtualenv", "home", "venv", "pyhome"], short = 'H', uwsgi = ["home", "virtualenv", "venv", "pyhome"]),
    setting!("chdir", Python, Value, "DIR", "",
        "Change to this directory before loading the application",
        flags = ["chdir"], uwsgi = ["chdir"]),
    setting!("chdir2", Python, Value, "DIR", "",
        "Change to this directory after loading the application (uWSGI)",
        flags = ["chdir2"], uwsgi = ["chdir2"]),
    setting!("pythonpath", Python, List, "DIR", "",
        "Add to sys.path (repeatable, or comma-separated)",
        flags = ["pythonpath", "python-path", "pp"], uwsgi = ["pythonpath", "python-path", "pp"]),
    setting!("raw_env", Python, List, "KEY=VALUE", "",
        "Set an environment variable for the application (repeatable)",
        flags = ["env"], short = 'e', uwsgi = ["env"]),
    setting!("script_name", Python, Value, "PATH", "$SCRIPT_NAME",
        "Mount the application under this prefix",
        flags = ["script-name"]),
    setting!("forwarded_allow_ips", Python, Value, "IPS", "127.0.0.1,::1",
        "Trusted proxies: addresses and CIDR networks (comma-separated, `*` for all; $FORWARDED_ALLOW_IPS) whose SCRIPT_NAME, X-Forwarded-Proto/-Ssl and Forwarded headers are believed",
        flags = ["forwarded-allow-ips"]),
    setting!("forwarded_remote_addr", Python, Bool, "", "false",
        "From a trusted proxy, REMOTE_ADDR is the client its Forwarded: for= or X-Forwarded-For names (the rightmost address that is not a trusted proxy); the socket's peer is PEER_ADDR",
        flags = ["forwarded-remote-addr"]),
    setting!("allow_underscore_headers", Python, Bool, "", "false",
        "Keep request headers whose names contain underscores (dropped by default)",
        flags = ["allow-underscore-headers"]),
    // --- logging ----------------------------------------------------------------
    setting!("errorlog", Logging, Value, "FILE", "-",
        "Error log file (`-`: standard error)",
        flags = ["error-logfile", "log-file", "logto"], uwsgi = ["logto"]),
    setting!("loglevel", Logging, Value, "LEVEL", "info",
        "Log level: debug, info, warning, error, critical",
        flags = ["log-level"]),
    setting!("accesslog", Logging, Value, "FILE", "",
        "Access log file (`-`: standard output); one line per request, written off the request path",
        flags = ["access-logfile", "access-log"]),
    setting!("access_log_format", Logging, Value, "FORMAT", "combined",
        "gunicorn's %(atom)s format (h l u t r m U q H s B b f a T M D L p {header}i {header}o {var}e), or `json` for one typed object per line",
        flags = ["access-logformat", "access-log-format"]),
    setting!("disable_logging", Logging, Bool, "", "false",
        "Do not write the access log (uWSGI)",
        flags = ["disable-logging"], short = 'L', uwsgi = ["disable-logging"]),
    setting!("log_x_forwarded_for", Logging, Bool, "", "false",
        "The access log's address (h) is the X-Forwarded-For header's first address when there is one (uWSGI)",
        flags = ["log-x-forwarded-for"], uwsgi = ["log-x-forwarded-for"]),
    setting!("logconfig", Logging, Value, "FILE", "",
        "Configure Python logging from this file (logging.config.fileConfig) in each worker before the application loads",
        flags = ["log-config"]),
    setting!("logconfig_json", Logging, Value, "FILE", "",
        "Configure Python logging from this JSON file (logging.config.dictConfig) in each worker",
        flags = ["log-config-json"]),
    setting!("capture_output", Logging, Bool, "", "false",
        "Send the application's stdout and stderr to the error log",
        flags = ["capture-output"]),
    setting!("health_path", Logging, Value, "PATH", "",
        "Answer GET/HEAD on this path from the server itself, without Python: 200 while serving, 503 once the worker drains (for load balancers and Kubernetes probes)",
        flags = ["health-path"]),
    setting!("drain_delay", Logging, Value, "SECONDS", "0",
        "On a graceful stop, first answer --health-path with 503 for this long while still accepting and serving, so a balancer that checks it (HAProxy, Kubernetes) stops sending before the listener closes",
        flags = ["drain-delay"]),
    setting!("health_log", Logging, Bool, "", "false",
        "Write health-path requests to the access log too",
        flags = ["health-log"]),
    setting!("metrics_bind", Logging, Value, "ADDRESS", "",
        "Serve Prometheus metrics at http://ADDRESS/metrics from the master (TCP or unix:PATH), aggregated over all workers, without Python",
        flags = ["metrics-bind"]),
    setting!("stats", Logging, Value, "ADDRESS", "",
        "Serve uWSGI's stats JSON from the master (TCP or a unix socket path), as uWSGI's stats server, for uwsgitop and dashboards",
        flags = ["stats", "stats-server"], uwsgi = ["stats", "stats-server"]),
    setting!("stats_http", Logging, Bool, "", "false",
        "Answer --stats over HTTP (uWSGI's --stats-http)",
        flags = ["stats-http"], uwsgi = ["stats-http"]),
    // --- static files -------------------------------------------------------------
    setting!("static_map", Static, List, "PREFIX=DIR", "",
        "Serve the files of DIR at URL PREFIX from the I/O thread, never entering the application (repeatable; longest prefix first; a path with no file falls through to the application; DIR may be one file served at exactly PREFIX)",
        flags = ["static-map"], uwsgi = ["static-map"]),
    setting!("static_index", Static, List, "NAME", "",
        "For a directory under a --static-map, serve this file in it (repeatable, tried in order; no listings ever)",
        flags = ["static-index"], uwsgi = ["static-index"]),
    setting!("static_expires", Static, Value, "SECONDS", "0",
        "Add `Cache-Control: max-age=SECONDS` to every static file (0: none); one age for all, unlike uWSGI's regex-based --static-expires* options, whose file keys are not read",
        flags = ["static-expires"]),
    // --- compatibility ------------------------------------------------------------
    setting!("enable_threads", Compat, IGNORED_FLAG, "", "",
        "uWSGI: Python threads are always enabled here",
        flags = ["enable-threads"], short = 'T', uwsgi = ["enable-threads"]),
    setting!("single_interpreter", Compat, IGNORED_FLAG, "", "",
        "uWSGI: there is always one interpreter per process",
        flags = ["single-interpreter"], uwsgi = ["single-interpreter"]),
    setting!("lazy_apps", Compat, IGNORED_FLAG, "", "",
        "uWSGI: each worker loads the application itself unless --preload",
        flags = ["lazy-apps", "lazy"], uwsgi = ["lazy-apps", "lazy"]),
    setting!("die_on_term", Compat, IGNORED_FLAG, "", "",
        "uWSGI: TERM always stops gracefully here (HUP reloads)",
        flags = ["die-on-term"], uwsgi = ["die-on-term"]),
    setting!("need_app", Compat, IGNORED_FLAG, "", "",
        "uWSGI: an application that does not load always stops the server (exit 4)",
        flags = ["need-app"], uwsgi = ["need-app"]),
    setting!("no_orphans", Compat, IGNORED_FLAG, "", "",
        "uWSGI: workers always die with their master",
        flags = ["no-orphans"], uwsgi = ["no-orphans"]),
    setting!("thunder_lock", Compat, IGNORED_FLAG, "", "",
        "uWSGI: accepts are not serialized; each worker's I/O thread accepts",
        flags = ["thunder-lock"], uwsgi = ["thunder-lock"]),
    setting!("harakiri_verbose", Compat, IGNORED_FLAG, "", "",
        "uWSGI: a timed-out worker's Python stacks are always logged",
        flags = ["harakiri-verbose"], uwsgi = ["harakiri-verbose"]),
    setting!("auto_procname", Compat, IGNORED_FLAG, "", "",
        "uWSGI: processes are always named (wsgi-server: master / worker N)",
        flags = ["auto-procname"], uwsgi = ["auto-procname"]),
    setting!("memory_report", Compat, IGNORED_FLAG, "", "",
        "uWSGI: see --reload-on-rss",
        flags = ["memory-report"], uwsgi = ["memory-report"]),
    setting!("plugins", Compat, IGNORED_VALUE, "NAME", "",
        "uWSGI: the Python runtime is built in",
        flags = ["plugins", "plugin"], uwsgi = ["plugins", "plugin"]),
    setting!("post_buffering", Compat, IGNORED_VALUE, "BYTES", "",
        "uWSGI: request bodies are read as the application asks",
        flags = ["post-buffering"], uwsgi = ["post-buffering"]),
    setting!("worker_tmp_dir", Compat, IGNORED_VALUE, "DIR", "",
        "gunicorn: workers report liveness through shared memory, not files",
        flags = ["worker-tmp-dir"]),
];

/// The setting called `name` (canonical).
pub fn by_name(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.name == name)
}

/// How a long flag was matched.
#[derive(Debug, Clone, Copy)]
pub struct FlagMatch {
    /// The setting.
    pub setting: &'static Setting,
    /// Whether it was one of its negations.
    pub negated: bool,
}

/// The setting behind long flag `flag` (without `--`): our flags, then
/// uWSGI's option names.
pub fn by_flag(flag: &str) -> Option<FlagMatch> {
    let positive =
        |setting: &&'static Setting| setting.flags.contains(&flag) || setting.uwsgi.contains(&flag);
    if let Some(setting) = SETTINGS.iter().find(positive) {
        return Some(FlagMatch {
            setting,
            negated: false,
        });
    }
    SETTINGS
        .iter()
        .find(|setting| setting.negations.contains(&flag))
        .map(|setting| FlagMatch {
            setting,
            negated: true,
        })
}

/// The setting behind short flag `-c`.
pub fn by_short(short: char) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.short == Some(short))
}

/// The setting behind a uWSGI option name (ini/json key, `UWSGI_*`).
pub fn by_uwsgi(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.uwsgi.contains(&key))
}

/// The setting behind a `gunicorn.conf.py` name (canonical or alias).
pub fn by_py_name(name: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|setting| setting.name == name || setting.py_names.contains(&name))
}

/// Every long flag, for suggestions.
pub fn all_flags() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().flat_map(|setting| {
        setting
            .flags
            .iter()
            .chain(setting.uwsgi)
            .chain(setting.negations)
            .copied()
    })
}

/// The closest of `candidates` to `word` (Levenshtein distance, at most a
/// third of the word), for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal-string-alignment distance: Levenshtein plus the swap of two
/// neighbours, the commonest typo (`--bnid`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_flags_and_shorts_are_unique() {
        let mut names = HashSet::new();
        let mut flags = HashSet::new();
        let mut shorts = HashSet::new();
        let mut uwsgi = HashSet::new();
        for setting in SETTINGS {
            assert!(names.insert(setting.name), "name {}", setting.name);
            for flag in setting.flags.iter().chain(setting.negations) {
                assert!(flags.insert(*flag), "flag --{flag}");
            }
            for key in setting.uwsgi {
                assert!(uwsgi.insert(*key), "uwsgi {key}");
            }
            if let Some(short) = setting.short {
                assert!(shorts.insert(short), "-{short}");
            }
        }
        // A uWSGI name that is also a flag must mean the same setting.
        for setting in SETTINGS {
            for key in setting.uwsgi {
                let found = by_flag(key).expect("flag");
                assert_eq!(found.setting.name, setting.name, "--{key}");
            }
        }
    }

    #[test]
    fn gunicorn_owns_the_short_flags() {
        assert_eq!(by_short('b').unwrap().name, "bind");
        assert_eq!(by_short('p').unwrap().name, "pidfile");
        assert_eq!(by_short('w').unwrap().name, "workers");
        assert_eq!(by_short('c').unwrap().name, "config");
        assert_eq!(by_short('k').unwrap().name, "worker_class");
        assert_eq!(by_short('e').unwrap().name, "raw_env");
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("wokers", all_flags()), Some("workers"));
        assert_eq!(closest("bnid", all_flags()), Some("bind"));
        assert_eq!(closest("zzzzzzzzzzzz", all_flags()), None);
    }
}

#[cfg(test)]
mod default_tests {
    use super::by_name;

    /// The printed defaults are the codecs' real ones.
    #[test]
    fn limit_defaults_match_the_codecs() {
        let default = |name: &str| by_name(name).unwrap().default.parse::<usize>().unwrap();
        assert_eq!(
            default("limit_request_line"),
            wsgi_http::DEFAULT_MAX_REQUEST_LINE
        );
        assert_eq!(
            default("limit_request_fields"),
            wsgi_http::DEFAULT_MAX_HEADERS
        );
        assert_eq!(
            default("limit_request_field_size"),
            wsgi_http::DEFAULT_MAX_FIELD_SIZE
        );
        assert_eq!(default("buffer_size"), wsgi_http::DEFAULT_MAX_HEAD_SIZE);
    }
}
