//! A serving process's stop conditions: signals (TERM and INT graceful, QUIT
//! immediate, USR1 reopens logs) and recycling (`--max-requests` with its
//! jitter, `--max-worker-lifetime`), recorded in the scoreboard so the
//! master logs why the worker left.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::scoreboard::{Retire, WorkerSlot};
use crate::stop::Stop;

/// When a worker retires on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recycle {
    /// After this many requests (0: never).
    pub max_requests: u64,
    /// After this long.
    pub max_lifetime: Option<Duration>,
}

/// A runtime's hook run once at a stop's moment, off the I/O thread: it
/// may wait for its interpreter's lock.
pub type OnInterrupt = Box<dyn FnOnce() + Send>;

/// gunicorn's worker hooks around a stop.
#[derive(Default)]
pub struct StopHooks {
    /// INT or QUIT arrived (`worker_int`).
    pub interrupt: Option<OnInterrupt>,
    /// A request outlived `--timeout` and its grace; the worker leaves
    /// (`worker_abort`).
    pub abort: Option<OnInterrupt>,
}

impl std::fmt::Debug for StopHooks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StopHooks")
            .field("interrupt", &self.interrupt.is_some())
            .field("abort", &self.abort.is_some())
            .finish()
    }
}

pub use crate::stop::{RETIRE_NOW, SOURCE_CHANGED, STUCK_REQUEST};

/// Resolves when the process should stop, and how.
pub async fn wait_for_stop(
    slot: &'static WorkerSlot,
    recycle: Recycle,
    mut hooks: StopHooks,
) -> Stop {
    slot.max_requests
        .store(recycle.max_requests, std::sync::atomic::Ordering::Relaxed);
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
    ) else {
        crate::log!(Error, "cannot install signal handlers");
        return Stop::Immediate;
    };
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = term.recv() => return Stop::Graceful,
            _ = int.recv() => {
                interrupted(hooks.interrupt.take()).await;
                return Stop::Graceful;
            }
            _ = quit.recv() => {
                interrupted(hooks.interrupt.take()).await;
                return Stop::Immediate;
            }
            _ = usr1.recv() => {
                crate::log::logger().reopen();
                if let Some(log) = crate::ops::access_log::global() {
                    log.reopen();
                }
            }
            _ = RETIRE_NOW.notified() => {
                slot.retire(Retire::MaxRequests);
                return Stop::Graceful;
            }
            _ = STUCK_REQUEST.notified() => {
                slot.retire(Retire::StuckRequest);
                interrupted(hooks.abort.take()).await;
                return Stop::Graceful;
            }
            _ = SOURCE_CHANGED.notified() => {
                slot.retire(Retire::SourceChanged);
                return Stop::Graceful;
            }
            _ = tick.tick() => {
                if recycle.max_requests > 0 && slot.served() >= recycle.max_requests {
                    slot.retire(Retire::MaxRequests);
                    return Stop::Graceful;
                }
                if recycle.max_lifetime.is_some_and(|lifetime| started.elapsed() >= lifetime) {
                    slot.retire(Retire::Lifetime);
                    return Stop::Graceful;
                }
            }
        }
    }
}

async fn interrupted(hook: Option<OnInterrupt>) {
    if let Some(hook) = hook {
        let _ = tokio::task::spawn_blocking(hook).await;
    }
}

/// `--reload`: a thread that looks at the files `list` names once a second
/// and wakes [`SOURCE_CHANGED`] when one is modified, created or removed.
/// It runs off the I/O thread, since listing Python's modules takes the
/// interpreter's lock.
///
/// # Errors
/// The thread could not be started.
pub fn watch_sources(
    list: impl Fn() -> Vec<std::path::PathBuf> + Send + 'static,
) -> std::io::Result<()> {
    use std::collections::HashMap;
    use std::time::SystemTime;
    let stamp = |path: &std::path::Path| -> Option<SystemTime> {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    std::thread::Builder::new()
        .name("wsgi-reload".into())
        .spawn(move || {
            let mut seen: HashMap<std::path::PathBuf, Option<SystemTime>> = HashMap::new();
            loop {
                for path in list() {
                    let now = stamp(&path);
                    match seen.get(&path) {
                        Some(before) if *before != now => {
                            crate::log!(Info, "Reloading: {} changed", path.display());
                            SOURCE_CHANGED.notify_one();
                            return;
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(path, now);
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map(drop)
}
