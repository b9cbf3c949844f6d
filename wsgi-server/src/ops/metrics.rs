//! `--metrics-bind`: the Prometheus text exposition format (version 0.0.4)
//! of a [`Snapshot`], answered by the master without Python.

use std::fmt::Write as _;

use super::snapshot::{HistogramCounts, Snapshot, RESTART_CAUSES};
use crate::scoreboard::BUCKETS;

const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, counts: &HistogramCounts) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (index, bound) in BUCKETS.iter().enumerate() {
        cumulative += counts.buckets.get(index).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts.buckets.get(BUCKETS.len()).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", counts.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// Label values escaped as the format asks (`\`, `"` and newlines).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let totals = &snapshot.totals;
    header(
        &mut out,
        "wsgi_server_requests_total",
        "counter",
        "Requests answered, by status class (none: the client left before a response).",
    );
    for (class, count) in CLASSES.iter().zip(totals.by_class) {
        let _ = writeln!(
            out,
            "wsgi_server_requests_total{{status=\"{class}\"}} {count}"
        );
    }
    histogram(
        &mut out,
        "wsgi_server_request_duration_seconds",
        "From a request's head to its last byte sent.",
        &totals.duration,
    );
    histogram(
        &mut out,
        "wsgi_server_request_queue_seconds",
        "Time a request waited for an application thread.",
        &totals.queue_wait,
    );
    header(
        &mut out,
        "wsgi_server_received_bytes_total",
        "counter",
        "Request body bytes read.",
    );
    let _ = writeln!(out, "wsgi_server_received_bytes_total {}", totals.bytes_in);
    header(
        &mut out,
        "wsgi_server_sent_bytes_total",
        "counter",
        "Response body bytes sent.",
    );
    let _ = writeln!(out, "wsgi_server_sent_bytes_total {}", totals.bytes_out);
    header(
        &mut out,
        "wsgi_server_exceptions_total",
        "counter",
        "Requests whose application raised.",
    );
    let _ = writeln!(out, "wsgi_server_exceptions_total {}", totals.exceptions);
    header(
        &mut out,
        "wsgi_server_request_timeouts_total",
        "counter",
        "Requests stopped by --timeout.",
    );
    let _ = writeln!(
        out,
        "wsgi_server_request_timeouts_total {}",
        totals.timeouts
    );
    header(
        &mut out,
        "wsgi_server_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the log writer fell behind.",
    );
    let _ = writeln!(
        out,
        "wsgi_server_log_lines_dropped_total {}",
        totals.log_dropped
    );
    let live = &snapshot.workers;
    header(
        &mut out,
        "wsgi_server_requests_in_flight",
        "gauge",
        "Requests between their head and their end.",
    );
    let _ = writeln!(
        out,
        "wsgi_server_requests_in_flight {}",
        live.iter().map(|w| w.in_flight).sum::<u64>()
    );
    header(
        &mut out,
        "wsgi_server_queue_depth",
        "gauge",
        "Requests parsed and waiting for an application thread.",
    );
    let _ = writeln!(
        out,
        "wsgi_server_queue_depth {}",
        live.iter().map(|w| w.queued).sum::<u64>()
    );
    let busy: usize = live.iter().map(|w| w.busy).sum();
    let threads: usize = live.iter().map(|w| w.threads).sum();
    header(
        &mut out,
        "wsgi_server_threads",
        "gauge",
        "Application threads, busy or idle.",
    );
    let _ = writeln!(out, "wsgi_server_threads{{state=\"busy\"}} {busy}");
    let _ = writeln!(
        out,
        "wsgi_server_threads{{state=\"idle\"}} {}",
        threads.saturating_sub(busy)
    );
    header(
        &mut out,
        "wsgi_server_workers",
        "gauge",
        "Live worker processes.",
    );
    let _ = writeln!(out, "wsgi_server_workers {}", live.len());
    header(
        &mut out,
        "wsgi_server_worker_restarts_total",
        "counter",
        "Workers replaced, by cause.",
    );
    for cause in RESTART_CAUSES {
        let count = snapshot
            .restarts
            .iter()
            .find(|(name, _)| *name == cause)
            .map_or(0, |(_, count)| *count);
        let _ = writeln!(
            out,
            "wsgi_server_worker_restarts_total{{cause=\"{cause}\"}} {count}"
        );
    }
    header(
        &mut out,
        "wsgi_server_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each live worker.",
    );
    for worker in live {
        let _ = writeln!(
            out,
            "wsgi_server_worker_resident_memory_bytes{{worker=\"{}\",pid=\"{}\"}} {}",
            worker.number, worker.pid, worker.rss
        );
    }
    header(
        &mut out,
        "wsgi_server_listen_queue",
        "gauge",
        "Connections waiting in a listener's accept queue (the kernel's count).",
    );
    for listener in &snapshot.listeners {
        let _ = writeln!(
            out,
            "wsgi_server_listen_queue{{listener=\"{}\"}} {}",
            label(&listener.name),
            listener.queue
        );
    }
    header(
        &mut out,
        "wsgi_server_listen_queue_max",
        "gauge",
        "The size of a listener's accept queue.",
    );
    for listener in &snapshot.listeners {
        let _ = writeln!(
            out,
            "wsgi_server_listen_queue_max{{listener=\"{}\"}} {}",
            label(&listener.name),
            listener.max_queue
        );
    }
    out
}
