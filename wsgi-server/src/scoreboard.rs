//! Per-worker state shared between the master and its workers, in an
//! anonymous shared mapping made before the first fork: each worker writes
//! its own slot (ready, requests served, when each application thread
//! started its current request), the master reads them to enforce timeouts
//! and to know why a worker is leaving.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Application threads a slot can track; more threads share the last stamp.
pub const MAX_THREADS: usize = 256;

/// Why a worker stops on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Retire {
    /// Not retiring.
    No = 0,
    /// `--max-requests` reached.
    MaxRequests = 1,
    /// `--max-worker-lifetime` reached.
    Lifetime = 2,
    /// The master asked (RSS, reload, fewer workers, stop).
    Asked = 3,
    /// `--reload`: a loaded source file changed.
    SourceChanged = 4,
    /// A request ran past `--timeout` and did not return.
    StuckRequest = 5,
}

impl Retire {
    fn from_u32(value: u32) -> Retire {
        match value {
            1 => Retire::MaxRequests,
            2 => Retire::Lifetime,
            3 => Retire::Asked,
            4 => Retire::SourceChanged,
            5 => Retire::StuckRequest,
            _ => Retire::No,
        }
    }
}

/// Upper bounds (seconds) of the request-duration and queue-wait histogram
/// buckets; a last, unbounded bucket follows (Prometheus' `+Inf`).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram in shared memory: counts per bucket (not cumulative) and
/// the sum of the observations in microseconds.
#[repr(C)]
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket; the last one is `+Inf`.
    pub buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of observations, in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, duration: std::time::Duration) {
        let seconds = duration.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }
}

/// What a worker counts about its requests, read by the master for
/// `--metrics-bind` and `--stats` (and added to its totals when the worker
/// leaves, so a total never goes backwards).
#[repr(C)]
#[derive(Debug)]
pub struct RequestCounters {
    /// Responses by status class: index 0 for none sent (the client left
    /// first), 1 to 5 for 1xx to 5xx.
    pub by_class: [AtomicU64; 6],
    /// Request body bytes read.
    pub bytes_in: AtomicU64,
    /// Response body bytes sent.
    pub bytes_out: AtomicU64,
    /// From the head's arrival to the last byte sent.
    pub duration: Histogram,
    /// Waiting for an application thread (observed as a thread takes it).
    pub queue_wait: Histogram,
    /// Requests between their head and their end.
    pub in_flight: AtomicU64,
    /// Requests parsed and waiting for an application thread.
    pub queued: AtomicU64,
    /// Requests whose application raised (uWSGI's `exceptions`).
    pub exceptions: AtomicU64,
    /// Requests stopped by `--timeout` (uWSGI's `harakiri_count`).
    pub timeouts: AtomicU64,
    /// Log lines dropped because a writer fell behind.
    pub log_dropped: AtomicU64,
}

impl RequestCounters {
    fn new() -> RequestCounters {
        RequestCounters {
            by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            duration: Histogram::new(),
            queue_wait: Histogram::new(),
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        for counter in self.by_class.iter().chain([
            &self.bytes_in,
            &self.bytes_out,
            &self.in_flight,
            &self.queued,
            &self.exceptions,
            &self.timeouts,
            &self.log_dropped,
        ]) {
            counter.store(0, Ordering::Relaxed);
        }
        self.duration.reset();
        self.queue_wait.reset();
    }

    /// Counts a finished request.
    pub fn count(
        &self,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        total: std::time::Duration,
        app_error: bool,
    ) {
        let class = usize::from(status / 100).min(5);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        }
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.duration.observe(total);
        if app_error {
            self.exceptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests counted, whatever their status.
    pub fn requests(&self) -> u64 {
        self.by_class
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed))
            .sum()
    }
}

/// One worker's slot.
#[repr(C)]
#[derive(Debug)]
pub struct WorkerSlot {
    /// The worker's pid, 0 when the slot is free.
    pub pid: AtomicI32,
    /// 1 once the application is loaded and the worker accepts.
    pub ready: AtomicU32,
    /// Why the worker is leaving on its own ([`Retire`]).
    pub retiring: AtomicU32,
    /// Requests completed.
    pub served: AtomicU64,
    /// Retire after this many requests (0: never); set by the worker itself.
    pub max_requests: AtomicU64,
    /// Per application thread: when (ms since the epoch) its current request
    /// started; 0 when idle.
    pub busy_since: [AtomicU64; MAX_THREADS],
    /// Per application thread: requests it completed (uWSGI's `cores[]`).
    pub thread_served: [AtomicU64; MAX_THREADS],
    /// Application threads this worker runs.
    pub threads: AtomicU32,
    /// When the worker started (ms since the epoch).
    pub started_millis: AtomicU64,
    /// Counters of its requests.
    pub counters: RequestCounters,
}

impl WorkerSlot {
    /// A fresh slot (for a process without a master).
    pub fn new() -> WorkerSlot {
        WorkerSlot {
            pid: AtomicI32::new(0),
            ready: AtomicU32::new(0),
            retiring: AtomicU32::new(0),
            served: AtomicU64::new(0),
            max_requests: AtomicU64::new(0),
            busy_since: std::array::from_fn(|_| AtomicU64::new(0)),
            thread_served: std::array::from_fn(|_| AtomicU64::new(0)),
            threads: AtomicU32::new(0),
            started_millis: AtomicU64::new(now_millis()),
            counters: RequestCounters::new(),
        }
    }

    fn reset(&self, pid: i32) {
        self.ready.store(0, Ordering::Relaxed);
        self.retiring.store(0, Ordering::Relaxed);
        self.served.store(0, Ordering::Relaxed);
        self.max_requests.store(0, Ordering::Relaxed);
        for stamp in self.busy_since.iter().chain(&self.thread_served) {
            stamp.store(0, Ordering::Relaxed);
        }
        self.threads.store(0, Ordering::Relaxed);
        self.started_millis.store(now_millis(), Ordering::Relaxed);
        self.counters.reset();
        self.pid.store(pid, Ordering::Release);
    }

    /// Marks application thread `index` busy from now.
    pub fn request_started(&self, index: usize) {
        self.busy_since[index.min(MAX_THREADS - 1)].store(now_millis(), Ordering::Relaxed);
    }

    /// Marks application thread `index` idle and counts the request;
    /// returns true when that count reaches `max_requests`.
    pub fn request_finished(&self, index: usize) -> bool {
        self.busy_since[index.min(MAX_THREADS - 1)].store(0, Ordering::Relaxed);
        self.thread_served[index.min(MAX_THREADS - 1)].fetch_add(1, Ordering::Relaxed);
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.max_requests.load(Ordering::Relaxed);
        limit > 0 && served == limit
    }

    /// When application thread `index`'s current request started (ms
    /// since the epoch), 0 when idle.
    pub fn busy_stamp(&self, index: usize) -> u64 {
        self.busy_since[index.min(MAX_THREADS - 1)].load(Ordering::Relaxed)
    }

    /// Requests completed by this worker.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The longest-running current request, in milliseconds.
    pub fn longest_busy_millis(&self) -> u64 {
        let now = now_millis();
        self.busy_since
            .iter()
            .map(|stamp| stamp.load(Ordering::Relaxed))
            .filter(|&since| since != 0)
            .map(|since| now.saturating_sub(since))
            .max()
            .unwrap_or(0)
    }

    /// Records why the worker leaves; the first reason wins.
    pub fn retire(&self, why: Retire) {
        let _ = self.retiring.compare_exchange(
            Retire::No as u32,
            why as u32,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Why the worker is leaving.
    pub fn retiring(&self) -> Retire {
        Retire::from_u32(self.retiring.load(Ordering::Acquire))
    }

    /// Application threads busy with a request now.
    pub fn busy_threads(&self) -> usize {
        let threads = (self.threads.load(Ordering::Relaxed) as usize).min(MAX_THREADS);
        self.busy_since[..threads]
            .iter()
            .filter(|stamp| stamp.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Whether the worker is up and accepting.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == 1
    }
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot::new()
    }
}

/// Milliseconds since the epoch.
pub fn now_millis() -> u64 {
    let (seconds, nanos) = crate::date::unix_time();
    seconds * 1000 + u64::from(nanos / 1_000_000)
}

/// The shared mapping of every slot.
#[derive(Debug)]
pub struct Scoreboard {
    slots: &'static [WorkerSlot],
}

impl Scoreboard {
    /// Maps `capacity` slots shared with every process forked afterwards.
    ///
    /// # Errors
    /// `mmap` failed.
    pub fn new(capacity: usize) -> io::Result<Scoreboard> {
        let bytes = capacity * std::mem::size_of::<WorkerSlot>();
        // SAFETY: an anonymous shared mapping; the result is checked.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is zero-filled, suitably aligned (page
        // aligned), `bytes` long, and never unmapped; all-zero bytes are a
        // valid `WorkerSlot` (atomics of zero).
        let slots = unsafe { std::slice::from_raw_parts(pointer.cast::<WorkerSlot>(), capacity) };
        Ok(Scoreboard { slots })
    }

    /// Takes a free slot for a worker about to start; its index.
    pub fn claim(&self) -> Option<usize> {
        let index = self
            .slots
            .iter()
            .position(|slot| slot.pid.load(Ordering::Acquire) == 0)?;
        // A placeholder pid until the fork tells the real one.
        self.slots[index].reset(-1);
        Some(index)
    }

    /// Records the pid of the worker in slot `index`.
    pub fn set_pid(&self, index: usize, pid: i32) {
        self.slots[index].pid.store(pid, Ordering::Release);
    }

    /// Frees slot `index`.
    pub fn release(&self, index: usize) {
        self.slots[index].pid.store(0, Ordering::Release);
    }

    /// Slot `index`.
    pub fn slot(&self, index: usize) -> &'static WorkerSlot {
        &self.slots[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_across_fork() {
        let board = Scoreboard::new(4).unwrap();
        let index = board.claim().unwrap();
        let slot = board.slot(index);
        // SAFETY: the child only touches atomics in the shared mapping and
        // exits with _exit, running no destructors.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            slot.request_started(3);
            slot.request_finished(3);
            slot.retire(Retire::MaxRequests);
            slot.retire(Retire::Lifetime);
            // SAFETY: terminating the forked child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(slot.served(), 1);
        assert_eq!(slot.retiring(), Retire::MaxRequests);
        assert_eq!(slot.longest_busy_millis(), 0);
        assert_ne!(board.claim(), Some(index));
        board.release(index);
        assert_eq!(board.claim(), Some(index));
    }
}
