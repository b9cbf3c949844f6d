//! The master process: forks the workers after every listener is bound,
//! supervises them, and turns signals into gunicorn's behaviour.
//!
//! # Theory of operation
//! The master runs no async runtime and no thread, so a fork copies nothing
//! half-done. Its loop wakes on a signal (through a self-pipe) or every
//! 200 ms, then: reaps dead workers and logs why each died; enforces the
//! request timeout (stack dump, then SIGKILL), resident-memory recycling and
//! graceful-stop deadlines; moves a rolling reload forward; and forks
//! workers until the wanted number of current-generation workers runs.
//!
//! | signal | meaning |
//! |---|---|
//! | TERM, INT | graceful stop: workers stop accepting, finish in-flight requests up to `--graceful-timeout`, then are killed |
//! | QUIT | fast stop |
//! | HUP | rolling reload: new workers (fresh imports) come up, then the old ones finish and leave |
//! | TTIN, TTOU | one worker more, one less |
//! | USR1 | reopen log files (and forward to the workers) |
//! | USR2 | upgrade: re-execute the binary as a new master sharing the listeners (gunicorn's `reexec`) |
//! | WINCH | during an upgrade or when daemonized: stop the workers gracefully, keep the master |
//! | TSTP, ALRM, VTALRM, PROF, IO, PWR, XCPU, XFSZ | logged and ignored: their default would stop or kill the master and orphan its workers |
//!
//! # Upgrade (USR2), as gunicorn
//! The old master forks a child that executes the binary again with the
//! listening sockets named in `WSGI_SERVER_FD` and its own pid in
//! `WSGI_SERVER_PID`. The new master writes `PIDFILE.2`; both serve. WINCH
//! to the old one stops its workers; TERM stops it. The new master, seeing
//! its parent gone, is promoted: it renames `PIDFILE.2` to `PIDFILE`. A new
//! master that dies leaves the old one serving (its pidfile untouched). A
//! master with an upgrade relative alive does not remove the unix sockets.
//!
//! Workers leave on their own after `--max-requests` (+ jitter) or
//! `--max-worker-lifetime`, recording why in their scoreboard slot; the
//! master replaces a leaving worker as soon as it stops counting as live, so
//! capacity never drops.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::ServerConfig;
use crate::listener::{BoundListener, Protocol};
use crate::ops::endpoint::{self, Endpoint, Kind};
use crate::ops::snapshot::{CounterTotals, ListenerView, Snapshot, WorkerView, RESTART_CAUSES};
use crate::process;
use crate::scoreboard::{Retire, Scoreboard, WorkerSlot};
use crate::signals::{self, SignalPipe};

/// Exit code of a worker whose application failed to load (gunicorn's).
pub const EXIT_APP_LOAD: i32 = 4;

/// Past `--timeout` + `--timeout-grace`, how long the master waits for a
/// worker's own watchdog before it kills the worker itself.
const BACKSTOP_MARGIN: Duration = Duration::from_secs(3);
/// How long a worker gets to dump its Python stacks before SIGKILL.
const STACK_DUMP_GRACE: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after its start counts as a crash
/// for the crash-loop backoff.
const CRASH_WINDOW: Duration = Duration::from_secs(5);

/// What a forked worker runs: returns its exit code.
pub type WorkerMain<'a> = dyn Fn(&WorkerContext<'_>) -> i32 + 'a;

/// What a worker is given.
#[derive(Debug)]
pub struct WorkerContext<'a> {
    /// The configuration.
    pub config: &'a ServerConfig,
    /// The listeners, shared with the master.
    pub listeners: &'a [BoundListener],
    /// This worker's scoreboard slot.
    pub slot: &'static WorkerSlot,
    /// Its number (1, 2, ...), for titles and logs.
    pub number: usize,
    /// The master's pid.
    pub master_pid: i32,
    /// The request count after which it recycles (0: never), jitter applied.
    pub max_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Forked; the application is loading.
    Booting,
    /// Accepting requests.
    Running,
    /// Asked to leave; killed at the deadline if still there.
    Stopping { deadline: Instant },
}

#[derive(Debug)]
struct Worker {
    pid: i32,
    slot: usize,
    number: usize,
    generation: u64,
    started: Instant,
    state: State,
    /// Why the master made it leave (for the death log line).
    cause: Option<String>,
}

/// What the master cleans up when it leaves (`--vacuum`), and whether it
/// is the new master of an upgrade.
#[derive(Debug, Default, Clone)]
pub struct ExitChores {
    /// The pidfile this master wrote (`PIDFILE.2` while it is the new one).
    pub pidfile: Option<PathBuf>,
    /// Unix sockets to remove.
    pub sockets: Vec<PathBuf>,
    /// The old master that started this one by USR2, until it exits.
    pub old_master: Option<i32>,
}

/// The master.
pub struct Master<'a> {
    config: &'a ServerConfig,
    listeners: Vec<BoundListener>,
    board: Scoreboard,
    signals: SignalPipe,
    worker_main: &'a WorkerMain<'a>,
    /// The runtime's and the user's hooks (fork protocol, gunicorn's
    /// server hooks).
    hooks: Option<&'a dyn MasterHooks>,
    workers: Vec<Worker>,
    target: usize,
    generation: u64,
    /// The generation being replaced by a rolling reload.
    retiring_generation: Option<u64>,
    next_number: usize,
    crashes: u32,
    next_spawn: Instant,
    stopping: Option<(Instant, bool)>,
    exit_code: i32,
    announced_ready: bool,
    last_rss_check: Instant,
    random: u64,
    chores: ExitChores,
    /// The new master this one started by USR2, while it runs.
    reexec_pid: Option<i32>,
    /// `--metrics-bind` and `--stats`.
    endpoints: Vec<Endpoint>,
    /// Counters of workers that left, so totals never go backwards.
    gone: CounterTotals,
    /// Worker restarts by cause ([`RESTART_CAUSES`] order).
    restarts: [u64; RESTART_CAUSES.len()],
    /// Per scoreboard slot: workers started in it.
    slot_spawns: Vec<u64>,
    /// Per worker pid: its request count at the previous stats read.
    last_read: std::collections::HashMap<i32, u64>,
}

impl std::fmt::Debug for Master<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Master")
            .field("workers", &self.workers)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Calls the master makes at its moments: around each fork (an interpreter
/// started in the master must be told) and gunicorn's server-hook moments.
/// Every method does nothing by default.
pub trait MasterHooks {
    /// In the master, just before forking worker `number`.
    fn before_fork(&self, number: usize) {
        let _ = number;
    }
    /// In the master, just after forking worker `number` (`pid`; negative
    /// if the fork failed).
    fn after_fork_parent(&self, number: usize, pid: i32) {
        let _ = (number, pid);
    }
    /// In the new worker `number`, first thing.
    fn after_fork_child(&self, number: usize) {
        let _ = number;
    }
    /// The master is about to start its workers (gunicorn's `when_ready`).
    fn when_ready(&self) {}
    /// A HUP reload begins.
    fn on_reload(&self) {}
    /// Worker `number` (`pid`) has exited and was reaped.
    fn child_exit(&self, number: usize, pid: i32) {
        let _ = (number, pid);
    }
    /// TTIN/TTOU changed the wanted number of workers.
    fn nworkers_changed(&self, new: usize, old: usize) {
        let _ = (new, old);
    }
    /// The master is about to exit.
    fn on_exit(&self) {}
    /// USR2: a new master is about to be executed (`pre_exec`).
    fn pre_exec(&self) {}
}

impl<'a> Master<'a> {
    /// A master for `listeners`, running `worker_main` in each worker.
    ///
    /// # Errors
    /// The scoreboard or the signal handlers could not be set up.
    pub fn new(
        config: &'a ServerConfig,
        listeners: Vec<BoundListener>,
        worker_main: &'a WorkerMain<'a>,
        hooks: Option<&'a dyn MasterHooks>,
    ) -> std::io::Result<Master<'a>> {
        let capacity = (config.process.workers * 4).max(64);
        Ok(Master {
            config,
            listeners,
            board: Scoreboard::new(capacity)?,
            signals: SignalPipe::install()?,
            worker_main,
            hooks,
            workers: Vec::new(),
            target: config.process.workers.max(1),
            generation: 1,
            retiring_generation: None,
            next_number: 1,
            crashes: 0,
            next_spawn: Instant::now(),
            stopping: None,
            exit_code: 0,
            announced_ready: false,
            last_rss_check: Instant::now(),
            random: u64::from(std::process::id()) ^ crate::scoreboard::now_millis(),
            chores: ExitChores::default(),
            reexec_pid: None,
            endpoints: Vec::new(),
            gone: CounterTotals::default(),
            restarts: [0; RESTART_CAUSES.len()],
            slot_spawns: vec![0; capacity],
            last_read: std::collections::HashMap::new(),
        })
    }

    /// The master's own endpoints (`--metrics-bind`, `--stats`).
    pub fn with_endpoints(mut self, endpoints: Vec<Endpoint>) -> Master<'a> {
        self.endpoints = endpoints;
        self
    }

    /// What to clean up at exit, and the old master if this one was started
    /// by an upgrade.
    pub fn with_exit_chores(mut self, chores: ExitChores) -> Master<'a> {
        self.chores = chores;
        self
    }

    /// Runs until stopped; returns the exit code.
    pub fn run(mut self) -> i32 {
        crate::log!(Info, "Starting master (pid: {})", std::process::id());
        self.set_title();
        if let Some(hooks) = self.hooks {
            hooks.when_ready();
        }
        loop {
            let fds: Vec<i32> = self
                .endpoints
                .iter()
                .map(|endpoint| std::os::fd::AsRawFd::as_raw_fd(&endpoint.listener.fd))
                .collect();
            let (arrived, ready) = self.signals.wait_with(&fds, 200);
            for signal in arrived {
                self.on_signal(signal);
            }
            if !ready.is_empty() {
                self.serve_endpoints(&ready);
            }
            self.reap();
            self.maybe_promote();
            if let Some((deadline, killed)) = self.stopping {
                if self.workers.is_empty() {
                    break;
                }
                if Instant::now() >= deadline && !killed {
                    for worker in &self.workers {
                        crate::log!(
                            Warning,
                            "Worker (pid: {}) still running at the stop deadline: killing it",
                            worker.pid
                        );
                        signals::send(worker.pid, libc::SIGKILL);
                    }
                    self.stopping = Some((deadline, true));
                }
                continue;
            }
            self.watch_workers();
            self.advance_reload();
            self.maintain_count();
            self.announce_ready();
        }
        crate::log!(Info, "Shutting down: Master");
        process::sd_notify("STOPPING=1");
        if let Some(hooks) = self.hooks {
            hooks.on_exit();
        }
        self.vacuum();
        self.exit_code
    }

    /// Answers the connections waiting on the ready endpoints.
    fn serve_endpoints(&mut self, ready: &[usize]) {
        let endpoints = std::mem::take(&mut self.endpoints);
        for &index in ready {
            if let Some(endpoint) = endpoints.get(index) {
                endpoint::serve(endpoint, &mut |kind| {
                    let snapshot = self.snapshot(kind != Kind::Metrics);
                    match kind {
                        Kind::Metrics => crate::ops::metrics::render(&snapshot),
                        Kind::Stats | Kind::StatsHttp => crate::ops::stats::render(
                            &snapshot,
                            crate::scoreboard::now_millis() / 1000,
                        ),
                    }
                });
            }
        }
        self.endpoints = endpoints;
    }

    /// The whole server now: the workers that left (`gone`) plus the live
    /// ones. `delta` advances uWSGI's `delta_requests` (a stats read).
    fn snapshot(&mut self, delta: bool) -> Snapshot {
        let mut totals = self.gone.clone();
        let mut workers = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let slot = self.board.slot(worker.slot);
            let mut counters = CounterTotals::default();
            counters.add(&slot.counters);
            totals.merge(&counters);
            let requests = counters.requests();
            let before = self.last_read.get(&worker.pid).copied().unwrap_or(0);
            if delta {
                self.last_read.insert(worker.pid, requests);
            }
            let threads = (slot.threads.load(std::sync::atomic::Ordering::Relaxed) as usize)
                .min(crate::scoreboard::MAX_THREADS);
            workers.push(WorkerView {
                number: worker.number,
                pid: worker.pid,
                accepting: slot.is_ready() && worker.state == State::Running,
                delta_requests: requests.saturating_sub(before),
                in_flight: slot
                    .counters
                    .in_flight
                    .load(std::sync::atomic::Ordering::Relaxed),
                queued: slot
                    .counters
                    .queued
                    .load(std::sync::atomic::Ordering::Relaxed),
                threads,
                busy: slot.busy_threads(),
                thread_requests: slot.thread_served[..threads]
                    .iter()
                    .map(|served| served.load(std::sync::atomic::Ordering::Relaxed))
                    .collect(),
                rss: process::rss_bytes(worker.pid).unwrap_or(0),
                vsz: vsz_bytes(worker.pid),
                started: slot
                    .started_millis
                    .load(std::sync::atomic::Ordering::Relaxed)
                    / 1000,
                respawns: self
                    .slot_spawns
                    .get(worker.slot)
                    .copied()
                    .unwrap_or(1)
                    .saturating_sub(1),
                counters,
            });
        }
        let listeners = self
            .listeners
            .iter()
            .map(|listener| {
                let (queue, max_queue) =
                    listen_queue(std::os::fd::AsRawFd::as_raw_fd(&listener.fd)).unwrap_or((0, 0));
                ListenerView {
                    // uWSGI's form: `127.0.0.1:3031`, or the socket's path.
                    name: match &listener.spec.addr {
                        crate::listener::BindAddr::Tcp(address) => address.to_string(),
                        crate::listener::BindAddr::Unix(path) => path.display().to_string(),
                        crate::listener::BindAddr::Fd(fd) => format!("fd://{fd}"),
                    },
                    protocol: match listener.spec.protocol {
                        Protocol::Http => "http",
                        Protocol::Uwsgi => "uwsgi",
                    },
                    queue,
                    max_queue,
                }
            })
            .collect();
        Snapshot {
            pid: std::process::id(),
            totals,
            workers,
            restarts: RESTART_CAUSES
                .iter()
                .zip(self.restarts)
                .map(|(cause, count)| (*cause, count))
                .collect(),
            listeners,
        }
    }

    /// At exit: our pidfile (only if it still names us), and the unix
    /// sockets unless an upgrade relative still listens on them (gunicorn).
    fn vacuum(&self) {
        if let Some(path) = &self.chores.pidfile {
            process::remove_pidfile_of(path, std::process::id() as i32);
        }
        if self.reexec_pid.is_none() && self.chores.old_master.is_none() {
            for path in &self.chores.sockets {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The new master of an upgrade whose old master has exited takes over
    /// the pidfile's name (gunicorn's `maybe_promote_master`).
    fn maybe_promote(&mut self) {
        let Some(old) = self.chores.old_master else {
            return;
        };
        // SAFETY: getppid cannot fail.
        if unsafe { libc::getppid() } == old {
            return;
        }
        crate::log!(
            Info,
            "Master has been promoted (the old master {old} is gone)"
        );
        self.chores.old_master = None;
        if let (Some(current), Some(wanted)) = (
            self.chores.pidfile.clone(),
            self.config.process.pidfile.clone(),
        ) {
            match process::write_pidfile(&wanted) {
                Ok(()) => {
                    process::remove_pidfile_of(&current, std::process::id() as i32);
                    self.chores.pidfile = Some(wanted);
                }
                Err(error) => crate::log!(
                    Error,
                    "cannot write the pidfile {}: {error}",
                    wanted.display()
                ),
            }
        }
    }

    /// USR2: start a new master on the same listeners.
    fn upgrade(&mut self) {
        if let Some(pid) = self.reexec_pid {
            crate::log!(
                Warning,
                "Handling signal: usr2: ignored, the new master (pid: {pid}) is running"
            );
            return;
        }
        if let Some(old) = self.chores.old_master {
            crate::log!(
                Warning,
                "Handling signal: usr2: ignored, this master is itself the new one of an upgrade (old master: {old})"
            );
            return;
        }
        if self.stopping.is_some() || self.listeners.is_empty() {
            crate::log!(Warning, "Handling signal: usr2: ignored while stopping");
            return;
        }
        use std::os::fd::AsRawFd;
        let fds: Vec<i32> = self
            .listeners
            .iter()
            .map(|listener| listener.fd.as_raw_fd())
            .collect();
        if let Some(hooks) = self.hooks {
            hooks.pre_exec();
        }
        match process::reexec(&fds) {
            Ok(pid) => {
                crate::log!(
                    Info,
                    "Handling signal: usr2: started a new master (pid: {pid}) on the same listeners"
                );
                self.reexec_pid = Some(pid);
            }
            Err(error) => crate::log!(
                Error,
                "Handling signal: usr2: cannot start a new master: {error}"
            ),
        }
    }

    /// WINCH: the workers leave gracefully, the master stays (the old
    /// master of an upgrade, or a daemon); otherwise a terminal's resize.
    fn stop_workers(&mut self) {
        if self.reexec_pid.is_none() && !self.config.process.daemon {
            crate::log!(
                Info,
                "Handling signal: winch: ignored (not daemonized and no upgrade under way)"
            );
            return;
        }
        crate::log!(Info, "Handling signal: winch: graceful stop of the workers");
        self.target = 0;
        self.retiring_generation = None;
        let deadline = Instant::now()
            + self.config.timeouts.graceful
            + self.config.drain_delay
            + Duration::from_secs(1);
        for worker in &mut self.workers {
            if !matches!(worker.state, State::Stopping { .. }) {
                worker.cause = Some("WINCH".into());
                worker.state = State::Stopping { deadline };
                signals::send(worker.pid, libc::SIGTERM);
            }
        }
    }

    fn set_title(&self) {
        let name = self.config.process.name.as_deref().unwrap_or("");
        let suffix = if name.is_empty() {
            String::new()
        } else {
            format!(" [{name}]")
        };
        process::set_title(&format!("wsgi-server: master{suffix}"));
    }

    fn on_signal(&mut self, signal: libc::c_int) {
        match signal {
            libc::SIGTERM | libc::SIGINT => {
                crate::log!(Info, "Handling signal: {}", signal_word(signal));
                let deadline = Instant::now()
                    + self.config.timeouts.graceful
                    + self.config.drain_delay
                    + Duration::from_secs(1);
                self.stop_all(libc::SIGTERM, deadline);
            }
            libc::SIGQUIT => {
                crate::log!(Info, "Handling signal: quit");
                self.stop_all(libc::SIGQUIT, Instant::now() + Duration::from_secs(2));
            }
            libc::SIGHUP => {
                crate::log!(Info, "Handling signal: hup: reloading workers");
                if let Some(hooks) = self.hooks {
                    hooks.on_reload();
                }
                if self.target == 0 {
                    // After WINCH: back to the configured count (gunicorn).
                    self.target = self.config.process.workers.max(1);
                }
                self.retiring_generation = Some(self.generation);
                self.generation += 1;
            }
            libc::SIGTTIN => {
                self.target += 1;
                crate::log!(Info, "Handling signal: ttin: {} workers", self.target);
                if let Some(hooks) = self.hooks {
                    hooks.nworkers_changed(self.target, self.target - 1);
                }
            }
            libc::SIGTTOU => {
                if self.target > 1 {
                    self.target -= 1;
                    if let Some(hooks) = self.hooks {
                        hooks.nworkers_changed(self.target, self.target + 1);
                    }
                }
                crate::log!(Info, "Handling signal: ttou: {} workers", self.target);
            }
            libc::SIGUSR1 => {
                crate::log::logger().reopen();
                crate::log!(Info, "Handling signal: usr1: log files reopened");
                for worker in &self.workers {
                    signals::send(worker.pid, libc::SIGUSR1);
                }
            }
            libc::SIGUSR2 => self.upgrade(),
            libc::SIGWINCH => self.stop_workers(),
            libc::SIGCHLD => {}
            other => {
                crate::log!(
                    Info,
                    "Ignoring signal {}: the master and its workers go on",
                    signals::name(other)
                );
            }
        }
    }

    fn stop_all(&mut self, signal: libc::c_int, deadline: Instant) {
        // Close our copies of the listeners at once (the workers close
        // theirs as they stop accepting): a new connection is then refused,
        // and a proxy fails over, instead of waiting in a backlog nobody
        // accepts from. systemd keeps its own copy of activated sockets.
        self.listeners.clear();
        for worker in &mut self.workers {
            worker.state = State::Stopping { deadline };
            worker.cause.get_or_insert_with(|| "server stop".into());
            signals::send(worker.pid, signal);
        }
        self.stopping = Some((deadline, false));
    }

    /// Collects dead workers and logs why each died.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.reexec_pid == Some(pid) {
                self.reexec_pid = None;
                self.on_new_master_exit(pid, status);
                continue;
            }
            let Some(position) = self.workers.iter().position(|worker| worker.pid == pid) else {
                continue;
            };
            let worker = self.workers.remove(position);
            let slot = self.board.slot(worker.slot);
            let served = slot.served();
            let retired = slot.retiring();
            self.gone.add(&slot.counters);
            self.last_read.remove(&pid);
            if let Some(cause) = restart_cause(&worker, retired, status) {
                if let Some(index) = RESTART_CAUSES.iter().position(|known| *known == cause) {
                    self.restarts[index] += 1;
                }
            }
            self.board.release(worker.slot);
            self.log_death(&worker, status, retired, served);
            if let Some(hooks) = self.hooks {
                hooks.child_exit(worker.number, worker.pid);
            }

            let asked = worker.cause.is_some() || retired != Retire::No;
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_APP_LOAD {
                self.on_boot_failure(&worker);
            } else if !asked && !clean && worker.started.elapsed() < CRASH_WINDOW {
                self.crashes += 1;
                let delay = Duration::from_millis(100 * (1u64 << self.crashes.min(7)))
                    .min(Duration::from_secs(10));
                crate::log!(
                    Warning,
                    "Worker crashed {} time(s) in a row soon after start; next start in {:.1}s",
                    self.crashes,
                    delay.as_secs_f64()
                );
                self.next_spawn = Instant::now() + delay;
            } else if worker.started.elapsed() >= CRASH_WINDOW {
                self.crashes = 0;
            }
        }
    }

    /// The new master of an upgrade exited while this one runs: this one
    /// goes on (with its workers back if WINCH had stopped them).
    fn on_new_master_exit(&mut self, pid: i32, status: libc::c_int) {
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by {}", signals::name(libc::WTERMSIG(status)))
        } else {
            format!("exited with code {}", libc::WEXITSTATUS(status))
        };
        crate::log!(
            Warning,
            "The new master (pid: {pid}) {how}: this master goes on serving"
        );
        if let Some(path) = &self.config.process.pidfile {
            process::remove_pidfile_of(&process::upgrade_pidfile(path), pid);
        }
        if self.target == 0 && self.stopping.is_none() {
            self.target = self.config.process.workers.max(1);
            crate::log!(Info, "Starting {} worker(s) again", self.target);
        }
    }

    fn log_death(&self, worker: &Worker, status: libc::c_int, retired: Retire, served: u64) {
        let who = format!("Worker {} (pid: {})", worker.number, worker.pid);
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let cause = match (&worker.cause, signal) {
                (Some(cause), _) => format!(" ({cause})"),
                (None, libc::SIGKILL) => ": perhaps out of memory?".to_owned(),
                (None, _) => " (crash)".to_owned(),
            };
            crate::log!(
                Error,
                "{who} was killed by {}{cause}",
                signals::name(signal)
            );
            return;
        }
        let code = libc::WEXITSTATUS(status);
        let reason = match retired {
            Retire::MaxRequests => Some(format!("max-requests reached ({served} requests served)")),
            Retire::Lifetime => Some("max-worker-lifetime reached".to_owned()),
            Retire::SourceChanged => Some("a source file changed (--reload)".to_owned()),
            Retire::StuckRequest => {
                Some("a request did not return after --timeout; replaced".to_owned())
            }
            Retire::Asked | Retire::No => worker.cause.clone(),
        };
        match (code, reason) {
            (0, Some(reason)) => crate::log!(Info, "{who} exited: {reason}"),
            (0, None) => crate::log!(Warning, "{who} exited unexpectedly with code 0"),
            (EXIT_APP_LOAD, _) => crate::log!(
                Error,
                "{who} exited with code 4: the application failed to load"
            ),
            (code, reason) => crate::log!(
                Error,
                "{who} exited with code {code}{}",
                reason
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_else(|| " (crash)".into())
            ),
        }
    }

    /// A worker could not load the application: at start-up the master
    /// stops (as gunicorn does: a config or code error will not heal by
    /// retrying); during a reload the old workers are kept.
    fn on_boot_failure(&mut self, worker: &Worker) {
        if let Some(old) = self
            .retiring_generation
            .filter(|_| worker.generation == self.generation)
        {
            crate::log!(
                Error,
                "Reload failed: the new code does not load; keeping the running workers"
            );
            for other in &mut self.workers {
                if other.generation == self.generation {
                    other.cause = Some("reload failed".into());
                    other.state = State::Stopping {
                        deadline: Instant::now() + Duration::from_secs(2),
                    };
                    signals::send(other.pid, libc::SIGTERM);
                }
            }
            self.generation = old;
            self.retiring_generation = None;
            return;
        }
        if !self
            .workers
            .iter()
            .any(|other| other.state == State::Running)
        {
            crate::log!(Error, "The application failed to load: stopping");
            self.exit_code = EXIT_APP_LOAD;
            self.stop_all(libc::SIGTERM, Instant::now() + Duration::from_secs(2));
        } else {
            self.next_spawn = Instant::now() + Duration::from_secs(1);
        }
    }

    /// Timeouts, memory, readiness and stop deadlines.
    fn watch_workers(&mut self) {
        let now = Instant::now();
        let check_rss = self.config.process.reload_on_rss.is_some()
            && now.duration_since(self.last_rss_check) >= Duration::from_millis(500);
        if check_rss {
            self.last_rss_check = now;
        }
        let graceful = self.config.timeouts.graceful;
        for worker in &mut self.workers {
            let slot = self.board.slot(worker.slot);
            match worker.state.clone() {
                State::Booting if slot.is_ready() => worker.state = State::Running,
                State::Booting => {}
                State::Stopping { deadline } => {
                    if now >= deadline {
                        crate::log!(
                            Warning,
                            "Worker {} (pid: {}) did not stop in time: killing it",
                            worker.number,
                            worker.pid
                        );
                        signals::send(worker.pid, libc::SIGKILL);
                        worker.state = State::Stopping {
                            deadline: now + Duration::from_secs(3600),
                        };
                    }
                }
                State::Running => {
                    if slot.retiring() == Retire::StuckRequest {
                        // The worker gave up on a request itself and
                        // drains its others: it gets the graceful time.
                        worker.state = State::Stopping {
                            deadline: now + graceful + Duration::from_secs(1),
                        };
                        continue;
                    }
                    if let Some(timeout) = self.config.process.timeout {
                        // The backstop: the worker's own watchdog acts at
                        // the timeout and again after the grace; a worker
                        // past both that has not retired is wholly stuck.
                        let limit = timeout + self.config.process.timeout_grace + BACKSTOP_MARGIN;
                        let busy = Duration::from_millis(slot.longest_busy_millis());
                        if busy > limit {
                            crate::log!(
                                Error,
                                "WORKER TIMEOUT: worker {} (pid: {}) has been in one request for {:.1}s (timeout {}s + grace {}s) and did not act itself: dumping its stacks, then killing it",
                                worker.number, worker.pid, busy.as_secs_f64(), timeout.as_secs_f64(),
                                self.config.process.timeout_grace.as_secs_f64()
                            );
                            signals::send(worker.pid, libc::SIGUSR2);
                            worker.cause = Some("timeout".into());
                            slot.retire(Retire::Asked);
                            worker.state = State::Stopping {
                                deadline: now + STACK_DUMP_GRACE,
                            };
                            continue;
                        }
                    }
                    if check_rss {
                        if let (Some(limit), Some(rss)) = (
                            self.config.process.reload_on_rss,
                            process::rss_bytes(worker.pid),
                        ) {
                            if rss > limit {
                                crate::log!(
                                    Warning,
                                    "Worker {} (pid: {}) uses {} MiB, over --reload-on-rss {} MiB: recycling it",
                                    worker.number, worker.pid, rss >> 20, limit >> 20
                                );
                                worker.cause = Some(format!("reload-on-rss: {} MiB", rss >> 20));
                                slot.retire(Retire::Asked);
                                signals::send(worker.pid, libc::SIGTERM);
                                worker.state = State::Stopping {
                                    deadline: now + graceful + Duration::from_secs(1),
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Rolling reload: once every worker of the new generation runs, the
    /// old ones are told to finish and leave.
    fn advance_reload(&mut self) {
        let Some(old) = self.retiring_generation else {
            return;
        };
        let new_running = self
            .workers
            .iter()
            .filter(|worker| worker.generation == self.generation && worker.state == State::Running)
            .count();
        if new_running < self.target {
            return;
        }
        let deadline = Instant::now()
            + self.config.timeouts.graceful
            + self.config.drain_delay
            + Duration::from_secs(1);
        for worker in &mut self.workers {
            if worker.generation == old && !matches!(worker.state, State::Stopping { .. }) {
                worker.cause = Some("reloaded".into());
                worker.state = State::Stopping { deadline };
                signals::send(worker.pid, libc::SIGTERM);
            }
        }
        crate::log!(
            Info,
            "Reload complete: {} new worker(s) serving",
            new_running
        );
        self.retiring_generation = None;
    }

    /// Forks or retires workers so that `target` live workers of the
    /// current generation remain.
    fn maintain_count(&mut self) {
        let live: Vec<usize> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, worker)| {
                worker.generation == self.generation
                    && !matches!(worker.state, State::Stopping { .. })
                    && self.board.slot(worker.slot).retiring() == Retire::No
            })
            .map(|(index, _)| index)
            .collect();
        if live.len() > self.target {
            // TTOU: the oldest leaves gracefully.
            let index = live[0];
            let deadline = Instant::now()
                + self.config.timeouts.graceful
                + self.config.drain_delay
                + Duration::from_secs(1);
            let worker = &mut self.workers[index];
            worker.cause = Some("fewer workers wanted (TTOU)".into());
            worker.state = State::Stopping { deadline };
            signals::send(worker.pid, libc::SIGTERM);
            return;
        }
        let mut missing = self.target - live.len();
        let wanted = missing;
        while missing > 0 && Instant::now() >= self.next_spawn {
            self.spawn();
            missing -= 1;
        }
        if missing < wanted {
            // What start-up read and the master's loop never reads again
            // (0.5-1.3 MiB of its resident memory; docs/performance.md).
            process::drop_clean_file_pages();
        }
    }

    fn announce_ready(&mut self) {
        if self.announced_ready {
            return;
        }
        let running = self
            .workers
            .iter()
            .filter(|worker| worker.state == State::Running)
            .count();
        if running >= self.target {
            self.announced_ready = true;
            process::sd_notify(&format!(
                "READY=1\nSTATUS=serving with {running} worker(s)\nMAINPID={}",
                std::process::id()
            ));
        }
    }

    fn jittered_max_requests(&mut self) -> u64 {
        let base = self.config.process.max_requests;
        let jitter = self.config.process.max_requests_jitter;
        if base == 0 || jitter == 0 {
            return base;
        }
        // xorshift64: spreading recycles needs no cryptographic randomness.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        base + self.random % (jitter + 1)
    }

    fn spawn(&mut self) {
        let Some(slot_index) = self.board.claim().inspect(|&index| {
            if let Some(spawns) = self.slot_spawns.get_mut(index) {
                *spawns += 1;
            }
        }) else {
            crate::log!(
                Error,
                "No free scoreboard slot: cannot start another worker"
            );
            self.next_spawn = Instant::now() + Duration::from_secs(1);
            return;
        };
        let number = self.next_number;
        self.next_number += 1;
        let max_requests = self.jittered_max_requests();
        let master_pid = std::process::id() as i32;
        if let Some(hooks) = self.hooks {
            hooks.before_fork(number);
        }
        // SAFETY: the master has no other threads, so the child starts from
        // a consistent copy; it never returns into this loop.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The master's endpoints are the master's alone.
            self.endpoints.clear();
            if let Some(hooks) = self.hooks {
                hooks.after_fork_child(number);
            }
            self.signals.reset_in_child();
            let context = WorkerContext {
                config: self.config,
                listeners: &self.listeners,
                slot: self.board.slot(slot_index),
                number,
                master_pid,
                max_requests,
            };
            let code = (self.worker_main)(&context);
            crate::log::logger().flush();
            // SAFETY: leaving the worker without running the master's
            // destructors (they would unlink the master's sockets).
            unsafe { libc::_exit(code) };
        }
        if let Some(hooks) = self.hooks {
            hooks.after_fork_parent(number, pid);
        }
        if pid < 0 {
            crate::log!(Error, "fork failed: {}", std::io::Error::last_os_error());
            self.board.release(slot_index);
            self.next_spawn = Instant::now() + Duration::from_secs(1);
            return;
        }
        self.board.set_pid(slot_index, pid);
        crate::log!(Info, "Booting worker {number} with pid: {pid}");
        self.workers.push(Worker {
            pid,
            slot: slot_index,
            number,
            generation: self.generation,
            started: Instant::now(),
            state: State::Booting,
            cause: None,
        });
    }
}

/// Why a worker that left is counted as restarted (`None`: it left for
/// good, as on a stop or TTOU).
fn restart_cause(worker: &Worker, retired: Retire, status: libc::c_int) -> Option<&'static str> {
    match retired {
        Retire::MaxRequests => return Some("max_requests"),
        Retire::Lifetime => return Some("lifetime"),
        Retire::SourceChanged => return Some("source_changed"),
        Retire::StuckRequest => return Some("timeout"),
        Retire::Asked | Retire::No => {}
    }
    match worker.cause.as_deref() {
        Some("timeout") => Some("timeout"),
        Some("reloaded") => Some("reload"),
        Some(cause) if cause.starts_with("reload-on-rss") => Some("rss"),
        Some(_) => None,
        None => {
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            (!clean).then_some("crash")
        }
    }
}

/// A TCP listener's accept queue now and its size (`TCP_INFO` on a
/// listening socket: `tcpi_unacked` and `tcpi_sacked`), as uWSGI reports
/// `listen_queue`.
fn listen_queue(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero tcp_info is valid; getsockopt fills at most `len`.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid descriptor, buffer and length.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (result == 0 && info.tcpi_state == 10/* TCP_LISTEN */)
        .then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

/// Virtual memory of `pid` in bytes (`/proc/PID/statm`'s first field).
fn vsz_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn signal_word(signal: libc::c_int) -> String {
    signals::name(signal)
        .trim_start_matches("SIG")
        .to_ascii_lowercase()
}
