//! The application threads of a process and the bounded queue that feeds
//! them: the backpressure point between connections and the application.
//!
//! A connection waits (asynchronously, on a semaphore) for a queue slot
//! before it hands a parsed request over; while the queue is full it reads
//! nothing more, so TCP pushes back on clients. Idle keep-alive connections
//! hold no slot.
//!
//! With `--timeout`, a watchdog thread looks at the threads' busy stamps:
//! a request past the timeout has its runtime interrupt it (CPython: its
//! stack logged, an exception raised in its thread); one still running
//! `--timeout-grace` later is abandoned: its response is ended (a 500, or a
//! cut connection), and the worker stops accepting so its other requests
//! finish and the master replaces it.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::Notify;
use wsgi_core::{AppError, Application, FileRegion, Request, RequestSource, ResponseHead};
use wsgi_core::{ResponseSink, SinkError};

use crate::linger::{self, Bell, LentSlot, Linger, Next, Woke};
use crate::scoreboard::{Retire, WorkerSlot};

/// The per-request timeout the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// A request running longer is interrupted.
    pub timeout: Duration,
    /// Then, a request still running after this is abandoned and the
    /// worker retires.
    pub grace: Duration,
}

/// What the watchdog says about a request in its log lines.
#[derive(Debug, Clone, Default)]
struct RequestNote {
    method: Bytes,
    uri: Bytes,
    peer: Bytes,
    port: Bytes,
}

impl std::fmt::Display for RequestNote {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} {} from {}",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.uri),
            String::from_utf8_lossy(&self.peer)
        )?;
        if !self.port.is_empty() {
            write!(formatter, ":{}", String::from_utf8_lossy(&self.port))?;
        }
        Ok(())
    }
}

/// Per application thread, while the watchdog runs: the current request's
/// note and its response sink, which the watchdog can end if the thread
/// never comes back.
#[derive(Debug, Default)]
struct Guarded {
    note: RequestNote,
    sink: Option<Box<dyn ResponseSink>>,
}

/// A thread's [`Guarded`] behind one state word: the current request's
/// serial (it tells a late sink of an earlier request from the current one)
/// shifted left by one, and a held bit. Whoever sets the bit owns the cell
/// until it clears it: the thread at the start of a request and in its
/// sink calls (none of which waits: see [`GuardedSink::wait`]), or the
/// watchdog. One compare-exchange and one store per sink call, where a
/// mutex cost twice that with its poisoning checks.
#[derive(Default)]
struct Guard {
    state: AtomicU64,
    cell: UnsafeCell<Guarded>,
}

// SAFETY: the cell is only reached through `Held`, which the held bit of
// `state` makes exclusive (set by a compare-exchange with acquire ordering,
// cleared by a release store); its contents are `Send`.
unsafe impl Sync for Guard {}

impl std::fmt::Debug for Guard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Guard")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

const HELD: u64 = 1;

impl Guard {
    /// Holds the cell, if its request is still `serial`.
    fn hold(&self, serial: u64) -> Option<Held<'_>> {
        self.hold_if(|current| current == serial)
    }

    /// Holds the cell, whatever its request.
    fn hold_any(&self) -> Held<'_> {
        loop {
            if let Some(held) = self.hold_if(|_| true) {
                return held;
            }
        }
    }

    /// Holds the cell if `wanted` accepts its serial. The other side holds
    /// it only for a moment: spin, then yield.
    fn hold_if(&self, wanted: impl Fn(u64) -> bool) -> Option<Held<'_>> {
        let mut spins = 0u32;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if !wanted(state >> 1) {
                return None;
            }
            if state & HELD == 0 {
                if self
                    .state
                    .compare_exchange_weak(
                        state,
                        state | HELD,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Some(Held {
                        guard: self,
                        serial: state >> 1,
                    });
                }
                continue;
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// The cell of a [`Guard`], held; released (with its serial) when dropped,
/// also while unwinding.
struct Held<'a> {
    guard: &'a Guard,
    serial: u64,
}

impl Held<'_> {
    fn cell(&mut self) -> &mut Guarded {
        // SAFETY: the held bit is ours (see `Guard`), so nobody else reaches
        // the cell until `drop` clears it; `&mut self` keeps this borrow
        // unique on our side.
        unsafe { &mut *self.guard.cell.get() }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.guard.state.store(self.serial << 1, Ordering::Release);
    }
}

/// A queued request waits at most about this long for a busy application
/// thread before another idle one is woken for it.
///
/// With a global interpreter lock only one thread runs Python at a time:
/// waking a second thread for a queue the first one drains in microseconds
/// only buys lock hand-offs and context switches. A request that waits this
/// long means the busy thread is in something slow (I/O, a sleep, a long
/// computation), and then another thread is worth its wake-up.
pub const STARVATION_DELAY: Duration = Duration::from_millis(2);

/// A queued request that has waited this long gets another thread even if
/// the busy ones are computing: CPython then shares the GIL between them
/// (every 5 ms), so a short request is not stuck behind a long CPU-bound one.
pub const FAIRNESS_DELAY: Duration = Duration::from_millis(25);

#[derive(Debug)]
struct QueueState {
    /// Queued requests, stamped on the I/O thread's clock (the starvation
    /// watchdog reads their age there; tests pause that clock).
    /// With a connection lent along when it was read on no task of its
    /// own (a connection just accepted): the thread keeps it for the request.
    jobs: VecDeque<(Request, tokio::time::Instant, Handover)>,
    closed: bool,
    /// Application threads in all.
    threads: usize,
    /// Threads not serving a request (including notified ones not yet up).
    idle_threads: usize,
    /// Threads notified and not yet woken.
    notified: usize,
    /// Idle threads asleep, the most recently idle last. They are woken last
    /// in, first out, so one thread serves for as long as it keeps up and
    /// stays hot in the cache: rotating over four threads cost ~12 % of the
    /// throughput of hello at 16 connections (docs/performance.md).
    sleepers: Vec<usize>,
    /// Per thread: a wake-up was sent to it and not yet taken.
    woken: Vec<bool>,
    /// Per thread: serving a request.
    busy: Vec<bool>,
    /// The starvation watchdog task is running.
    watchdog_armed: bool,
    /// Per thread: a connection the I/O thread lent it, not yet taken up.
    lent_for: Vec<Handover>,
    /// Places left in the queue (`--backlog` of requests). Counted here,
    /// under the lock every submit and take holds anyway: a semaphore cost
    /// a second lock per request to give its permit back.
    free_slots: usize,
    /// Submits waiting for a place (each registered with `slot_freed`).
    slot_waiters: usize,
}

/// A connection handed to a thread (see [`crate::linger`]).
#[derive(Default)]
struct Handover(Option<Box<dyn Linger>>);

impl std::fmt::Debug for Handover {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.0.is_some() { "lent" } else { "-" })
    }
}

impl QueueState {
    /// Threads running or about to run a request.
    fn active(&self) -> usize {
        self.threads - self.idle_threads + self.notified
    }

    fn can_wake(&self) -> bool {
        !self.sleepers.is_empty() && !self.jobs.is_empty()
    }

    /// Picks the sleeper to wake (the most recently idle) and counts it
    /// notified; the caller notifies its condvar after unlocking.
    fn pick_sleeper(&mut self) -> Option<usize> {
        let index = self.sleepers.pop()?;
        self.woken[index] = true;
        self.notified += 1;
        Some(index)
    }
}

/// The queue shared by connections (producers) and application threads.
#[derive(Debug)]
pub struct JobQueue {
    state: Mutex<QueueState>,
    /// One per thread: a wake-up goes to the thread chosen, not to any.
    wakeups: Vec<Condvar>,
    /// Per thread: its `/proc/thread-self/stat`, opened by the thread, to
    /// tell a thread that computes from one that waits.
    thread_stats: Vec<OnceLock<File>>,
    /// Rung when a place frees while submits wait, and at close.
    slot_freed: Notify,
    /// This worker's scoreboard slot: requests served, busy stamps.
    worker: &'static WorkerSlot,
    /// A wake-up is wanted on the I/O thread in this tick.
    wake_scheduled: AtomicBool,
    /// The I/O thread's wake-up task runs (see [`JobQueue::wake_task`]).
    wake_task_running: AtomicBool,
    /// Schedules that task.
    wake_task_waker: AtomicWaker,
    /// Per thread, when `--timeout` is on (empty otherwise).
    guarded: Vec<Guard>,
    /// Per thread: rung to wake it while it waits on a lent connection.
    bells: Vec<Bell>,
    /// Per thread: it waits on a lent connection (and its bell), not on
    /// its condvar.
    lingering: Vec<AtomicBool>,
    /// A graceful stop began: lent connections go home, none is lent.
    recalling: AtomicBool,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a request to the application threads, waiting for a slot.
    /// Returns whether it is the only request in the pool (no thread busy,
    /// nothing else queued), or the request back if the queue is closed.
    ///
    /// Must run on the I/O thread's `LocalSet` (it schedules wake-ups there).
    pub async fn submit(self: &Arc<Self>, request: Request) -> Result<bool, Box<Request>> {
        loop {
            let freed = {
                let mut state = self.lock();
                if state.closed {
                    return Err(Box::new(request));
                }
                if state.free_slots > 0 {
                    state.free_slots -= 1;
                    return Ok(self.push_open(state, request, None));
                }
                // Registered before the lock goes, so neither a freed place
                // nor the close can ring before this submit listens.
                let mut freed = Box::pin(self.slot_freed.notified());
                freed.as_mut().enable();
                state.slot_waiters += 1;
                freed
            };
            let waiting = SlotWaiter(self);
            freed.await;
            drop(waiting);
        }
    }

    /// A place in the queue if one is free now, for [`Reserved::submit`].
    pub fn try_reserve(self: &Arc<Self>) -> Option<Reserved<'_>> {
        let mut state = self.lock();
        if state.closed || state.free_slots == 0 {
            return None;
        }
        state.free_slots -= 1;
        Some(Reserved(Some(self)))
    }

    /// Gives a place back (with the lock held); whether a submit waits for
    /// one, to be rung once the lock is gone.
    fn free_slot(state: &mut QueueState) -> bool {
        state.free_slots += 1;
        state.slot_waiters > 0
    }

    /// Queues a request on an open queue (whose lock is `state`); whether
    /// it is the only request in the pool.
    fn push_open(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, QueueState>,
        request: Request,
        lent: Option<Box<dyn Linger>>,
    ) -> bool {
        state
            .jobs
            .push_back((request, tokio::time::Instant::now(), Handover(lent)));
        self.worker.counters.queued.fetch_add(1, Ordering::Relaxed);
        let nobody_active = state.active() == 0;
        let alone = nobody_active && state.jobs.len() == 1;
        let arm_watchdog = !nobody_active && state.can_wake() && !state.watchdog_armed;
        if arm_watchdog {
            state.watchdog_armed = true;
        }
        drop(state);
        // Nobody is running: wake one thread, once per I/O tick, from a task
        // queued behind the other connections that are ready now (the woken
        // thread would otherwise preempt the I/O thread after every request:
        // they share a core). Somebody is running: it takes the job when it
        // is done, without a context switch; the watchdog steps in if not.
        if nobody_active && !self.wake_scheduled.swap(true, Ordering::AcqRel) {
            if self.wake_task_running.swap(true, Ordering::AcqRel) {
                self.wake_task_waker.wake();
            } else {
                tokio::task::spawn_local(Arc::clone(self).wake_task());
            }
        }
        if arm_watchdog {
            tokio::task::spawn_local(Arc::clone(self).starvation_watchdog());
        }
        alone
    }

    /// The I/O thread's one wake-up task, for the life of its runtime:
    /// scheduling it is a waker's wake (it runs behind the connections
    /// ready in this tick), where a task spawned per tick cost an
    /// allocation and a task's set-up and tear-down per request at one
    /// connection.
    async fn wake_task(self: Arc<Self>) {
        /// The runtime dropped the task: the next submit spawns another.
        struct Running<'a>(&'a AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _running = Running(&self.wake_task_running);
        loop {
            std::future::poll_fn(|context| {
                self.wake_task_waker.register(context.waker());
                if self.wake_scheduled.swap(false, Ordering::AcqRel) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
            Arc::clone(&self).wake_first_thread();
        }
    }

    fn wake_first_thread(self: Arc<Self>) {
        let mut state = self.lock();
        if !state.can_wake() {
            return;
        }
        let Some(sleeper) = state.pick_sleeper() else {
            return;
        };
        let arm_watchdog = state.jobs.len() > 1 && !state.watchdog_armed;
        state.watchdog_armed |= arm_watchdog;
        drop(state);
        self.wake_thread(sleeper);
        if arm_watchdog {
            tokio::task::spawn_local(self.starvation_watchdog());
        }
    }

    /// Runs while requests are queued: wakes another idle thread when the
    /// oldest one has waited [`STARVATION_DELAY`] and every busy thread is
    /// waiting (on I/O, a sleep, a lock): another thread can then run. A
    /// busy thread that computes holds the GIL, and a second thread would
    /// only fight it for the lock (measured on hello at 128 connections:
    /// 60 % fewer context switches; docs/performance.md); it gets one only
    /// after [`FAIRNESS_DELAY`].
    async fn starvation_watchdog(self: Arc<Self>) {
        let mut busy = Vec::new();
        loop {
            tokio::time::sleep(STARVATION_DELAY).await;
            let mut state = self.lock();
            if state.jobs.is_empty() || state.closed {
                state.watchdog_armed = false;
                return;
            }
            let oldest = state
                .jobs
                .front()
                .map_or(Duration::ZERO, |(_, queued, _)| queued.elapsed());
            if !state.can_wake() || oldest < STARVATION_DELAY {
                continue;
            }
            busy.clear();
            busy.extend(
                state
                    .busy
                    .iter()
                    .enumerate()
                    .filter_map(|(index, &busy)| busy.then_some(index)),
            );
            drop(state);
            if oldest < FAIRNESS_DELAY && busy.iter().any(|&index| self.is_computing(index)) {
                continue;
            }
            let mut state = self.lock();
            let sleeper = if state.can_wake() {
                state.pick_sleeper()
            } else {
                None
            };
            drop(state);
            if let Some(sleeper) = sleeper {
                self.wake_thread(sleeper);
            }
        }
    }

    /// Whether application thread `index` is running or ready to run (state
    /// `R` in its `/proc` stat) rather than waiting. Unknown counts as
    /// waiting, which wakes another thread as before this check existed.
    fn is_computing(&self, index: usize) -> bool {
        let Some(stat) = self.thread_stats.get(index).and_then(OnceLock::get) else {
            return false;
        };
        let mut buffer = [0u8; 512];
        let Ok(read) = stat.read_at(&mut buffer, 0) else {
            return false;
        };
        // The state follows the command name, which may hold spaces and ')'.
        let text = &buffer[..read];
        text.iter()
            .rposition(|&byte| byte == b')')
            .and_then(|end| text.get(end + 2))
            .is_some_and(|&state| state == b'R')
    }

    /// Called by application thread `index` on itself when it starts.
    fn note_thread_start(&self, index: usize) {
        if let (Some(slot), Ok(stat)) = (
            self.thread_stats.get(index),
            File::open("/proc/thread-self/stat"),
        ) {
            let _ = slot.set(stat);
        }
    }

    /// Requests served so far by this process.
    pub fn served(&self) -> u64 {
        self.worker.served()
    }

    /// Stops handing out requests: threads exit when the queue is empty.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        // Every waiting submit registered before it let the lock go.
        self.slot_freed.notify_waiters();
        for wakeup in &self.wakeups {
            wakeup.notify_all();
        }
        self.ring_lingering();
    }

    /// Wakes thread `index`, chosen (and counted notified) under the lock:
    /// on its condvar, or on its bell if it waits on a lent connection.
    fn wake_thread(&self, index: usize) {
        self.wakeups[index].notify_one();
        if self.lingering[index].load(Ordering::Acquire) {
            self.bells[index].ring();
        }
    }

    fn ring_lingering(&self) {
        for (bell, lingering) in self.bells.iter().zip(&self.lingering) {
            if lingering.load(Ordering::Acquire) {
                bell.ring();
            }
        }
    }

    /// Lends a keep-alive connection to the most recently idle thread (see
    /// [`crate::linger`]), if the whole pool is idle: nothing queued,
    /// nobody running or woken. Otherwise gives it back.
    ///
    /// # Errors
    /// The pool is busy or stopping: the connection, untouched.
    pub fn lend(&self, lent: Box<dyn Linger>) -> Result<(), Box<dyn Linger>> {
        let mut state = self.lock();
        if state.closed
            || self.recalling.load(Ordering::Acquire)
            || !state.jobs.is_empty()
            || state.active() != 0
        {
            return Err(lent);
        }
        let free = |index: usize| {
            !self.lingering[index].load(Ordering::Acquire) && state.lent_for[index].0.is_none()
        };
        let Some(position) = state.sleepers.iter().rposition(|&index| free(index)) else {
            return Err(lent);
        };
        let index = state.sleepers.remove(position);
        state.woken[index] = true;
        state.notified += 1;
        state.lent_for[index].0 = Some(lent);
        drop(state);
        self.wakeups[index].notify_one();
        Ok(())
    }

    /// Nothing queued, nobody running or woken, no stop: a connection may
    /// be lent (see [`JobQueue::lend`]).
    pub fn is_idle(&self) -> bool {
        let state = self.lock();
        !state.closed
            && state.jobs.is_empty()
            && state.active() == 0
            && !self.recalling.load(Ordering::Acquire)
    }

    /// A graceful stop: every lent connection goes back to its task (which
    /// answers its next request with `Connection: close`), and none is
    /// lent from now on.
    pub fn recall_lent(&self) {
        self.recalling.store(true, Ordering::Release);
        self.ring_lingering();
    }
}

/// A place in the queue taken without waiting ([`JobQueue::try_reserve`]);
/// given back if dropped unused.
#[derive(Debug)]
pub struct Reserved<'q>(Option<&'q Arc<JobQueue>>);

impl Reserved<'_> {
    /// Queues `request`, whose connection `lent` goes to the thread that
    /// takes it. Must run on the I/O thread's `LocalSet`, as
    /// [`JobQueue::submit`]. Both back if the queue is closed.
    ///
    /// # Errors
    /// The queue is closed (a stop).
    pub fn submit<L: Linger + 'static>(
        mut self,
        request: Request,
        lent: Box<L>,
    ) -> Result<(), (Request, Box<L>)> {
        let Some(queue) = self.0 else {
            return Err((request, lent));
        };
        let state = queue.lock();
        if state.closed {
            // `Drop` gives the place back.
            return Err((request, lent));
        }
        self.0 = None;
        queue.push_open(state, request, Some(lent));
        Ok(())
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            let waiting = JobQueue::free_slot(&mut queue.lock());
            if waiting {
                queue.slot_freed.notify_one();
            }
        }
    }
}

/// A submit waiting for a place; uncounted when it stops waiting, even
/// by its task being dropped.
struct SlotWaiter<'q>(&'q JobQueue);

impl Drop for SlotWaiter<'_> {
    fn drop(&mut self) {
        self.0.lock().slot_waiters -= 1;
    }
}

/// What an application thread pulls requests from.
#[derive(Debug)]
struct ThreadSource {
    queue: Arc<JobQueue>,
    index: usize,
    /// The connection lent to this thread, if any (`crate::linger`).
    lent: LentSlot,
}

/// Back from a request: the thread is idle until it takes the next one.
fn leave_request(index: usize, state: &mut QueueState) {
    if state.busy[index] {
        state.busy[index] = false;
        state.idle_threads += 1;
    }
}

/// A request taken from the queue, with the connection lent along if any.
type TakenJob = (Request, Option<Box<dyn Linger>>);

/// Takes the first queued job, if any, and counts the thread busy.
fn take_job<'q>(
    queue: &'q JobQueue,
    index: usize,
    mut state: MutexGuard<'q, QueueState>,
) -> Result<TakenJob, MutexGuard<'q, QueueState>> {
    let Some((job, queued, lent)) = state.jobs.pop_front() else {
        return Err(state);
    };
    let counters = &queue.worker.counters;
    counters.queued.fetch_sub(1, Ordering::Relaxed);
    counters.queue_wait.observe(queued.elapsed());
    state.idle_threads -= 1;
    state.busy[index] = true;
    let waiting = JobQueue::free_slot(&mut state);
    drop(state);
    if waiting {
        queue.slot_freed.notify_one();
    }
    queue.worker.request_started(index);
    Ok((job, lent.0))
}

impl ThreadSource {
    /// A job taken: the connection that came with it, if any, is kept in
    /// this thread's slot while the request runs (the slot is empty: a
    /// connection lent before went home when jobs were queued).
    fn take_up(&self, job: Request, lent: Option<Box<dyn Linger>>) -> Request {
        if let Some(lent) = lent {
            lent.taken_by(&self.lent);
            self.lent.keep(lent);
        }
        self.guard(job)
    }

    /// With the watchdog on: notes the request and puts its sink where the
    /// watchdog can end it.
    fn guard(&self, request: Request) -> Request {
        let Some(guard) = self.queue.guarded.get(self.index) else {
            return request;
        };
        let Request {
            environ,
            input,
            output,
        } = request;
        let mut held = guard.hold_any();
        held.serial += 1;
        let serial = held.serial;
        let cell = held.cell();
        refresh(&mut cell.note.method, &environ.request_method);
        refresh(&mut cell.note.uri, &environ.request_uri);
        refresh(&mut cell.note.peer, &environ.remote_addr);
        refresh(&mut cell.note.port, &environ.remote_port);
        // Normally gone with the previous request's `GuardedSink`; one a
        // runtime kept is dropped outside the cell (its drop wakes the I/O
        // thread).
        let earlier = cell.sink.replace(output);
        drop(held);
        drop(earlier);
        Request {
            environ,
            input,
            output: Box::new(GuardedSink {
                queue: Arc::clone(&self.queue),
                index: self.index,
                serial,
            }),
        }
    }
}

/// Makes `kept` hold `value`'s bytes, without a clone (two atomic counts)
/// when it holds them already: the peer of a keep-alive connection, a
/// static method name. Bytes at the same place and of the same length are
/// the same bytes, since `kept` keeps its own alive.
fn refresh(kept: &mut Bytes, value: &Bytes) {
    if kept.as_ptr() != value.as_ptr() || kept.len() != value.len() {
        kept.clone_from(value);
    }
}

/// The response sink an application thread gets while the watchdog runs:
/// the real one stays with the queue, so the watchdog can end it.
#[derive(Debug)]
struct GuardedSink {
    queue: Arc<JobQueue>,
    index: usize,
    serial: u64,
}

impl GuardedSink {
    fn guard(&self) -> &Guard {
        &self.queue.guarded[self.index]
    }

    fn with<T>(&self, gone: T, action: impl FnOnce(&mut Box<dyn ResponseSink>) -> T) -> T {
        let Some(mut held) = self.guard().hold(self.serial) else {
            return gone;
        };
        match held.cell().sink.as_mut() {
            Some(sink) => action(sink),
            None => gone,
        }
    }
}

impl ResponseSink for GuardedSink {
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| sink.start(head))
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| sink.send(chunk))
    }

    fn send_file(&mut self, region: FileRegion) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| sink.send_file(region))
    }

    fn send_last(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| sink.send_last(chunk))
    }

    fn send_last_and_return(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| {
            sink.send_last_and_return(chunk)
        })
    }

    fn must_wait(&self) -> bool {
        self.with(false, |sink| sink.must_wait())
    }

    fn wait(&mut self) -> Result<(), SinkError> {
        // Not held: the wait blocks, and the watchdog must be able to
        // abandon the request meanwhile (it bumps the serial). The sink is
        // taken out and put back, unless the request was abandoned.
        let taken = match self.guard().hold(self.serial) {
            Some(mut held) => held.cell().sink.take(),
            None => return Err(SinkError::Disconnected),
        };
        let Some(mut sink) = taken else {
            return Err(SinkError::Disconnected);
        };
        let result = sink.wait();
        match self.guard().hold(self.serial) {
            Some(mut held) => {
                held.cell().sink = Some(sink);
                result
            }
            None => {
                sink.abort(&AppError::new("request timeout"));
                Err(SinkError::Disconnected)
            }
        }
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.with(Err(SinkError::Disconnected), |sink| sink.finish())
    }

    fn abort(&mut self, error: &AppError) {
        self.with((), |sink| sink.abort(error));
    }

    fn is_started(&self) -> bool {
        self.with(true, |sink| sink.is_started())
    }
}

impl Drop for GuardedSink {
    fn drop(&mut self) {
        // Dropped outside the cell: the real sink's drop wakes the I/O
        // thread.
        let sink = self
            .guard()
            .hold(self.serial)
            .and_then(|mut held| held.cell().sink.take());
        drop(sink);
    }
}

impl RequestSource for ThreadSource {
    fn thread_index(&self) -> usize {
        self.index
    }

    fn next_request(&mut self) -> Option<Request> {
        let queue = &*self.queue;
        let mut state = queue.lock();
        leave_request(self.index, &mut state);
        loop {
            if let Some(lent) = state.lent_for[self.index].0.take() {
                self.lent.keep(lent);
            }
            if self.lent.has()
                && (!state.jobs.is_empty()
                    || state.closed
                    || queue.recalling.load(Ordering::Acquire))
            {
                // Wanted elsewhere, or stopping: the connection goes home.
                drop(state);
                self.lent.send_home();
                state = queue.lock();
            }
            state = match take_job(queue, self.index, state) {
                Ok((job, lent)) => return Some(self.take_up(job, lent)),
                Err(state) => state,
            };
            if state.closed {
                return None;
            }
            if self.lent.has() {
                // Wait on the lent connection and the bell (see
                // `crate::linger`), listed as a sleeper so a queued request
                // still wakes this thread.
                let (fd, deadline) = self.lent.waiting().unwrap_or((-1, Instant::now()));
                state.sleepers.push(self.index);
                queue.lingering[self.index].store(true, Ordering::Release);
                drop(state);
                let woke = linger::wait(fd, &queue.bells[self.index], deadline);
                state = queue.lock();
                queue.lingering[self.index].store(false, Ordering::Release);
                if state.woken[self.index] {
                    // Chosen for a queued request: the loop's top sends the
                    // connection home and takes it.
                    state.woken[self.index] = false;
                    state.notified -= 1;
                    continue;
                }
                state.sleepers.retain(|&index| index != self.index);
                match woke {
                    // A stop (seen at the loop's top), or a stale ring.
                    Woke::Bell => continue,
                    Woke::Deadline => {
                        drop(state);
                        self.lent.send_home();
                        state = queue.lock();
                        continue;
                    }
                    Woke::Readable => {}
                }
                // Busy while it reads, as with a taken job.
                state.idle_threads -= 1;
                state.busy[self.index] = true;
                drop(state);
                if let Some(lent) = self.lent.take() {
                    match lent.next(&self.lent) {
                        Next::Serve(request, lent) => {
                            self.lent.keep(lent);
                            queue.worker.request_started(self.index);
                            return Some(self.guard(request));
                        }
                        Next::Wait(lent) => self.lent.keep(lent),
                        Next::Home => {}
                    }
                }
                state = queue.lock();
                leave_request(self.index, &mut state);
                continue;
            }
            // Wake-ups go only to threads on the sleepers' list, so none is
            // lost: `notified` always comes back down.
            state.sleepers.push(self.index);
            while !state.woken[self.index] && !state.closed {
                state = queue.wakeups[self.index]
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.woken[self.index] {
                state.woken[self.index] = false;
                state.notified -= 1;
            } else {
                state.sleepers.retain(|&index| index != self.index);
            }
        }
    }

    fn try_next_request(&mut self) -> Option<Request> {
        let queue = &*self.queue;
        let mut state = queue.lock();
        if state.jobs.is_empty() {
            return None;
        }
        if self.lent.has() {
            drop(state);
            self.lent.send_home();
            state = queue.lock();
        }
        leave_request(self.index, &mut state);
        let (job, lent) = take_job(queue, self.index, state).ok()?;
        Some(self.take_up(job, lent))
    }

    fn request_done(&mut self) {
        if self.queue.worker.request_finished(self.index) {
            // --max-requests reached: the worker stops accepting now, not at
            // its next periodic check.
            crate::stop::RETIRE_NOW.notify_one();
        }
        if let Some(lent) = self.lent.take().and_then(|lent| lent.after_request()) {
            self.lent.keep(lent);
        }
    }
}

/// What the watchdog did about a thread's current request.
#[derive(Debug, Clone, Copy)]
struct Handled {
    /// The busy stamp of the request.
    stamp: u64,
    /// When the runtime was asked to interrupt it.
    at: Instant,
    /// Given up on: its response ended, the worker retiring.
    abandoned: bool,
}

/// Enforces `--timeout` per application thread (see the module's doc).
fn watchdog(queue: &Arc<JobQueue>, app: &Arc<dyn Application>, watch: Watch) {
    let tick = (watch.timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let timeout_ms = watch.timeout.as_millis() as u64;
    let mut handled: Vec<Option<Handled>> = vec![None; queue.guarded.len()];
    loop {
        std::thread::sleep(tick);
        if queue.lock().closed {
            return;
        }
        let now = crate::scoreboard::now_millis();
        for (index, record) in handled.iter_mut().enumerate() {
            let stamp = queue.worker.busy_stamp(index);
            if stamp == 0 {
                *record = None;
                continue;
            }
            match *record {
                Some(done) if done.stamp == stamp => {
                    let overdue = !done.abandoned && done.at.elapsed() >= watch.grace;
                    if overdue {
                        abandon(queue, index, watch);
                        *record = Some(Handled {
                            abandoned: true,
                            ..done
                        });
                    }
                }
                _ if now.saturating_sub(stamp) >= timeout_ms => {
                    interrupt(queue, app, index, stamp, watch);
                    *record = Some(Handled {
                        stamp,
                        at: Instant::now(),
                        abandoned: false,
                    });
                }
                _ => {}
            }
        }
    }
}

fn note_of(queue: &JobQueue, index: usize) -> String {
    let mut held = queue.guarded[index].hold_any();
    held.cell().note.to_string()
}

/// Asks the runtime to stop thread `index`'s request, from a thread of its
/// own: the runtime may wait for its lock (a thread stuck in C holding the
/// GIL never gives it), and the grace must still be kept.
fn interrupt(
    queue: &Arc<JobQueue>,
    app: &Arc<dyn Application>,
    index: usize,
    stamp: u64,
    watch: Watch,
) {
    let note = note_of(queue, index);
    queue
        .worker
        .counters
        .timeouts
        .fetch_add(1, Ordering::Relaxed);
    crate::log!(
        Error,
        "Request timeout: {note} on application thread {index} has run over --timeout {}s: stopping it",
        watch.timeout.as_secs_f64()
    );
    let queue = Arc::clone(queue);
    let app = Arc::clone(app);
    let spawned = std::thread::Builder::new()
        .name("wsgi-interrupt".into())
        .spawn(move || {
            let still_stuck = || queue.worker.busy_stamp(index) == stamp;
            if !app.interrupt_thread(index, &note, &still_stuck) && still_stuck() {
                crate::log!(
                    Warning,
                    "The runtime could not interrupt {note}: it gets --timeout-grace {}s, then the worker is replaced",
                    watch.grace.as_secs_f64()
                );
            }
        });
    if let Err(error) = spawned {
        crate::log!(
            Error,
            "cannot start a thread to interrupt a request: {error}"
        );
    }
}

/// Gives up on thread `index`'s request: ends its response and retires
/// the worker, whose other requests finish.
fn abandon(queue: &JobQueue, index: usize, watch: Watch) {
    let mut held = queue.guarded[index].hold_any();
    held.serial += 1;
    let note = held.cell().note.to_string();
    let sink = held.cell().sink.take();
    drop(held);
    crate::log!(
        Error,
        "Request {note} on application thread {index} did not return {}s after the timeout (blocked outside Python code?): answering it 500 or closing its connection; this worker stops accepting, finishes its other requests and is replaced",
        watch.grace.as_secs_f64()
    );
    if let Some(mut sink) = sink {
        sink.abort(&AppError::new("request timeout"));
    }
    queue.worker.retire(Retire::StuckRequest);
    crate::stop::STUCK_REQUEST.notify_one();
}

/// The application threads of this process.
#[derive(Debug)]
pub struct AppPool {
    queue: Arc<JobQueue>,
    threads: Vec<JoinHandle<()>>,
}

impl AppPool {
    /// Starts `threads` threads, each given to `app.serve_thread` for life.
    ///
    /// # Errors
    /// The operating system refused a thread.
    pub fn start(
        app: Arc<dyn Application>,
        threads: usize,
        queue_size: usize,
        worker: &'static WorkerSlot,
        watch: Option<Watch>,
    ) -> std::io::Result<AppPool> {
        worker.threads.store(
            u32::try_from(threads.max(1)).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        let queue = Arc::new(JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
                threads: threads.max(1),
                // Counted idle from the start, so the first request wakes one
                // even before the threads reach their first wait.
                idle_threads: threads.max(1),
                notified: 0,
                sleepers: Vec::with_capacity(threads.max(1)),
                woken: vec![false; threads.max(1)],
                busy: vec![false; threads.max(1)],
                watchdog_armed: false,
                lent_for: (0..threads.max(1)).map(|_| Handover::default()).collect(),
                free_slots: queue_size.max(1),
                slot_waiters: 0,
            }),
            wakeups: (0..threads.max(1)).map(|_| Condvar::new()).collect(),
            thread_stats: (0..threads.max(1)).map(|_| OnceLock::new()).collect(),
            slot_freed: Notify::new(),
            worker,
            wake_scheduled: AtomicBool::new(false),
            wake_task_running: AtomicBool::new(false),
            wake_task_waker: AtomicWaker::new(),
            guarded: match watch {
                Some(_) => (0..threads.max(1)).map(|_| Guard::default()).collect(),
                None => Vec::new(),
            },
            bells: (0..threads.max(1))
                .map(|_| Bell::new())
                .collect::<std::io::Result<_>>()?,
            lingering: (0..threads.max(1))
                .map(|_| AtomicBool::new(false))
                .collect(),
            recalling: AtomicBool::new(false),
        });
        if let Some(watch) = watch {
            let queue = Arc::clone(&queue);
            let app = Arc::clone(&app);
            std::thread::Builder::new()
                .name("wsgi-watchdog".into())
                .spawn(move || watchdog(&queue, &app, watch))?;
        }
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let app = Arc::clone(&app);
            let mut source = ThreadSource {
                queue: Arc::clone(&queue),
                index,
                lent: LentSlot::default(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("wsgi-app-{index}"))
                .spawn(move || {
                    source.queue.note_thread_start(index);
                    app.serve_thread(&mut source);
                })?;
            handles.push(handle);
        }
        Ok(AppPool {
            queue,
            threads: handles,
        })
    }

    /// The queue connections submit to.
    pub fn queue(&self) -> Arc<JobQueue> {
        Arc::clone(&self.queue)
    }

    /// Closes the queue and waits up to `timeout` for the threads to finish
    /// their requests; returns whether all did.
    pub fn shutdown(self, timeout: Duration) -> bool {
        self.queue.close();
        let deadline = Instant::now() + timeout;
        for handle in self.threads {
            while !handle.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = handle.join();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{AppBody, AppOutput, Exchange, IoBatch, OutItem};

    fn request() -> (Request, Arc<Exchange>) {
        let exchange = Exchange::new(true, Duration::from_secs(1));
        let request = Request {
            environ: Box::default(),
            input: Box::new(AppBody::new(Arc::clone(&exchange), Some(0))),
            output: Box::new(AppOutput::new(Arc::clone(&exchange))),
        };
        (request, exchange)
    }

    const THREADS: usize = 4;

    /// Runs `body` on an I/O thread of its own against a pool of four
    /// threads of `app` (16 queue slots), then shuts the pool down. With
    /// `paused`, the I/O thread's clock stands still until the test
    /// advances it.
    fn with_pool<T, F>(
        paused: bool,
        app: Arc<dyn Application>,
        body: impl FnOnce(Arc<JobQueue>) -> F,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
        let pool = AppPool::start(app, THREADS, 16, slot, None).unwrap();
        let result = local.block_on(&runtime, body(pool.queue()));
        assert!(pool.shutdown(Duration::from_secs(10)));
        result
    }

    /// Waits until `done` holds, letting the I/O thread's tasks run in
    /// between without moving a paused clock; fails after 10 s of real
    /// time (a failure bound only: nothing here measures time).
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every application thread is asleep in its wait for a request.
    fn all_asleep(queue: &JobQueue) -> bool {
        queue.lock().sleepers.len() == THREADS
    }

    /// An application whose threads take a while to reach their first
    /// wait, as CPython's do (attach, build the environ template).
    struct SlowStart(Arc<dyn Application>);

    impl Application for SlowStart {
        fn serve_thread(&self, requests: &mut dyn RequestSource) {
            std::thread::sleep(Duration::from_millis(50));
            self.0.serve_thread(requests);
        }
    }

    /// Takes queued requests without blocking first, as the CPython
    /// runtime does to keep its GIL.
    struct TryFirst(Arc<dyn wsgi_core::Handler>);

    impl Application for TryFirst {
        fn serve_thread(&self, requests: &mut dyn RequestSource) {
            std::thread::sleep(Duration::from_millis(50));
            while let Some(request) = requests
                .try_next_request()
                .or_else(|| requests.next_request())
            {
                let mut request = request;
                match self.0.call(&mut request) {
                    Ok(()) => drop(request.output.finish()),
                    Err(error) => request.output.abort(&error),
                }
                drop(request);
                requests.request_done();
            }
        }
    }

    /// After every request is done, the queue must count no thread as active
    /// and no wake-up as outstanding; otherwise the next request waits for
    /// the starvation watchdog instead of waking a thread at once.
    #[test]
    fn idle_pool_has_no_active_thread_and_no_outstanding_wake() {
        let app = Arc::new(SlowStart(wsgi_core::testing::app_by_name("hello").unwrap()));
        check_idle_accounting(app);
    }

    /// The same with `try_next_request` taking the queued requests.
    #[test]
    fn accounting_holds_when_requests_are_taken_without_waiting() {
        check_idle_accounting(Arc::new(TryFirst(Arc::new(wsgi_core::testing::Hello))));
    }

    fn check_idle_accounting(app: Arc<dyn Application>) {
        // Submit at once: the first wake-up races the threads' start (a
        // notification sent before any thread waits must not be lost).
        with_pool(false, app, |queue| async move {
            for round in 0..3 {
                let mut exchanges = Vec::new();
                for _ in 0..5 {
                    let (request, exchange) = request();
                    assert!(queue.submit(request).await.is_ok());
                    exchanges.push(exchange);
                }
                // Broken accounting strands requests: fail, do not hang.
                until(&format!("round {round}: requests served"), || {
                    queue.served() >= 5 * (round + 1)
                })
                .await;
                // Every thread is back in its wait: the pool is idle now.
                until(&format!("round {round}: threads asleep"), || {
                    all_asleep(&queue)
                })
                .await;
                let state = queue.lock();
                assert_eq!(state.active(), 0, "round {round}");
                assert_eq!(state.notified, 0, "round {round}");
                assert!(state.jobs.is_empty());
            }
        });
    }

    /// Notes which thread served each request.
    struct WhoServes(Arc<Mutex<Vec<String>>>);

    impl wsgi_core::Handler for WhoServes {
        fn call(&self, request: &mut Request) -> Result<(), wsgi_core::AppError> {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            self.0.lock().unwrap().push(name);
            wsgi_core::Handler::call(&wsgi_core::testing::Hello, request)
        }
    }

    /// Where the first request is held, and the test's hand on it.
    #[derive(Default)]
    struct Hold {
        /// The thread serving the first request.
        thread: Mutex<Option<usize>>,
        /// Let go of the first request.
        released: Mutex<bool>,
        release: Condvar,
        /// The same, for a computing request (which never blocks).
        released_flag: AtomicBool,
    }

    impl Hold {
        fn release(&self) {
            self.released_flag.store(true, Ordering::SeqCst);
            *self.released.lock().unwrap() = true;
            self.release.notify_all();
        }
    }

    /// The first request holds its thread until the test lets go of it,
    /// computing (spinning: runnable all along) or waiting (on a condvar:
    /// asleep); the others answer at once.
    struct FirstHolds {
        computes: bool,
        hold: Arc<Hold>,
        seen: std::sync::atomic::AtomicUsize,
    }

    impl wsgi_core::Handler for FirstHolds {
        fn call(&self, request: &mut Request) -> Result<(), wsgi_core::AppError> {
            if self.seen.fetch_add(1, Ordering::SeqCst) == 0 {
                let index = self
                    .seen_thread()
                    .expect("an application thread is named wsgi-app-N");
                *self.hold.thread.lock().unwrap() = Some(index);
                if self.computes {
                    while !self.hold.released_flag.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                } else {
                    let mut released = self.hold.released.lock().unwrap();
                    while !*released {
                        released = self.hold.release.wait(released).unwrap();
                    }
                }
            }
            wsgi_core::Handler::call(&wsgi_core::testing::Hello, request)
        }
    }

    impl FirstHolds {
        fn seen_thread(&self) -> Option<usize> {
            std::thread::current()
                .name()?
                .strip_prefix("wsgi-app-")?
                .parse()
                .ok()
        }
    }

    /// How long, on the I/O thread's paused clock, a request queued behind
    /// a held one waits before the starvation watchdog wakes another
    /// thread for it. The clock moves only when the test advances it, a
    /// millisecond at a time with the watchdog looking after each step;
    /// then the woken thread must serve the request while the first one is
    /// still held.
    fn wait_behind_a_held_request(computes: bool) -> Duration {
        let hold = Arc::new(Hold::default());
        let app: Arc<dyn Application> = Arc::new(wsgi_core::HandlerApp(FirstHolds {
            computes,
            hold: Arc::clone(&hold),
            seen: std::sync::atomic::AtomicUsize::new(0),
        }));
        with_pool(true, app, |queue| async move {
            until("threads asleep", || all_asleep(&queue)).await;
            let (slow, _slow_exchange) = request();
            assert!(queue.submit(slow).await.is_ok());
            until("first request held", || {
                hold.thread.lock().unwrap().is_some()
            })
            .await;
            let held = hold.thread.lock().unwrap().unwrap();
            // The held thread is where it is meant to be: asleep on its
            // condvar, or running.
            until("held thread in its state", || {
                queue.is_computing(held) == computes
            })
            .await;
            assert_eq!(queue.lock().sleepers.len(), THREADS - 1);
            let (quick, _quick_exchange) = request();
            let queued = tokio::time::Instant::now();
            assert!(queue.submit(quick).await.is_ok());
            let waited = loop {
                {
                    let state = queue.lock();
                    if state.sleepers.len() < THREADS - 1 || state.jobs.is_empty() {
                        break queued.elapsed();
                    }
                }
                assert!(
                    queued.elapsed() < Duration::from_secs(1),
                    "no thread woken within 1 s of the paused clock"
                );
                tokio::time::advance(Duration::from_millis(1)).await;
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            };
            until("queued request served", || queue.served() >= 1).await;
            assert!(
                queue.lock().busy[held],
                "the first request is still held: another thread served"
            );
            hold.release();
            until("held request served", || queue.served() >= 2).await;
            waited
        })
    }

    /// Behind a request that waits (I/O, a sleep), another thread takes the
    /// next request after the starvation delay.
    #[test]
    fn a_waiting_thread_gets_help_soon() {
        let waited = wait_behind_a_held_request(false);
        assert!(waited >= STARVATION_DELAY, "waited {waited:?}");
        assert!(waited < FAIRNESS_DELAY, "waited {waited:?}");
    }

    /// Behind a request that computes (it would hold the GIL), another
    /// thread comes only after the fairness delay, and then it does.
    #[test]
    fn a_computing_thread_gets_help_only_after_the_fairness_delay() {
        let waited = wait_behind_a_held_request(true);
        assert!(waited >= FAIRNESS_DELAY, "waited {waited:?}");
        assert!(
            waited <= FAIRNESS_DELAY + 2 * STARVATION_DELAY,
            "waited {waited:?}"
        );
    }

    /// Requests one at a time, with the pool idle in between: the thread
    /// that went to sleep last is woken, so one thread serves them all
    /// (a shared condvar wakes the longest sleeper: all four in turn).
    #[test]
    fn an_idle_pool_wakes_its_most_recent_thread() {
        let served_by = Arc::new(Mutex::new(Vec::new()));
        let app: Arc<dyn Application> =
            Arc::new(wsgi_core::HandlerApp(WhoServes(Arc::clone(&served_by))));
        with_pool(false, app, |queue| async move {
            until("threads asleep", || all_asleep(&queue)).await;
            for round in 1..=8u64 {
                let (request, _exchange) = request();
                assert!(queue.submit(request).await.is_ok());
                until(&format!("request {round} served"), || {
                    queue.served() >= round
                })
                .await;
                // The thread goes back to sleep.
                until("threads asleep", || all_asleep(&queue)).await;
            }
        });
        let served_by = served_by.lock().unwrap();
        assert_eq!(served_by.len(), 8);
        assert!(
            served_by.iter().all(|name| name == &served_by[0]),
            "served by {served_by:?}"
        );
    }

    /// Hands each request it takes to the test, which plays the runtime.
    struct Handover(Mutex<std::sync::mpsc::Sender<Request>>);

    impl Application for Handover {
        fn serve_thread(&self, requests: &mut dyn RequestSource) {
            while let Some(request) = requests.next_request() {
                let _ = self.0.lock().unwrap().send(request);
                requests.request_done();
            }
        }
    }

    /// What the connection would be told about its response.
    fn batch(exchange: &Exchange) -> IoBatch {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let mut batch = IoBatch::default();
        let _ = exchange.poll_batch(&mut context, &mut batch);
        batch
    }

    /// An I/O thread's runtime and task set, and a scoreboard slot, for a
    /// test that drives the queue itself.
    fn io_thread() -> (
        tokio::runtime::Runtime,
        tokio::task::LocalSet,
        &'static WorkerSlot,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
        (runtime, tokio::task::LocalSet::new(), slot)
    }

    /// With the watchdog on, the runtime's sink goes through the thread's
    /// guard: a request the watchdog abandons has its response ended (a
    /// 500), the runtime's later calls on that sink fail as for a gone
    /// client, and that stale sink cannot reach the thread's next request.
    #[test]
    fn an_abandoned_request_loses_its_sink_and_the_next_one_keeps_its_own() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let app: Arc<dyn Application> = Arc::new(Handover(Mutex::new(sender)));
        let (runtime, local, slot) = io_thread();
        // Long enough that the watchdog itself never acts here.
        let watch = Watch {
            timeout: Duration::from_secs(3600),
            grace: Duration::from_secs(3600),
        };
        let pool = AppPool::start(app, 1, 4, slot, Some(watch)).unwrap();
        let queue = pool.queue();
        let head = || ResponseHead::new(b"200 OK", Vec::new()).unwrap();
        // Submits, and runs the I/O thread's tasks (the wake-up) until the
        // application thread hands the request over.
        let hand_over = |request: Request| {
            local.block_on(&runtime, async {
                assert!(queue.submit(request).await.is_ok());
                let mut taken = None;
                until("request taken", || {
                    taken = receiver.try_recv().ok();
                    taken.is_some()
                })
                .await;
                taken.unwrap()
            })
        };

        let (first, first_exchange) = request();
        let mut first = hand_over(first);
        abandon(&queue, 0, watch);
        let ended = batch(&first_exchange);
        assert!(ended.finished);
        assert_eq!(ended.aborted.as_deref(), Some("request timeout"));
        assert_eq!(first.output.start(head()), Err(SinkError::Disconnected));
        assert_eq!(first.output.wait(), Err(SinkError::Disconnected));
        assert!(first.output.is_started());

        let (second, second_exchange) = request();
        let mut second = hand_over(second);
        assert_eq!(
            first.output.send(Bytes::from_static(b"stale")),
            Err(SinkError::Disconnected)
        );
        first.output.abort(&AppError::new("late"));
        drop(first);
        second.output.start(head()).unwrap();
        assert!(!second.output.must_wait());
        second.output.send(Bytes::from_static(b"own")).unwrap();
        second.output.finish().unwrap();
        drop(second);
        let sent = batch(&second_exchange);
        assert_eq!(sent.head.map(|head| head.status), Some(200));
        let items: Vec<&OutItem> = sent.items.iter().collect();
        assert!(matches!(&items[..], [OutItem::Data(data)] if data == "own"));
        assert!(sent.finished);
        assert_eq!(sent.aborted, None);
        assert!(pool.shutdown(Duration::from_secs(10)));
    }

    /// Serves a request once the test opens the gate.
    struct Gate(Mutex<std::sync::mpsc::Receiver<()>>);

    impl Application for Gate {
        fn serve_thread(&self, requests: &mut dyn RequestSource) {
            while let Some(request) = requests.next_request() {
                let _ = self.0.lock().unwrap().recv();
                drop(request);
                requests.request_done();
            }
        }
    }

    /// A full queue holds a submit until a thread takes a job and frees a
    /// place; a close wakes a submit still waiting, with its request back,
    /// and nothing stays counted as waiting.
    #[test]
    fn a_full_queue_holds_submits_until_a_place_frees_or_it_closes() {
        let (gate, gate_receiver) = std::sync::mpsc::channel();
        let app: Arc<dyn Application> = Arc::new(Gate(Mutex::new(gate_receiver)));
        let (runtime, local, slot) = io_thread();
        let pool = AppPool::start(app, 1, 1, slot, None).unwrap();
        let queue = pool.queue();
        local.block_on(&runtime, async {
            // The first is taken (the thread then waits at the gate), the
            // second takes the only place.
            assert!(queue.submit(request().0).await.is_ok());
            until("the first taken", || queue.lock().jobs.is_empty()).await;
            assert!(queue.submit(request().0).await.is_ok());
            assert!(queue.try_reserve().is_none());
            let submit =
                |queue: Arc<JobQueue>| async move { queue.submit(request().0).await.is_ok() };
            let third = tokio::task::spawn_local(submit(Arc::clone(&queue)));
            until("the third waiting", || queue.lock().slot_waiters == 1).await;
            assert!(!third.is_finished());
            gate.send(()).unwrap();
            // 10 s bounds a hang only.
            let bounded = |task| tokio::time::timeout(Duration::from_secs(10), task);
            let third = bounded(third).await.expect("the third still waits");
            assert!(third.unwrap(), "the third queued once a place freed");
            let fourth = tokio::task::spawn_local(submit(Arc::clone(&queue)));
            until("the fourth waiting", || queue.lock().slot_waiters == 1).await;
            queue.close();
            let fourth = bounded(fourth).await.expect("the fourth still waits");
            assert!(!fourth.unwrap(), "the fourth refused by the close");
            assert_eq!(queue.lock().slot_waiters, 0);
        });
        for _ in 0..3 {
            let _ = gate.send(());
        }
        assert!(pool.shutdown(Duration::from_secs(10)));
    }
}
