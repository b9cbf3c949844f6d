//! The application threads of a process and the bounded queue that feeds
//! them: the backpressure point between connections and the application.
//!
//! A connection waits (asynchronously, on a semaphore) for a queue slot
//! before it hands a parsed request over; while the queue is full it reads
//! nothing more, so TCP pushes back on clients. Idle keep-alive connections
//! hold no slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wsgi_core::{Application, Request, RequestSource};

use crate::scoreboard::WorkerSlot;

#[derive(Debug)]
struct QueueState {
    jobs: VecDeque<Request>,
    closed: bool,
    idle_threads: usize,
}

/// The queue shared by connections (producers) and application threads.
#[derive(Debug)]
pub struct JobQueue {
    state: Mutex<QueueState>,
    job_ready: Condvar,
    slots: Semaphore,
    /// This worker's scoreboard slot: requests served, busy stamps.
    worker: &'static WorkerSlot,
    /// A wake-up task is queued on the I/O thread for this tick.
    wake_scheduled: AtomicBool,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a request to the application threads, waiting for a slot.
    /// Returns the request back if the queue is closed.
    pub async fn submit(self: &Arc<Self>, request: Request) -> Result<(), Box<Request>> {
        match self.slots.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Box::new(request)),
        }
        let mut state = self.lock();
        if state.closed {
            drop(state);
            self.slots.add_permits(1);
            return Err(Box::new(request));
        }
        state.jobs.push_back(request);
        // Wake a thread only if one is idle: a busy thread picks the job up
        // when it is done, without a context switch (or a GIL hand-off).
        // And wake it once per I/O tick, from a task queued behind the other
        // connections that are ready now: the woken thread would otherwise
        // preempt the I/O thread after every request (they share a core).
        let wake = state.idle_threads > 0;
        drop(state);
        if wake && !self.wake_scheduled.swap(true, Ordering::AcqRel) {
            let queue = Arc::clone(self);
            tokio::task::spawn_local(async move {
                queue.wake_scheduled.store(false, Ordering::Release);
                queue.wake_idle_thread();
            });
        }
        Ok(())
    }

    fn wake_idle_thread(&self) {
        let state = self.lock();
        let wake = state.idle_threads > 0 && !state.jobs.is_empty();
        drop(state);
        if wake {
            self.job_ready.notify_one();
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
        self.slots.close();
        self.job_ready.notify_all();
    }
}

/// What an application thread pulls requests from.
#[derive(Debug)]
struct ThreadSource {
    queue: Arc<JobQueue>,
    index: usize,
}

impl RequestSource for ThreadSource {
    fn next_request(&mut self) -> Option<Request> {
        let queue = &*self.queue;
        let mut state = queue.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                // More work and idle threads: pass the wake-up on, so
                // requests that arrived together run in parallel.
                let chain = !state.jobs.is_empty() && state.idle_threads > 0;
                drop(state);
                if chain {
                    queue.job_ready.notify_one();
                }
                queue.slots.add_permits(1);
                queue.worker.request_started(self.index);
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle_threads += 1;
            state = queue
                .job_ready
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.idle_threads -= 1;
        }
    }

    fn request_done(&mut self) {
        self.queue.worker.request_finished(self.index);
    }
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
    ) -> std::io::Result<AppPool> {
        let queue = Arc::new(JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
                idle_threads: 0,
            }),
            job_ready: Condvar::new(),
            slots: Semaphore::new(queue_size.max(1)),
            worker,
            wake_scheduled: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let app = Arc::clone(&app);
            let mut source = ThreadSource {
                queue: Arc::clone(&queue),
                index,
            };
            let handle = std::thread::Builder::new()
                .name(format!("wsgi-app-{index}"))
                .spawn(move || app.serve_thread(&mut source))?;
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
