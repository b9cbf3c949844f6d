//! The server's logs: lines are queued to a writer thread, so neither the I/O
//! thread nor an application thread ever waits on a terminal, a pipe or a
//! disk (and never on Python). Format as gunicorn's:
//! `[2026-11-21 15:27:55 +0000] [1234] [INFO] message`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Details for debugging.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something odd that was handled.
    Warning = 2,
    /// A failure.
    Error = 3,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }

    /// Parses gunicorn's `--log-level` names.
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" | "critical" => Some(Level::Error),
            _ => None,
        }
    }
}

enum Message {
    Line(String),
    Reopen,
    Flush(SyncSender<()>),
}

/// The process's logger (see [`logger`]).
#[derive(Debug)]
pub struct Logger {
    sender: SyncSender<Message>,
    level: AtomicU8,
    dropped: AtomicU64,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Lines waiting for the writer; beyond this, lines are counted and dropped
/// rather than let a stalled log stall requests.
const QUEUE_LINES: usize = 16 * 1024;

/// Starts the writer thread; `path` `None` or `-` means standard error.
/// Later calls return the logger made by the first.
pub fn init(path: Option<PathBuf>, level: Level) -> &'static Logger {
    LOGGER.get_or_init(|| {
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        let path = path.filter(|path| path.as_os_str() != "-");
        std::thread::Builder::new()
            .name("wsgi-log".into())
            .spawn(move || write_lines(receiver, path))
            .expect("spawning the log thread");
        Logger {
            sender,
            level: AtomicU8::new(level as u8),
            dropped: AtomicU64::new(0),
        }
    })
}

/// The process's logger, started on standard error at `Info` if nobody called [`init`].
pub fn logger() -> &'static Logger {
    LOGGER.get().unwrap_or_else(|| init(None, Level::Info))
}

impl Logger {
    /// Logs a formatted line at `level`.
    pub fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        if (level as u8) < self.level.load(Ordering::Relaxed) {
            return;
        }
        let line = format!(
            "[{}] [{}] [{}] {}\n",
            timestamp(),
            std::process::id(),
            level.as_str(),
            message
        );
        self.raw(line);
    }

    /// Queues text as it is (tracebacks, `wsgi.errors`).
    pub fn raw(&self, text: String) {
        match self.sender.try_send(Message::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Reopens the log file (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.sender.try_send(Message::Reopen);
    }

    /// Waits until every queued line is written (before exit).
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// The error log as runtimes see it (`wsgi.errors`, tracebacks).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorLog;

impl wsgi_core::ErrorLog for ServerErrorLog {
    fn write(&self, text: &str) {
        logger().raw(text.to_owned());
    }
}

/// A shared handle to the error log.
pub fn error_log() -> Arc<dyn wsgi_core::ErrorLog> {
    Arc::new(ServerErrorLog)
}

fn write_lines(receiver: Receiver<Message>, path: Option<PathBuf>) {
    let open = |path: &PathBuf| -> Option<std::fs::File> {
        OpenOptions::new().create(true).append(true).open(path).ok()
    };
    let mut file = path.as_ref().and_then(open);
    for message in receiver {
        match message {
            Message::Line(line) => {
                let written = match file.as_mut() {
                    Some(file) => file.write_all(line.as_bytes()),
                    None => io::stderr().lock().write_all(line.as_bytes()),
                };
                drop(written);
            }
            Message::Reopen => file = path.as_ref().and_then(open),
            Message::Flush(done) => {
                let _ = io::stderr().flush();
                let _ = done.send(());
            }
        }
    }
}

fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let date = crate::date::format_imf_fixdate(now);
    // "Sun, 06 Nov 1994 08:49:37 GMT" -> "1994-Nov-06 08:49:37 +0000" would
    // read oddly; build the ISO form from the same civil date instead.
    let day = std::str::from_utf8(&date[5..7]).unwrap_or("01");
    let month = match &date[8..11] {
        b"Jan" => "01",
        b"Feb" => "02",
        b"Mar" => "03",
        b"Apr" => "04",
        b"May" => "05",
        b"Jun" => "06",
        b"Jul" => "07",
        b"Aug" => "08",
        b"Sep" => "09",
        b"Oct" => "10",
        b"Nov" => "11",
        _ => "12",
    };
    let year = std::str::from_utf8(&date[12..16]).unwrap_or("1970");
    let time = std::str::from_utf8(&date[17..25]).unwrap_or("00:00:00");
    format!("{year}-{month}-{day} {time} +0000")
}

/// Logs at a level: `log!(Info, "listening at {}", address)`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::logger().log($crate::log::Level::$level, format_args!($($arg)*))
    };
}
