//! The access log: gunicorn's `--access-logformat` atoms (Apache combined by
//! default) or JSON lines, rendered from a [`RequestRecord`] with request
//! data escaped so that no client can forge a line; written by a thread of
//! its own through a bounded queue (a full queue drops lines and counts
//! them), reopened on USR1.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::RequestRecord;

use crate::config::access_format::{Atom, Piece, PieceRef};
pub use crate::config::access_format::{Format, COMBINED};

impl Format {
    /// One line, with its newline.
    pub fn render(&self, record: &RequestRecord) -> String {
        let mut line = String::with_capacity(160);
        match self {
            Format::Json => render_json(record, &mut line),
            Format::Text(pieces) => {
                for PieceRef(piece) in pieces {
                    match piece {
                        Piece::Text(text) => line.push_str(text),
                        Piece::Atom(atom) => render_atom(atom, record, &mut line),
                    }
                }
            }
        }
        line.push('\n');
        line
    }
}

/// Request data in a text line: `"` and `\` escaped, control bytes, DEL
/// and non-ASCII as `\xHH` (nginx's `escape=default`), so a header can
/// neither end the line nor forge a field.
fn escaped(out: &mut String, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push('-');
        return;
    }
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02X}");
            }
        }
    }
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&byte| byte == b'?') {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, b""),
    }
}

/// The user of `Authorization: Basic` (gunicorn's `u`), if any.
fn basic_user(record: &RequestRecord) -> Option<Vec<u8>> {
    let value = record.request_header(b"authorization")?;
    let encoded = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))?;
    let decoded = base64_decode(encoded.trim_ascii())?;
    let user = match decoded.iter().position(|&byte| byte == b':') {
        Some(at) => decoded[..at].to_vec(),
        None => decoded,
    };
    Some(user)
}

fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text: Vec<u8> = text.iter().copied().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&bytes[1..1 + take]);
    }
    Some(out)
}

fn seconds_since_epoch(time: SystemTime) -> (u64, u32) {
    let elapsed = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (elapsed.as_secs(), elapsed.subsec_micros())
}

/// `[10/Oct/2000:13:55:36 +0000]` (times are in UTC), formatted once per
/// second per thread: six integers through `fmt` per line were a fifth of
/// the access log's cost (callgrind, docs/performance.md).
fn clf_time(out: &mut String, time: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let (seconds, _) = seconds_since_epoch(time);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != seconds {
            let (year, month, day) = crate::date::civil_from_days((seconds / 86_400) as i64);
            let of_day = seconds % 86_400;
            cache.1.clear();
            let _ = write!(
                cache.1,
                "[{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000]",
                MONTHS[(month as usize - 1).min(11)],
                of_day / 3600,
                of_day % 3600 / 60,
                of_day % 60
            );
            cache.0 = seconds;
        }
        out.push_str(&cache.1);
    });
}

/// `2000-10-10T13:55:36.123456Z`.
fn iso_time(out: &mut String, time: SystemTime) {
    let (seconds, micros) = seconds_since_epoch(time);
    let (year, month, day) = crate::date::civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
}

fn render_atom(atom: &Atom, record: &RequestRecord, out: &mut String) {
    let (path, query) = split_target(&record.target);
    let micros = record.total.as_micros();
    match atom {
        Atom::RemoteAddr => escaped(out, &record.remote_addr),
        Atom::Dash | Atom::Unknown => out.push('-'),
        Atom::User => match basic_user(record) {
            Some(user) => escaped(out, &user),
            None => out.push('-'),
        },
        Atom::Time => clf_time(out, record.started.unwrap_or_else(SystemTime::now)),
        Atom::RequestLine => {
            escaped(out, &record.method);
            out.push(' ');
            escaped(out, &record.target);
            out.push(' ');
            out.push_str(record.protocol);
        }
        Atom::Method => escaped(out, &record.method),
        Atom::Path => escaped(out, path),
        Atom::Query => {
            if !query.is_empty() {
                escaped(out, query);
            }
        }
        Atom::Protocol => out.push_str(record.protocol),
        Atom::Status => {
            let _ = write!(out, "{}", record.status);
        }
        Atom::BytesOut | Atom::BytesOutOrDash => {
            let _ = write!(out, "{}", record.bytes_out);
        }
        Atom::Referer => escaped(
            out,
            record.request_header(b"referer").map_or(&[][..], |v| v),
        ),
        Atom::UserAgent => escaped(
            out,
            record.request_header(b"user-agent").map_or(&[][..], |v| v),
        ),
        Atom::Seconds => {
            let _ = write!(out, "{}", record.total.as_secs());
        }
        Atom::Millis => {
            let _ = write!(out, "{}", record.total.as_millis());
        }
        Atom::Micros => {
            let _ = write!(out, "{micros}");
        }
        Atom::DecimalSeconds => {
            let _ = write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        }
        Atom::Pid => {
            let _ = write!(out, "<{}>", std::process::id());
        }
        Atom::RequestHeader(name) => {
            escaped(
                out,
                record
                    .request_header(name.as_bytes())
                    .map_or(&[][..], |v| v),
            );
        }
        Atom::ResponseHeader(name) => {
            escaped(
                out,
                record
                    .response_header(name.as_bytes())
                    .map_or(&[][..], |v| v),
            );
        }
        Atom::EnvVar(name) => match std::env::var_os(name) {
            Some(value) => escaped(out, value.as_encoded_bytes()),
            None => out.push('-'),
        },
    }
}

/// A JSON string from request bytes (read as latin-1, as WSGI does).
fn json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\u{:04x}", u32::from(byte));
            }
        }
    }
    out.push('"');
}

fn json_optional(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => json_string(out, bytes),
        None => out.push_str("null"),
    }
}

fn render_json(record: &RequestRecord, out: &mut String) {
    let (path, query) = split_target(&record.target);
    let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
    out.push_str("{\"time\":\"");
    iso_time(out, record.started.unwrap_or_else(SystemTime::now));
    out.push_str("\",\"remote_addr\":");
    json_string(out, &record.remote_addr);
    out.push_str(",\"peer_addr\":");
    json_string(out, &record.peer_addr);
    out.push_str(",\"user\":");
    json_optional(out, basic_user(record).as_deref());
    out.push_str(",\"method\":");
    json_string(out, &record.method);
    out.push_str(",\"path\":");
    json_string(out, path);
    out.push_str(",\"query\":");
    json_string(out, query);
    let _ = write!(
        out,
        ",\"protocol\":\"{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3}",
        record.protocol,
        record.status,
        record.bytes_in,
        record.bytes_out,
        millis(record.total),
    );
    out.push_str(",\"referer\":");
    json_optional(out, record.request_header(b"referer").map(|v| &v[..]));
    out.push_str(",\"user_agent\":");
    json_optional(out, record.request_header(b"user-agent").map(|v| &v[..]));
    let _ = write!(
        out,
        ",\"pid\":{},\"complete\":{},\"served_by\":\"{}\"}}",
        std::process::id(),
        !record.incomplete,
        if record.served_by_server {
            "server"
        } else {
            "app"
        }
    );
}

enum Message {
    Record(Box<RequestRecord>),
    Reopen,
    Flush(SyncSender<()>),
}

/// Lines waiting for the writer; a full queue drops lines (counted)
/// rather than stall a request behind a slow disk.
const QUEUE_LINES: usize = 16 * 1024;

/// The access log of one process: a format and a writer thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: Arc<Format>,
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    /// The worker's shared counter of dropped lines (for `/metrics`).
    dropped_shared: Option<&'static AtomicU64>,
    /// The request headers the format reads (lower case, and as the
    /// environ's `HTTP_*` key) and the response headers, found once.
    wanted: Arc<Wanted>,
}

/// The request headers a format reads (lower-case name, environ key) and
/// its response headers.
type Wanted = (Vec<(String, String)>, Vec<String>);

static GLOBAL: std::sync::OnceLock<AccessLog> = std::sync::OnceLock::new();

/// Makes `log` the process's access log (USR1 reopens it, the exit flushes it).
pub fn set_global(log: AccessLog) {
    let _ = GLOBAL.set(log);
}

/// The process's access log, if it has one.
pub fn global() -> Option<&'static AccessLog> {
    GLOBAL.get()
}

impl std::fmt::Debug for Message {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Message::Record(_) => "Record",
            Message::Reopen => "Reopen",
            Message::Flush(_) => "Flush",
        })
    }
}

impl AccessLog {
    /// Starts the writer thread for `path` (`None` or `-`: standard output,
    /// as gunicorn's `--access-logfile -`).
    ///
    /// # Errors
    /// The file cannot be opened, or the thread started.
    pub fn start(
        path: Option<PathBuf>,
        format: Format,
        dropped_shared: Option<&'static AtomicU64>,
    ) -> io::Result<AccessLog> {
        let path = path.filter(|path| path.as_os_str() != "-");
        let file = match &path {
            Some(path) => Some(open(path)?),
            None => None,
        };
        let request = format
            .request_headers()
            .into_iter()
            .map(|name| {
                let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
                (name, key)
            })
            .collect();
        let wanted = Arc::new((request, format.response_headers()));
        let format = Arc::new(format);
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        let rendering = Arc::clone(&format);
        std::thread::Builder::new()
            .name("wsgi-access-log".into())
            .spawn(move || write_lines(receiver, &rendering, path, file))?;
        Ok(AccessLog {
            wanted,
            format,
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
            dropped_shared,
        })
    }

    /// The format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Request headers the format reads: (lower-case name, environ key).
    pub fn request_headers(&self) -> &[(String, String)] {
        &self.wanted.0
    }

    /// Response headers (lower case) the format reads.
    pub fn response_headers(&self) -> &[String] {
        &self.wanted.1
    }

    /// Queues one record; the writer thread renders it (off the I/O
    /// thread). Never waits.
    pub fn log(&self, record: Box<RequestRecord>) {
        match self.sender.try_send(Message::Record(record)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(shared) = self.dropped_shared {
                    shared.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file (USR1, after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.sender.try_send(Message::Reopen);
    }

    /// Waits (bounded) until queued lines are written.
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

fn open(path: &PathBuf) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(
    receiver: Receiver<Message>,
    format: &Format,
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
) {
    // Lines are gathered while more are queued and written when the queue
    // runs dry: one write for a burst, not one per request.
    let sink = |file: Option<std::fs::File>| -> io::BufWriter<Box<dyn Write>> {
        let target: Box<dyn Write> = match file {
            Some(file) => Box::new(file),
            None => Box::new(io::stdout()),
        };
        io::BufWriter::with_capacity(64 * 1024, target)
    };
    let mut out = sink(file);
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(record) => {
                    let _ = out.write_all(format.render(&record).as_bytes());
                }
                Message::Reopen => {
                    let _ = out.flush();
                    if let Some(path) = &path {
                        if let Ok(reopened) = open(path) {
                            out = sink(Some(reopened));
                        }
                    }
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn record() -> RequestRecord {
        RequestRecord {
            started: Some(UNIX_EPOCH + Duration::from_secs(971_186_136)),
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/apache_pb.gif?x=1"),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_out: 2326,
            total: Duration::from_micros(1_234_567),
            remote_addr: Bytes::from_static(b"127.0.0.1"),
            peer_addr: Bytes::from_static(b"127.0.0.1"),
            request_headers: vec![
                (
                    Bytes::from_static(b"referer"),
                    Bytes::from_static(b"http://www.example.com/start.html"),
                ),
                (
                    Bytes::from_static(b"user-agent"),
                    Bytes::from_static(b"Mozilla/4.08"),
                ),
                (
                    Bytes::from_static(b"authorization"),
                    Bytes::from_static(b"Basic ZnJhbms6c2VjcmV0"),
                ),
            ],
            response_headers: vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"image/gif"),
            )],
            ..RequestRecord::default()
        }
    }

    #[test]
    fn combined() {
        let format = Format::parse(COMBINED).unwrap();
        assert_eq!(
            format.render(&record()),
            "127.0.0.1 - frank [10/Oct/2000:13:55:36 +0000] \"GET /apache_pb.gif?x=1 HTTP/1.1\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08\"\n"
        );
        assert_eq!(
            format.request_headers(),
            ["authorization", "referer", "user-agent"]
        );
    }

    #[test]
    fn every_atom() {
        let format = Format::parse("%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({Content-Type}o)s|%({X-Missing}i)s|%(zz)s|100%%").unwrap();
        assert_eq!(
            format.render(&record()),
            "GET|/apache_pb.gif|x=1|HTTP/1.1|200|2326|1|1234|1234567|1.234567|image/gif|-|-|100%\n"
        );
        assert!(Format::parse("%(h").is_err());
        assert!(Format::parse("%(h)x").is_err());
        assert_eq!(
            Format::parse("%(p)s").unwrap().render(&record()),
            format!("<{}>\n", std::process::id())
        );
    }

    #[test]
    fn request_data_cannot_forge_a_line() {
        let mut record = record();
        record.target = Bytes::from_static(b"/a\"b\\c");
        record.request_headers[1].1 =
            Bytes::from_static(b"evil\" 200 1 \"\r\n127.0.0.1 - - [x] \"caf\xc3\xa9");
        let line = Format::parse(COMBINED).unwrap().render(&record);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(r#""GET /a\"b\\c HTTP/1.1""#), "{line}");
        assert!(
            line.contains(r#""evil\" 200 1 \"\x0D\x0A127.0.0.1 - - [x] \"caf\xC3\xA9""#),
            "{line}"
        );
    }

    #[test]
    fn json_lines() {
        let mut record = record();
        record.request_headers[1].1 = Bytes::from_static(b"a\"b\ncaf\xe9");
        let line = Format::parse("json").unwrap().render(&record);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        assert!(
            line.contains(r#""status":200,"bytes_in":0,"bytes_out":2326,"duration_ms":1234.567"#),
            "{line}"
        );
        assert!(line.contains(r#""user_agent":"a\"b\ncaf\u00e9""#), "{line}");
        assert!(
            line.contains(r#""time":"2000-10-10T13:55:36.000000Z""#),
            "{line}"
        );
        assert!(line.contains(r#""user":"frank""#), "{line}");
    }
}
