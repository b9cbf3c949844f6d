//! Runs one serving process: the I/O thread (a single-threaded tokio
//! runtime) accepting on every listener, the application thread pool, and a
//! graceful stop.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use futures::FutureExt;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use wsgi_core::{Application, ConnInfo, PeerAddr, UrlScheme};

use crate::config::ServerConfig;
use crate::connection::{serve_adopted, serve_http};
use crate::lend::{serve_fresh, Adoptee, Adoption, Back};
use crate::listener::{local_tcp_addr, socket_address, BoundListener, Protocol};
use crate::pool::AppPool;
use crate::request::Shared;
use crate::scoreboard::WorkerSlot;
use crate::uwsgi::{serve_fresh_uwsgi, UwsgiAdoptee};

pub use crate::stop::Stop;

/// Puts the calling thread (the I/O thread) under `SCHED_BATCH`: woken by
/// the network, it no longer preempts a running application thread, but
/// runs when that thread blocks or its time slice ends, and then finds a
/// batch of work (responses to write, requests to read). On an idle core it
/// runs at once, as before. Measured on one core (docs/performance.md): a
/// Flask route at 16 connections +50 % (the I/O thread had preempted the
/// application thread once per request), hello at 128 connections +13 %,
/// hello at 1 and 16 connections and the body scenarios unchanged. No
/// privilege is needed; a refusal leaves the thread as it was.
fn batch_io_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on the calling thread (pid 0), with a
    // valid parameter block.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if result != 0 {
        crate::log!(
            Debug,
            "SCHED_BATCH for the I/O thread refused: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Serves on `listeners` until `stop` resolves, then stops as it says.
/// Blocks the calling thread (which becomes the I/O thread).
///
/// # Errors
/// The runtime or the application threads could not start.
pub fn run(
    listeners: Vec<BoundListener>,
    app: Arc<dyn Application>,
    config: &ServerConfig,
    worker: &'static WorkerSlot,
    stop: impl std::future::Future<Output = Stop> + 'static,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let watch = config.process.timeout.map(|timeout| crate::pool::Watch {
        timeout,
        grace: config.process.timeout_grace,
    });
    let pool = AppPool::start(app, config.threads, config.queue_size, worker, watch)?;
    // After the application threads are spawned: they keep the normal policy.
    batch_io_thread();
    let (shutdown_sender, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        limits: wsgi_http::Config {
            max_body_size: config.max_body_size,
            ..config.http_limits.clone()
        },
        uwsgi_limits: wsgi_uwsgi::Config {
            max_body_size: config.max_body_size,
            ..config.uwsgi_limits
        },
        timeouts: config.timeouts,
        environ: config.environ.clone(),
        forwarded_allow_ips: config.forwarded_allow_ips.clone(),
        uwsgi_allow_from: config.uwsgi_allow_from.clone(),
        queue: pool.queue(),
        body_buffering: config.body_buffering.clone(),
        body_budget: crate::buffering::BodyBudget::new(config.body_buffering.memory),
        shutdown,
        static_files: crate::ops::static_files::StaticFiles::open(&config.static_files),
        counters: &worker.counters,
        access_log: match &config.access_log {
            None => None,
            Some(settings) => {
                let log = crate::ops::access_log::AccessLog::start(
                    settings.path.clone(),
                    settings.format.clone(),
                    Some(&worker.counters.log_dropped),
                )?;
                crate::ops::access_log::set_global(log.clone());
                Some((log, settings.x_forwarded_for))
            }
        },
        health: config.health.clone(),
        draining: std::sync::atomic::AtomicBool::new(false),
        proxy_protocol: config.proxy_protocol.clone(),
        open_connections: std::sync::atomic::AtomicUsize::new(0),
    });
    let graceful = config.timeouts.graceful;
    let drain_delay = config.drain_delay;
    // One I/O thread: connection tasks need not be `Send`.
    let local = tokio::task::LocalSet::new();
    let how = local.block_on(&runtime, async {
        // Every connection task holds a sender; when all are dropped the
        // receiver sees the end (mini-redis's shutdown-complete pattern).
        let (alive_sender, mut alive) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            // The accept task owns the socket: when a stop aborts it, this
            // process stops listening at once.
            let is_unix = listener.is_unix();
            let protocol = listener.spec.protocol;
            let fd = listener.fd;
            let shared = Arc::clone(&shared);
            let alive_sender = alive_sender.clone();
            accept_tasks.push(tokio::task::spawn_local(accept_loop(
                fd,
                protocol,
                is_unix,
                shared,
                alive_sender,
            )));
        }
        drop(alive_sender);
        worker.ready.store(1, std::sync::atomic::Ordering::Release);
        // A task of its own: the future `block_on` drives is polled on
        // every wake-up of the I/O thread, and the stop future polls four
        // signal streams, three notifications and a tick each time
        // (callgrind: ~1,500 instructions per request). A join handle is
        // polled only when the stop task finishes.
        let how = tokio::task::spawn_local(stop)
            .await
            .unwrap_or(Stop::Immediate);
        shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Lent connections come back to their tasks, which close them as a
        // stop says.
        shared.queue.recall_lent();
        if how == Stop::Graceful && !drain_delay.is_zero() {
            // `--drain-delay`: the health path says 503 while everything
            // else goes on, so a checking balancer stops sending first.
            tokio::time::sleep(drain_delay).await;
        }
        let _ = shutdown_sender.send(true);
        if how == Stop::Graceful {
            // Each accept task takes what the kernel already accepted for
            // it, then drops its listener (see `drain_backlog`).
            for task in &mut accept_tasks {
                let _ = task.await;
            }
        } else {
            for task in &accept_tasks {
                task.abort();
            }
            // Let the aborted accept tasks be dropped (closing the
            // listeners) before waiting for the connections.
            tokio::task::yield_now().await;
        }
        if how == Stop::Graceful {
            let _ = tokio::time::timeout(graceful, alive.recv()).await;
        }
        Ok::<Stop, std::io::Error>(how)
    })?;
    // Dropping the runtime drops every connection task still running.
    drop(local);
    drop(runtime);
    let wait = match how {
        Stop::Graceful => Duration::from_secs(1),
        Stop::Immediate => Duration::from_millis(100),
    };
    if !pool.shutdown(wait) {
        crate::log!(Warning, "application threads still busy at exit");
    }
    Ok(())
}

/// Connections taken from the kernel per readiness of a listener, at most:
/// the other connections' work waits meanwhile.
const ACCEPT_BATCH: usize = 64;

/// Accepts connections on one listener until told to stop (or aborted).
///
/// The socket is accepted here with `accept4` rather than tokio's
/// `accept`, which registers every connection with the poller at once: an
/// HTTP connection whose first request is already in and closes it
/// (`Connection: close`, HTTP/1.0) is lent to an application thread with
/// that request and never registered (`crate::lend::serve_fresh`), saving
/// two `epoll_ctl` calls, a task and the I/O thread's part of the response.
async fn accept_loop(
    fd: OwnedFd,
    protocol: Protocol,
    is_unix: bool,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
) {
    let local = if is_unix {
        None
    } else {
        local_tcp_addr(fd.as_raw_fd())
    };
    // SAFETY: an `OwnedFd` returns the descriptor it owns, open until the
    // `AsyncFd` drops it.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    let listener = match registered {
        Ok(listener) => listener,
        Err(error) => {
            crate::log!(Error, "cannot use listener: {error}");
            return;
        }
    };
    // Connections lent before they had a task come back to their
    // protocol's adopter for one. HTTP ones are lent only without PROXY
    // headers to read first.
    let http_adopter = (protocol == Protocol::Http
        && shared.proxy_protocol.0 == crate::net::proxy_protocol::Mode::Off)
        .then(|| adopter(is_unix, &shared, spawn_adopted));
    let uwsgi_adopter =
        (protocol == Protocol::Uwsgi).then(|| adopter(is_unix, &shared, spawn_uwsgi_adopted));
    let mut stopping = shared.shutdown.clone();
    loop {
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(error) => {
                    accept_backoff(error).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let mut failed = None;
        for _ in 0..ACCEPT_BATCH {
            match accept_one(ready.get_inner().as_raw_fd()) {
                Ok(Some((fd, peer))) => {
                    let conn = conn_of(&fd, peer, local);
                    if let Some(adopter) = &uwsgi_adopter {
                        let adoption = Adoption {
                            adopter: adopter.clone(),
                            alive: alive.clone(),
                        };
                        if let Err(adoptee) = serve_fresh_uwsgi(fd, conn, &shared, adoption) {
                            spawn_uwsgi_adopted(*adoptee, is_unix, &shared);
                        }
                    } else if let Some(adopter) = &http_adopter {
                        let adoption = Adoption {
                            adopter: adopter.clone(),
                            alive: alive.clone(),
                        };
                        let conn = crate::connection::with_trust(conn, &shared);
                        if let Err(adoptee) = serve_fresh(fd, conn, &shared, adoption) {
                            spawn_adopted(*adoptee, is_unix, &shared);
                        }
                    } else {
                        spawn_fd(fd, conn, protocol, is_unix, &shared, &alive);
                    }
                }
                Ok(None) => {
                    ready.clear_ready();
                    break;
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        drop(ready);
        if let Some(error) = failed {
            accept_backoff(error).await;
        }
    }
    for (fd, peer) in drain_backlog(listener.as_raw_fd()) {
        let conn = conn_of(&fd, peer, local);
        spawn_fd(fd, conn, protocol, is_unix, &shared, &alive);
    }
}

/// Who is on an accepted socket: `peer` as `accept4` gave it (`None`: a
/// unix socket). A listener bound to one address answers on that address:
/// no getsockname(2) per connection then.
fn conn_of(fd: &OwnedFd, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> ConnInfo {
    let Some(peer) = peer else {
        return ConnInfo::unix();
    };
    let local = match local {
        Some(address) if !address.ip().is_unspecified() => Some(address),
        _ => local_tcp_addr(fd.as_raw_fd()).or(local),
    };
    ConnInfo::new(PeerAddr::Tcp(peer), local, UrlScheme::Http)
}

/// The task that spawns the tasks of connections lent before they had one
/// (`crate::lend::serve_fresh`), with `start`, as they come back; it ends
/// when its listener's accept loop and every such connection are gone.
fn adopter<A: Send + 'static>(
    is_unix: bool,
    shared: &Arc<Shared>,
    start: fn(A, bool, &Arc<Shared>),
) -> mpsc::UnboundedSender<A> {
    let (adopter, mut adoptions) = mpsc::unbounded_channel();
    let shared = Arc::clone(shared);
    tokio::task::spawn_local(async move {
        while let Some(adoptee) = adoptions.recv().await {
            start(adoptee, is_unix, &shared);
        }
    });
    adopter
}

/// Starts the task of a uwsgi connection that had none.
fn spawn_uwsgi_adopted(adoptee: UwsgiAdoptee, is_unix: bool, shared: &Arc<Shared>) {
    if adoptee.is_closed() {
        return;
    }
    if !is_unix {
        set_nodelay(adoptee.fd());
    }
    let shared = Arc::clone(shared);
    // Boxed: see `spawn_connection`.
    tokio::task::spawn_local(Box::pin(async move {
        if is_unix {
            adoptee.serve::<tokio::net::UnixStream>(shared).await;
        } else {
            adoptee.serve::<tokio::net::TcpStream>(shared).await;
        }
    }));
}

/// Starts the task of a connection that had none, from where it stands.
fn spawn_adopted(adoptee: Adoptee, is_unix: bool, shared: &Arc<Shared>) {
    let Adoptee {
        returned,
        conn,
        alive,
    } = adoptee;
    if matches!(returned.back, Back::Closed) {
        return;
    }
    if !is_unix {
        set_nodelay(returned.fd.as_raw_fd());
    }
    let shared = Arc::clone(shared);
    // One task type per transport, each as large as its own state (an
    // `async` block over both was as large as the larger, plus its captures).
    if is_unix {
        spawn_boxed(
            serve_adopted::<tokio::net::UnixStream>(returned, conn, shared),
            alive,
        );
    } else {
        spawn_boxed(
            serve_adopted::<tokio::net::TcpStream>(returned, conn, shared),
            alive,
        );
    }
}

/// Spawns `task` boxed (see `spawn_connection`), holding `alive` until it ends.
fn spawn_boxed(task: impl Future<Output = ()> + 'static, alive: mpsc::Sender<()>) {
    tokio::task::spawn_local(Box::pin(task.map(move |()| drop(alive))));
}

/// Registers an accepted socket with the I/O thread and spawns its task.
fn spawn_fd(
    fd: OwnedFd,
    conn: ConnInfo,
    protocol: Protocol,
    is_unix: bool,
    shared: &Arc<Shared>,
    alive: &mpsc::Sender<()>,
) {
    if is_unix {
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        if let Ok(stream) = tokio::net::UnixStream::from_std(std_stream) {
            spawn_connection(stream, conn, protocol, shared, alive);
        }
    } else {
        set_nodelay(fd.as_raw_fd());
        let std_stream = std::net::TcpStream::from(fd);
        if let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) {
            spawn_connection(stream, conn, protocol, shared, alive);
        }
    }
}

/// We coalesce writes ourselves; Nagle would only delay the last segment
/// of each response.
fn set_nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a plain system call on an open socket, with a live int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Takes one connection the kernel has queued: `None` when there is none
/// now. A connection its client gave up before it was taken is skipped.
fn accept_one(listener: RawFd) -> std::io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    loop {
        // SAFETY: zeroed bytes are a valid sockaddr_storage.
        let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a plain system call with a buffer and its length.
        let fd = unsafe {
            libc::accept4(
                listener,
                (&mut address as *mut libc::sockaddr_storage).cast(),
                &mut length,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: `accept4` returned a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            return Ok(Some((fd, socket_address(&address))));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted => {}
            std::io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(error),
        }
    }
}

/// Accepts, without waiting, every connection the kernel has queued on a
/// listener that is about to close. The kernel completes handshakes for a
/// listener before anyone accepts: closing it with connections queued
/// resets them, and a proxy that had already sent a request on one (nginx
/// does at once) sees a reset after sending, which it does not retry for a
/// POST (a 502; seen in test_nginx's rolling restarts under CPU load). So
/// a graceful stop serves them, with `Connection: close`; only a handshake
/// completed between this call and the close is still reset.
fn drain_backlog(listener: RawFd) -> Vec<(OwnedFd, Option<SocketAddr>)> {
    let mut accepted = Vec::new();
    // Bounded: a flood cannot keep a stopping worker here.
    while accepted.len() < 4096 {
        match accept_one(listener) {
            Ok(Some(one)) => accepted.push(one),
            _ => break,
        }
    }
    accepted
}

fn spawn_connection<S: crate::request::Transport + 'static>(
    stream: S,
    conn: ConnInfo,
    protocol: Protocol,
    shared: &Arc<Shared>,
    alive: &mpsc::Sender<()>,
) {
    let shared = Arc::clone(shared);
    let alive = alive.clone();
    // Boxed: the connection's state machine is several KiB, and tokio
    // moves a task's future by value on spawn and copies its stage on
    // every transition (callgrind: ~2,700 instructions of memcpy per
    // connection); a box moves as a pointer.
    match protocol {
        Protocol::Http => spawn_boxed(serve_http(stream, conn, shared), alive),
        Protocol::Uwsgi => spawn_boxed(crate::uwsgi::serve_uwsgi(stream, conn, shared), alive),
    }
}

/// Accept errors (EMFILE, ENFILE, ENOBUFS, ECONNABORTED) are transient:
/// log and pause briefly instead of spinning.
async fn accept_backoff(error: std::io::Error) {
    crate::log!(Warning, "accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
