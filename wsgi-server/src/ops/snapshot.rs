//! A point-in-time view of the whole server, made by the master from the
//! scoreboard (live workers) and its own totals (workers that left), and
//! rendered by `metrics` (Prometheus) and `stats` (uWSGI's JSON).

use std::sync::atomic::Ordering;

use crate::scoreboard::{Histogram, RequestCounters, BUCKETS};

/// A histogram's counts (per bucket, not cumulative) and sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Per bucket of [`BUCKETS`], then `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observations, microseconds.
    pub sum_micros: u64,
}

impl HistogramCounts {
    fn add(&mut self, histogram: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len() + 1];
        }
        for (total, bucket) in self.buckets.iter_mut().zip(&histogram.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        self.sum_micros += histogram.sum_micros.load(Ordering::Relaxed);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Request counters summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterTotals {
    /// Responses by status class (0: none sent, 1..5: 1xx..5xx).
    pub by_class: [u64; 6],
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Request durations.
    pub duration: HistogramCounts,
    /// Queue waits.
    pub queue_wait: HistogramCounts,
    /// Requests whose application raised.
    pub exceptions: u64,
    /// Requests stopped by `--timeout`.
    pub timeouts: u64,
    /// Log lines dropped.
    pub log_dropped: u64,
}

impl CounterTotals {
    /// Adds one worker's counters.
    pub fn add(&mut self, counters: &RequestCounters) {
        for (total, counter) in self.by_class.iter_mut().zip(&counters.by_class) {
            *total += counter.load(Ordering::Relaxed);
        }
        self.bytes_in += counters.bytes_in.load(Ordering::Relaxed);
        self.bytes_out += counters.bytes_out.load(Ordering::Relaxed);
        self.duration.add(&counters.duration);
        self.queue_wait.add(&counters.queue_wait);
        self.exceptions += counters.exceptions.load(Ordering::Relaxed);
        self.timeouts += counters.timeouts.load(Ordering::Relaxed);
        self.log_dropped += counters.log_dropped.load(Ordering::Relaxed);
    }

    /// Adds another total.
    pub fn merge(&mut self, other: &CounterTotals) {
        for (total, more) in self.by_class.iter_mut().zip(other.by_class) {
            *total += more;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        for (mine, theirs) in [
            (&mut self.duration, &other.duration),
            (&mut self.queue_wait, &other.queue_wait),
        ] {
            if mine.buckets.is_empty() {
                mine.buckets = vec![0; BUCKETS.len() + 1];
            }
            for (total, more) in mine.buckets.iter_mut().zip(&theirs.buckets) {
                *total += more;
            }
            mine.sum_micros += theirs.sum_micros;
        }
        self.exceptions += other.exceptions;
        self.timeouts += other.timeouts;
        self.log_dropped += other.log_dropped;
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

/// One live worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerView {
    /// Its number (1, 2, ...).
    pub number: usize,
    /// Its pid.
    pub pid: i32,
    /// Accepting requests.
    pub accepting: bool,
    /// Its counters.
    pub counters: CounterTotals,
    /// Requests since the previous stats read (uWSGI's `delta_requests`).
    pub delta_requests: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Requests waiting for a thread now.
    pub queued: u64,
    /// Application threads, and how many are busy.
    pub threads: usize,
    /// Busy application threads.
    pub busy: usize,
    /// Requests completed per application thread.
    pub thread_requests: Vec<u64>,
    /// Resident and virtual memory, bytes.
    pub rss: u64,
    /// Virtual memory, bytes.
    pub vsz: u64,
    /// When it started (seconds since the epoch).
    pub started: u64,
    /// Workers started in this slot's place before it (uWSGI's `respawn_count`).
    pub respawns: u64,
}

/// One listening socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerView {
    /// `127.0.0.1:8000`, `unix:/run/app.sock`.
    pub name: String,
    /// `http` or `uwsgi`.
    pub protocol: &'static str,
    /// Connections waiting in the kernel's accept queue.
    pub queue: u64,
    /// The accept queue's size (the backlog).
    pub max_queue: u64,
}

/// The whole server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The master's pid.
    pub pid: u32,
    /// Counters of every worker that ever ran (live and gone).
    pub totals: CounterTotals,
    /// The live workers.
    pub workers: Vec<WorkerView>,
    /// Worker restarts by cause (`max_requests`, `lifetime`, `rss`,
    /// `timeout`, `crash`, `reload`, `source_changed`).
    pub restarts: Vec<(&'static str, u64)>,
    /// Listeners.
    pub listeners: Vec<ListenerView>,
}

/// The causes worker restarts are counted under, in output order.
pub const RESTART_CAUSES: [&str; 7] = [
    "max_requests",
    "lifetime",
    "rss",
    "timeout",
    "crash",
    "reload",
    "source_changed",
];
