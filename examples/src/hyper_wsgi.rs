//! A WSGI server on hyper, with no code from `wsgi-server`: hyper parses and
//! writes HTTP/1.1 on a tokio runtime, `wsgi-core` turns hyper's request
//! parts into the environ (`Environ::from_parts`), and any
//! [`wsgi_core::Application`] (CPython's `wsgi_python::PyApplication`)
//! serves on its own threads.
//!
//! # Theory of operation
//! The hyper service collects the request body, builds the environ and
//! queues a [`Request`] whose body is the collected bytes and whose sink
//! sends the head through a oneshot channel and the chunks through a
//! bounded channel that becomes the hyper response body. `threads`
//! application threads take requests from one queue (the Python runtime
//! releases the GIL while it waits there) and run the app; a full queue is a
//! 503, a full chunk channel makes the application wait (`must_wait`/`wait`),
//! a client gone makes its sends fail (`Disconnected`), so the app's
//! `close()` runs at once.
//!
//! What it leaves out, being an example: `100 Continue`, request bodies
//! streamed to the app as they arrive, `sendfile`, keep-alive tuning.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use wsgi_core::{
    AppError, Application, BodyReader, ConnInfo, Environ, EnvironOptions, FileRegion, PeerAddr,
    Request, RequestSource, ResponseHead, ResponseSink, SinkError, UrlScheme,
};

/// Requests waiting for an application thread; beyond, a 503.
const QUEUE: usize = 64;
/// Response chunks in flight per response; beyond, the application waits.
const CHUNKS: usize = 8;

type Body = BoxBody<Bytes, io::Error>;

/// Serves `app` on `listener` with `threads` application threads until the
/// listener fails. Blocks the calling thread (which runs the I/O).
///
/// # Errors
/// The runtime or the listener failed.
pub fn serve(
    listener: std::net::TcpListener,
    app: Arc<dyn Application>,
    threads: usize,
) -> io::Result<()> {
    let (jobs, queue) = sync_channel::<Request>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    for index in 0..threads.max(1) {
        let app = Arc::clone(&app);
        let mut source = Queue {
            queue: Arc::clone(&queue),
            index,
        };
        std::thread::Builder::new()
            .name(format!("app-{index}"))
            .spawn(move || app.serve_thread(&mut source))?;
    }
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        loop {
            let (stream, peer) = listener.accept().await?;
            let conn = Arc::new(ConnInfo::new(
                PeerAddr::Tcp(peer),
                Some(local),
                UrlScheme::Http,
            ));
            let jobs = jobs.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    handle(request, jobs.clone(), Arc::clone(&conn), peer)
                });
                // A client that goes away mid-response is not our error.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// One request: the environ, the body, a place in the queue, then the
/// response as the application produces it.
async fn handle(
    request: hyper::Request<Incoming>,
    jobs: SyncSender<Request>,
    conn: Arc<ConnInfo>,
    _peer: SocketAddr,
) -> Result<hyper::Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let environ = Environ::from_parts(&parts, &conn, &EnvironOptions::default());
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(400, "bad request body\n")),
    };
    let (head_sender, head) = oneshot::channel();
    let (chunk_sender, chunks) = mpsc::channel(CHUNKS);
    let request = Request {
        environ: Box::new(environ),
        input: Box::new(WholeBody(body)),
        output: Box::new(Sink {
            head: Some(head_sender),
            chunks: Some(chunk_sender),
            pending: VecDeque::new(),
            started: false,
        }),
    };
    match jobs.try_send(request) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Ok(plain(503, "busy\n")),
        Err(TrySendError::Disconnected(_)) => return Ok(plain(500, "no application\n")),
    }
    let Ok(head) = head.await else {
        return Ok(plain(500, "the application gave no response\n"));
    };
    let stream = futures::stream::unfold(chunks, |mut chunks| async move {
        let item: Result<Bytes, io::Error> = chunks.recv().await?;
        Some((item.map(Frame::data), chunks))
    });
    let mut response = hyper::Response::new(BodyExt::boxed(StreamBody::new(Box::pin(stream))));
    *response.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in head.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&name),
            http::HeaderValue::from_maybe_shared(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response
}

/// The application threads' shared queue.
#[derive(Debug)]
struct Queue {
    queue: Arc<Mutex<Receiver<Request>>>,
    index: usize,
}

impl RequestSource for Queue {
    fn next_request(&mut self) -> Option<Request> {
        // One thread waits in `recv`, the others on the lock: either way
        // they sleep, and the runtime released its GIL around this call.
        self.queue.lock().ok()?.recv().ok()
    }

    fn thread_index(&self) -> usize {
        self.index
    }
}

/// A request body that arrived whole before the application started.
#[derive(Debug)]
struct WholeBody(Bytes);

impl BodyReader for WholeBody {
    fn fill_buf(&mut self) -> io::Result<Option<&[u8]>> {
        Ok(Some(&self.0))
    }

    fn consume(&mut self, amount: usize) {
        let _ = self.0.split_to(amount.min(self.0.len()));
    }

    fn wait(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn remaining_hint(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
}

/// The response, through channels to the hyper service.
#[derive(Debug)]
struct Sink {
    head: Option<oneshot::Sender<ResponseHead>>,
    /// `None` once finished.
    chunks: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    /// Chunks the channel had no room for: sent by `wait`.
    pending: VecDeque<Bytes>,
    started: bool,
}

impl Sink {
    fn sender(&self) -> Result<&mpsc::Sender<Result<Bytes, io::Error>>, SinkError> {
        self.chunks
            .as_ref()
            .ok_or(SinkError::Misuse("data after the end of the response"))
    }
}

impl ResponseSink for Sink {
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError> {
        let sender = self
            .head
            .take()
            .ok_or(SinkError::Misuse("a second response head"))?;
        self.started = true;
        sender.send(head).map_err(|_| SinkError::Disconnected)
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        if !self.started {
            return Err(SinkError::Misuse("body data before the head"));
        }
        if !self.pending.is_empty() {
            self.pending.push_back(chunk);
            return Ok(());
        }
        match self.sender()?.try_send(Ok(chunk)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Ok(chunk))) => {
                self.pending.push_back(chunk);
                Ok(())
            }
            Err(_) => Err(SinkError::Disconnected),
        }
    }

    fn send_file(&mut self, mut region: FileRegion) -> Result<(), SinkError> {
        // No sendfile through hyper: the region is read and sent as a chunk.
        let file_error = |error: io::Error| SinkError::File(error.to_string());
        region
            .file
            .seek(SeekFrom::Start(region.offset))
            .map_err(file_error)?;
        let mut data = Vec::new();
        match region.len {
            Some(len) => (&mut region.file).take(len).read_to_end(&mut data),
            None => region.file.read_to_end(&mut data),
        }
        .map_err(file_error)?;
        self.send(Bytes::from(data))
    }

    fn must_wait(&self) -> bool {
        !self.pending.is_empty()
    }

    fn wait(&mut self) -> Result<(), SinkError> {
        while let Some(chunk) = self.pending.pop_front() {
            // An application thread, not a tokio one: blocking is allowed.
            self.sender()?
                .blocking_send(Ok(chunk))
                .map_err(|_| SinkError::Disconnected)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.wait()?;
        // Dropping the sender ends the body.
        self.chunks = None;
        Ok(())
    }

    fn abort(&mut self, error: &AppError) {
        self.pending.clear();
        if let Some(head) = self.head.take() {
            let _ = head.send(ResponseHead {
                status: 500,
                reason: Bytes::from_static(b"Internal Server Error"),
                headers: vec![(
                    Bytes::from_static(b"content-length"),
                    Bytes::from_static(b"0"),
                )],
                content_length: Some(0),
            });
        } else if let Some(chunks) = &self.chunks {
            // Headers are out: an error in the body makes hyper cut the
            // connection, so the client sees a truncated response.
            let _ = chunks.blocking_send(Err(io::Error::other(error.to_string())));
        }
        self.chunks = None;
    }

    fn is_started(&self) -> bool {
        self.started
    }
}
