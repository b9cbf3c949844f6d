//! Test harness: the server's side of the `wsgi-core` contract, in memory (a
//! recording [`ResponseSink`], a scripted [`BodyReader`], a [`RequestSource`]
//! over prepared requests) and an interpreter started once per test binary.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use wsgi_core::{
    AppError, Application, BodyReader, Environ, ErrorLog, FileRegion, Request, RequestSource,
    ResponseHead, ResponseSink, SinkError,
};
use wsgi_python::{AppOptions, PyApplication, PythonConfig};

/// The directory the test apps are written to (on `sys.path`).
pub fn app_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wsgi-python-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
    .clone()
}

/// Starts the interpreter once for this test binary: in the test venv
/// (`TEST_VENV`, which `cargo xtask ci` sets; it holds PasteDeploy) when
/// given, else as `initialize` chooses (`VIRTUAL_ENV`, then the base Python).
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let config = PythonConfig {
            pythonpath: vec![app_dir()],
            virtualenv: std::env::var_os("TEST_VENV")
                .filter(|venv| !venv.is_empty())
                .map(PathBuf::from),
            ..PythonConfig::default()
        };
        let info = wsgi_python::initialize(&config).expect("initialize");
        eprintln!("python: {info:?}");
    });
}

/// Writes `source` as module `name` in the app directory.
pub fn write_module(name: &str, source: &str) -> PathBuf {
    init();
    let path = app_dir().join(format!("{name}.py"));
    std::fs::write(&path, source).unwrap();
    path
}

/// An [`ErrorLog`] that keeps everything.
#[derive(Debug, Default)]
pub struct TestLog(pub Mutex<String>);

impl ErrorLog for TestLog {
    fn write(&self, text: &str) {
        self.0.lock().unwrap().push_str(text);
    }
}

impl TestLog {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// Writes `source` as module `name` and loads `name:app` (or `spec`).
pub fn load(name: &str, source: &str) -> (PyApplication, Arc<TestLog>) {
    write_module(name, source);
    load_spec(&format!("{name}:app"))
}

pub fn load_spec(spec: &str) -> (PyApplication, Arc<TestLog>) {
    init();
    let log = Arc::new(TestLog::default());
    let options = AppOptions::new(true, false, log.clone());
    let app = PyApplication::load(spec, options).unwrap_or_else(|error| panic!("{error}"));
    (app, log)
}

/// What the sink saw.
#[derive(Debug, Default)]
pub struct Record {
    pub head: Option<ResponseHead>,
    pub chunks: Vec<Bytes>,
    /// (offset, len, the bytes from offset to the end of the file).
    pub files: Vec<(u64, Option<u64>, Vec<u8>)>,
    pub waits: usize,
    pub finished: bool,
    pub aborted: Option<String>,
}

impl Record {
    pub fn body(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.to_vec())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8(self.body()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.head.as_ref()?;
        head.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    pub fn status(&self) -> u16 {
        self.head.as_ref().expect("no head").status
    }
}

/// A recording [`ResponseSink`].
#[derive(Debug, Default)]
pub struct TestSink {
    pub record: Arc<Mutex<Record>>,
    /// `must_wait` says yes after every chunk.
    pub always_wait: bool,
    /// `send` fails with `Disconnected` once this many chunks were accepted.
    pub disconnect_after: Option<usize>,
    started: bool,
    queued: bool,
}

impl TestSink {
    pub fn new() -> (Self, Arc<Mutex<Record>>) {
        let sink = TestSink::default();
        let record = sink.record.clone();
        (sink, record)
    }
}

impl ResponseSink for TestSink {
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError> {
        if self.started {
            return Err(SinkError::Misuse("second head"));
        }
        self.started = true;
        self.record.lock().unwrap().head = Some(head);
        Ok(())
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        assert!(self.started, "body before head");
        let mut record = self.record.lock().unwrap();
        if self
            .disconnect_after
            .is_some_and(|limit| record.chunks.len() >= limit)
        {
            return Err(SinkError::Disconnected);
        }
        assert!(!chunk.is_empty(), "empty chunk sent");
        record.chunks.push(chunk);
        self.queued = true;
        Ok(())
    }

    fn send_file(&mut self, mut region: FileRegion) -> Result<(), SinkError> {
        assert!(self.started, "file before head");
        region
            .file
            .seek(SeekFrom::Start(region.offset))
            .map_err(|error| SinkError::File(error.to_string()))?;
        let mut content = Vec::new();
        region
            .file
            .read_to_end(&mut content)
            .map_err(|error| SinkError::File(error.to_string()))?;
        self.record
            .lock()
            .unwrap()
            .files
            .push((region.offset, region.len, content));
        Ok(())
    }

    fn must_wait(&self) -> bool {
        self.always_wait && self.queued
    }

    fn wait(&mut self) -> Result<(), SinkError> {
        self.queued = false;
        self.record.lock().unwrap().waits += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        assert!(self.started, "finish before head");
        self.record.lock().unwrap().finished = true;
        Ok(())
    }

    fn abort(&mut self, error: &AppError) {
        self.record.lock().unwrap().aborted = Some(error.message.clone());
    }

    fn is_started(&self) -> bool {
        self.started
    }
}

/// One piece of a scripted body.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes that are buffered.
    Data(&'static [u8]),
    /// Nothing buffered until `wait` is called.
    Pending,
    /// `fill_buf` fails.
    Error,
    /// First in a script: the body's length as the reader tells it
    /// (`remaining_hint`), which may be wrong on purpose.
    Length(u64),
}

/// A [`BodyReader`] that plays a script.
#[derive(Debug, Default)]
pub struct TestReader {
    script: VecDeque<Piece>,
    buffer: Vec<u8>,
    position: usize,
    released: bool,
    remaining: Option<u64>,
    pub waits: Arc<Mutex<usize>>,
}

impl TestReader {
    pub fn new(script: impl IntoIterator<Item = Piece>) -> Self {
        let mut script: VecDeque<Piece> = script.into_iter().collect();
        let remaining = match script.front() {
            Some(Piece::Length(length)) => Some(*length),
            _ => None,
        };
        if remaining.is_some() {
            script.pop_front();
        }
        TestReader {
            script,
            remaining,
            ..TestReader::default()
        }
    }
}

impl BodyReader for TestReader {
    fn fill_buf(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if self.position < self.buffer.len() {
                return Ok(Some(&self.buffer[self.position..]));
            }
            match self.script.front() {
                None => return Ok(Some(&[])),
                Some(Piece::Pending) if !self.released => return Ok(None),
                Some(Piece::Pending) => {
                    self.released = false;
                    self.script.pop_front();
                }
                Some(Piece::Error) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
                }
                Some(Piece::Length(_)) => {
                    self.script.pop_front();
                }
                Some(Piece::Data(data)) => {
                    self.buffer = data.to_vec();
                    self.position = 0;
                    self.script.pop_front();
                }
            }
        }
    }

    fn consume(&mut self, amount: usize) {
        self.position += amount;
        assert!(self.position <= self.buffer.len());
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(amount as u64);
        }
    }

    fn remaining_hint(&self) -> Option<u64> {
        self.remaining
    }

    fn wait(&mut self) -> io::Result<()> {
        *self.waits.lock().unwrap() += 1;
        self.released = true;
        Ok(())
    }
}

/// A [`RequestSource`] over prepared requests.
#[derive(Debug, Default)]
pub struct TestSource {
    pub requests: VecDeque<Request>,
    pub done: usize,
}

impl RequestSource for TestSource {
    fn next_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    fn request_done(&mut self) {
        self.done += 1;
    }
}

/// A GET request for `path`.
pub fn environ(method: &str, path: &str) -> Environ {
    let (path_info, query) = path.split_once('?').unwrap_or((path, ""));
    Environ {
        request_method: Bytes::copy_from_slice(method.as_bytes()),
        path_info: Bytes::copy_from_slice(path_info.as_bytes()),
        query_string: Bytes::copy_from_slice(query.as_bytes()),
        request_uri: Bytes::copy_from_slice(path.as_bytes()),
        server_protocol: Bytes::from_static(b"HTTP/1.1"),
        server_name: Bytes::from_static(b"localhost"),
        server_port: Bytes::from_static(b"8000"),
        remote_addr: Bytes::from_static(b"127.0.0.1"),
        remote_port: Bytes::from_static(b"54321"),
        ..Environ::default()
    }
}

/// Serves each (environ, body script, sink) on a fresh executor thread and
/// returns the records.
pub fn serve_all(
    app: &Arc<PyApplication>,
    requests: Vec<(Environ, Vec<Piece>, TestSink)>,
) -> Vec<Arc<Mutex<Record>>> {
    let mut source = TestSource::default();
    let mut records = Vec::new();
    for (environ, script, sink) in requests {
        records.push(sink.record.clone());
        source.requests.push_back(Request {
            environ: Box::new(environ),
            input: Box::new(TestReader::new(script)),
            output: Box::new(sink),
        });
    }
    let count = records.len();
    let app = app.clone();
    let source = std::thread::spawn(move || {
        app.serve_thread(&mut source);
        source
    })
    .join()
    .expect("serve thread panicked");
    assert_eq!(source.done, count, "request_done calls");
    records
}

/// Serves one request; returns what the sink saw.
pub fn serve(app: &Arc<PyApplication>, environ: Environ, script: Vec<Piece>) -> Record {
    let (sink, _) = TestSink::new();
    serve_with(app, environ, script, sink)
}

pub fn serve_with(
    app: &Arc<PyApplication>,
    environ: Environ,
    script: Vec<Piece>,
    sink: TestSink,
) -> Record {
    let record = serve_all(app, vec![(environ, script, sink)]).remove(0);
    let record = std::mem::take(&mut *record.lock().unwrap());
    record
}

/// Whether this CI run requires every optional Python package (`CI=true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Whether `module` can be imported. Under CI a missing one fails the test
/// (the test venv must have it); elsewhere the caller skips, saying why.
pub fn have_module(module: &str) -> bool {
    init();
    let found = pyo3::Python::attach(|py| py.import(module).is_ok());
    if !found {
        assert!(
            !ci(),
            "{module} is not importable in the test Python (CI=true: set TEST_VENV to the test venv)"
        );
        eprintln!("skipped: {module} is not importable (set TEST_VENV to <target>/test-venv)");
    }
    found
}

/// Evaluates a Python expression (in module `module`'s namespace) to a string.
pub fn eval_in(module: &str, expression: &str) -> String {
    use pyo3::prelude::*;
    use pyo3::types::PyDict;
    pyo3::Python::attach(|py| {
        let module = py.import(module).unwrap();
        let globals: Bound<'_, PyDict> = module.dict();
        let code = std::ffi::CString::new(expression).unwrap();
        py.eval(&code, Some(&globals), None)
            .unwrap()
            .str()
            .unwrap()
            .to_string()
    })
}

/// Reads a whole file, for diagnostics.
pub fn read_file(path: &PathBuf) -> String {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .unwrap();
    text
}

/// A sink whose `wait` sleeps (GIL released), to interleave threads.
#[derive(Debug)]
pub struct SlowSink {
    pub inner: TestSink,
    pub delay: std::time::Duration,
    pub log: Arc<Mutex<Vec<String>>>,
    pub name: &'static str,
}

impl ResponseSink for SlowSink {
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError> {
        self.inner.start(head)
    }
    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{}", self.name, String::from_utf8_lossy(&chunk)));
        self.inner.send(chunk)
    }
    fn send_file(&mut self, region: FileRegion) -> Result<(), SinkError> {
        self.inner.send_file(region)
    }
    fn must_wait(&self) -> bool {
        true
    }
    fn wait(&mut self) -> Result<(), SinkError> {
        std::thread::sleep(self.delay);
        self.inner.wait()
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.inner.finish()
    }
    fn abort(&mut self, error: &AppError) {
        self.inner.abort(error)
    }
    fn is_started(&self) -> bool {
        self.inner.is_started()
    }
}
