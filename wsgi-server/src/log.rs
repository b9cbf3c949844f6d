//! The server's logs: lines are queued to a writer thread, so neither the I/O
//! thread nor an application thread ever waits on a terminal, a pipe or a
//! disk (and never on Python). Format as gunicorn's:
//! `[2026-11-21 15:27:55 +0000] [1234] [INFO] message`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvError, RecvTimeoutError, SendError, Sender, SyncSender,
    TrySendError,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// A failure that stops the server (gunicorn's `critical`).
    Critical = 4,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Parses gunicorn's `--log-level` names.
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

enum Message {
    Line(String),
    Reopen,
    Flush(SyncSender<()>),
}

enum Sink {
    /// Written by the calling thread: the master, which must own no threads
    /// when it forks, and whose few lines are off every request path.
    Direct(Option<std::fs::File>),
    /// Queued to the writer thread (workers).
    Queued(QueueSender<Message>),
}

/// The process's logger (see [`logger`]).
pub struct Logger {
    sink: Mutex<Sink>,
    path: Option<PathBuf>,
    level: AtomicU8,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Logger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Lines waiting for the writer; beyond this, lines are counted and dropped
/// rather than let a stalled log stall requests.
const QUEUE_LINES: usize = 16 * 1024;

/// How often the writer thread calls the idle hook.
const IDLE_HOOK_EVERY: Duration = Duration::from_secs(1);

static IDLE_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets what the writer thread of each serving process calls about once a
/// second, from outside every request path: the binary returns memory its
/// allocator keeps (mimalloc gives back freed pages only from within later
/// allocator calls, so a worker that went quiet after 128 connections kept
/// ~2 MiB it no longer used). Set before the writer thread starts; the
/// first call wins.
pub fn set_idle_hook(hook: fn()) {
    let _ = IDLE_HOOK.set(hook);
}

fn open_log(path: &Option<PathBuf>) -> Option<std::fs::File> {
    path.as_ref()
        .and_then(|path| OpenOptions::new().create(true).append(true).open(path).ok())
}

/// Sets the log up in direct mode; `path` `None` or `-` means standard
/// error. Later calls return the logger made by the first.
pub fn init(path: Option<PathBuf>, level: Level) -> &'static Logger {
    LOGGER.get_or_init(|| {
        let path = path.filter(|path| path.as_os_str() != "-");
        Logger {
            sink: Mutex::new(Sink::Direct(open_log(&path))),
            path,
            level: AtomicU8::new(level as u8),
            dropped: AtomicU64::new(0),
        }
    })
}

/// The process's logger, on standard error at `Info` if nobody called [`init`].
pub fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        sink: Mutex::new(Sink::Direct(None)),
        path: None,
        level: AtomicU8::new(Level::Info as u8),
        dropped: AtomicU64::new(0),
    })
}

impl Logger {
    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves writing to a thread of its own, so request paths never wait on
    /// the log. Call in each serving process (after any fork).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start_writer_thread(&self) -> std::io::Result<()> {
        let (sender, receiver) = queue(QUEUE_LINES);
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("wsgi-log".into())
            .spawn(move || write_lines(receiver, path))?;
        *self.sink() = Sink::Queued(sender);
        Ok(())
    }

    /// Where the log goes (`None`: standard error).
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

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

    /// Writes text as it is (tracebacks, `wsgi.errors`).
    pub fn raw(&self, text: String) {
        let mut sink = self.sink();
        match &mut *sink {
            Sink::Direct(file) => {
                let _ = match file {
                    Some(file) => file.write_all(text.as_bytes()),
                    None => io::stderr().lock().write_all(text.as_bytes()),
                };
            }
            Sink::Queued(sender) => match sender.try_send(Message::Line(text)) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// Reopens the log file (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        let mut sink = self.sink();
        match &mut *sink {
            Sink::Direct(file) => *file = open_log(&self.path),
            Sink::Queued(sender) => {
                let _ = sender.send(Message::Reopen);
            }
        }
    }

    /// Waits until every queued line is written (before exit).
    pub fn flush(&self) {
        let sender = match &*self.sink() {
            Sink::Direct(_) => return,
            Sink::Queued(sender) => sender.clone(),
        };
        let (done, wait) = sync_channel(1);
        if sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// A queue to a writer thread that holds at most `bound` messages queued
/// with [`QueueSender::try_send`], and memory only for those waiting:
/// std's `sync_channel(bound)` allocates and initialises all its slots at
/// once (16K lines: 512 KiB in every worker, half of its Rust heap at
/// rest), where the unbounded channel allocates blocks of 31 as messages
/// wait. Not for the access log: a message costs ~400 instructions more
/// than through `sync_channel` (callgrind, a line per request).
pub(crate) fn queue<T>(bound: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let (sender, receiver) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            sender,
            queued: Arc::clone(&queued),
            bound,
        },
        QueueReceiver { receiver, queued },
    )
}

/// The sending side of a [`queue`].
#[derive(Debug)]
pub(crate) struct QueueSender<T> {
    sender: Sender<T>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            sender: self.sender.clone(),
            queued: Arc::clone(&self.queued),
            bound: self.bound,
        }
    }
}

impl<T> QueueSender<T> {
    /// Queues `value` unless `bound` messages wait (`Full`) or the receiver
    /// is gone (`Disconnected`). Never waits.
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.bound {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(TrySendError::Full(value));
        }
        self.sender.send(value).map_err(|SendError(value)| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            TrySendError::Disconnected(value)
        })
    }

    /// Queues `value` however many wait (reopen and flush requests, which
    /// must not be lost behind a full queue). Never waits.
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.sender.send(value).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

/// The receiving side of a [`queue`].
#[derive(Debug)]
pub(crate) struct QueueReceiver<T> {
    receiver: Receiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> QueueReceiver<T> {
    fn took(&self, value: T) -> T {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        value
    }

    /// The next message, waiting for it.
    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        self.receiver.recv().map(|value| self.took(value))
    }

    /// The next message, waiting up to `timeout`.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.receiver
            .recv_timeout(timeout)
            .map(|value| self.took(value))
    }
}

/// The error log as runtimes see it (`wsgi.errors`, tracebacks).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorLog;

impl wsgi_core::ErrorLog for ServerErrorLog {
    fn write(&self, text: &str) {
        logger().raw(text.to_owned());
    }

    fn error(&self, message: &str) {
        logger().log(Level::Error, format_args!("{}", message.trim_end()));
    }
}

/// A shared handle to the error log.
pub fn error_log() -> Arc<dyn wsgi_core::ErrorLog> {
    Arc::new(ServerErrorLog)
}

fn write_lines(receiver: QueueReceiver<Message>, path: Option<PathBuf>) {
    let mut file = open_log(&path);
    let hook = IDLE_HOOK.get().copied();
    let mut next_hook = Instant::now() + IDLE_HOOK_EVERY;
    loop {
        let message = match hook {
            None => match receiver.recv() {
                Ok(message) => message,
                Err(_) => return,
            },
            Some(hook) => {
                let now = Instant::now();
                if now >= next_hook {
                    hook();
                    next_hook = now + IDLE_HOOK_EVERY;
                }
                match receiver.recv_timeout(next_hook.saturating_duration_since(now)) {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match message {
            Message::Line(line) => {
                let written = match file.as_mut() {
                    Some(file) => file.write_all(line.as_bytes()),
                    None => io::stderr().lock().write_all(line.as_bytes()),
                };
                drop(written);
            }
            Message::Reopen => file = open_log(&path),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_at_most_its_bound_and_frees_a_place_per_message_taken() {
        let (sender, receiver) = queue::<u32>(2);
        assert!(sender.try_send(1).is_ok());
        assert!(sender.clone().try_send(2).is_ok());
        assert!(matches!(sender.try_send(3), Err(TrySendError::Full(3))));
        // Control messages pass a full queue, and count.
        assert!(sender.send(4).is_ok());
        assert_eq!(receiver.recv(), Ok(1));
        assert!(matches!(sender.try_send(5), Err(TrySendError::Full(5))));
        assert_eq!(receiver.recv(), Ok(2));
        assert_eq!(receiver.recv_timeout(Duration::from_secs(1)), Ok(4));
        assert!(sender.try_send(6).is_ok());
        assert_eq!(receiver.recv(), Ok(6));
        assert!(receiver.recv_timeout(Duration::from_millis(1)).is_err());
        drop(receiver);
        assert!(matches!(
            sender.try_send(7),
            Err(TrySendError::Disconnected(7))
        ));
        assert!(sender.send(8).is_err());
        assert_eq!(sender.queued.load(Ordering::Relaxed), 0);
    }
}
