//! `--stats`: uWSGI's stats-server JSON, so `uwsgitop`, Netdata, Telegraf
//! and existing dashboards read it unchanged (raw TCP or unix: the JSON
//! then the connection closes; with `--stats-http`, an HTTP response).

use std::fmt::Write as _;

use super::snapshot::Snapshot;

/// What the stats report as `version` (uWSGI's field; ours).
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON document.
pub fn render(snapshot: &Snapshot, now_seconds: u64) -> String {
    let mut out = String::with_capacity(2048);
    let listen_queue: u64 = snapshot
        .listeners
        .iter()
        .map(|listener| listener.queue)
        .sum();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let cwd = std::env::current_dir()
        .map(|dir| dir.to_string_lossy().into_owned())
        .unwrap_or_default();
    let load: u64 = snapshot.workers.iter().map(|worker| worker.in_flight).sum();
    let _ = write!(
        out,
        "{{\"version\":\"{VERSION}\",\"listen_queue\":{listen_queue},\"listen_queue_errors\":0,\"signal_queue\":0,\"load\":{load},\"pid\":{},\"uid\":{uid},\"gid\":{gid},\"cwd\":",
        snapshot.pid
    );
    json_string(&mut out, &cwd);
    out.push_str(",\"locks\":[],\"sockets\":[");
    for (index, listener) in snapshot.listeners.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_string(&mut out, &listener.name);
        let _ = write!(
            out,
            ",\"proto\":\"{}\",\"queue\":{},\"max_queue\":{},\"shared\":0,\"can_offload\":0}}",
            listener.protocol, listener.queue, listener.max_queue
        );
    }
    out.push_str("],\"workers\":[");
    for (index, worker) in snapshot.workers.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let requests = worker.counters.requests();
        // uWSGI's avg_rt: the mean response time in microseconds.
        let avg_rt = worker
            .counters
            .duration
            .sum_micros
            .checked_div(requests)
            .unwrap_or(0);
        let status = if !worker.accepting {
            "cheap"
        } else if worker.busy > 0 {
            "busy"
        } else {
            "idle"
        };
        let running_time = now_seconds.saturating_sub(worker.started) * 1_000_000;
        let _ = write!(
            out,
            "{{\"id\":{},\"pid\":{},\"accepting\":{},\"requests\":{requests},\"delta_requests\":{},\"exceptions\":{},\"harakiri_count\":{},\"signals\":0,\"signal_queue\":0,\"status\":\"{status}\",\"rss\":{},\"vsz\":{},\"running_time\":{running_time},\"last_spawn\":{},\"respawn_count\":{},\"tx\":{},\"avg_rt\":{avg_rt},",
            worker.number,
            worker.pid,
            u8::from(worker.accepting),
            worker.delta_requests,
            worker.counters.exceptions,
            worker.counters.timeouts,
            worker.rss,
            worker.vsz,
            worker.started,
            worker.respawns,
            worker.counters.bytes_out,
        );
        let _ = write!(
            out,
            "\"apps\":[{{\"id\":0,\"modifier1\":0,\"mountpoint\":\"\",\"startup_time\":0,\"requests\":{requests},\"exceptions\":{},\"chdir\":\"\"}}],\"cores\":[",
            worker.counters.exceptions
        );
        for (core, served) in worker.thread_requests.iter().enumerate() {
            if core > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"id\":{core},\"requests\":{served},\"static_requests\":0,\"routed_requests\":0,\"offloaded_requests\":0,\"write_errors\":0,\"read_errors\":0,\"in_request\":0,\"vars\":[],\"req_info\":{{}}}}"
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::snapshot::{CounterTotals, ListenerView, WorkerView};

    #[test]
    fn schema() {
        let mut counters = CounterTotals::default();
        counters.by_class[2] = 4;
        counters.bytes_out = 100;
        counters.duration.buckets = vec![0; 14];
        counters.duration.sum_micros = 400;
        let snapshot = Snapshot {
            pid: 7,
            workers: vec![WorkerView {
                number: 1,
                pid: 8,
                accepting: true,
                counters,
                thread_requests: vec![3, 1],
                threads: 2,
                ..WorkerView::default()
            }],
            listeners: vec![ListenerView {
                name: "127.0.0.1:1".into(),
                protocol: "http",
                queue: 0,
                max_queue: 128,
            }],
            ..Snapshot::default()
        };
        let text = render(&snapshot, 0);
        assert!(
            text.starts_with(&format!("{{\"version\":\"{VERSION}\",\"listen_queue\":0,")),
            "{text}"
        );
        assert!(
            text.contains("\"workers\":[{\"id\":1,\"pid\":8,\"accepting\":1,\"requests\":4,"),
            "{text}"
        );
        assert!(text.contains("\"tx\":100,\"avg_rt\":100,"), "{text}");
        assert!(
            text.contains("\"cores\":[{\"id\":0,\"requests\":3,"),
            "{text}"
        );
        assert!(text.ends_with("]}]}"), "{text}");
    }
}
