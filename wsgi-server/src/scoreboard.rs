//! Per-worker state shared between the master and its workers, in an
//! anonymous shared mapping made before the first fork: each worker writes
//! its own slot (ready, requests served, when each application thread
//! started its current request), the master reads them to enforce timeouts
//! and to know why a worker is leaving.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Application threads a slot can track; more threads share the last stamp.
pub const MAX_THREADS: usize = 256;

/// Why a worker stops on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Retire {
    /// Not retiring.
    No = 0,
    /// `--max-requests` reached.
    MaxRequests = 1,
    /// `--max-worker-lifetime` reached.
    Lifetime = 2,
    /// The master asked (RSS, reload, fewer workers, stop).
    Asked = 3,
    /// `--reload`: a loaded source file changed.
    SourceChanged = 4,
    /// A request ran past `--timeout` and did not return.
    StuckRequest = 5,
}

impl Retire {
    fn from_u32(value: u32) -> Retire {
        match value {
            1 => Retire::MaxRequests,
            2 => Retire::Lifetime,
            3 => Retire::Asked,
            4 => Retire::SourceChanged,
            5 => Retire::StuckRequest,
            _ => Retire::No,
        }
    }
}

/// One worker's slot.
#[repr(C)]
#[derive(Debug)]
pub struct WorkerSlot {
    /// The worker's pid, 0 when the slot is free.
    pub pid: AtomicI32,
    /// 1 once the application is loaded and the worker accepts.
    pub ready: AtomicU32,
    /// Why the worker is leaving on its own ([`Retire`]).
    pub retiring: AtomicU32,
    /// Requests completed.
    pub served: AtomicU64,
    /// Retire after this many requests (0: never); set by the worker itself.
    pub max_requests: AtomicU64,
    /// Per application thread: when (ms since the epoch) its current request
    /// started; 0 when idle.
    pub busy_since: [AtomicU64; MAX_THREADS],
}

impl WorkerSlot {
    /// A fresh slot (for a process without a master).
    pub fn new() -> WorkerSlot {
        WorkerSlot {
            pid: AtomicI32::new(0),
            ready: AtomicU32::new(0),
            retiring: AtomicU32::new(0),
            served: AtomicU64::new(0),
            max_requests: AtomicU64::new(0),
            busy_since: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn reset(&self, pid: i32) {
        self.ready.store(0, Ordering::Relaxed);
        self.retiring.store(0, Ordering::Relaxed);
        self.served.store(0, Ordering::Relaxed);
        self.max_requests.store(0, Ordering::Relaxed);
        for stamp in &self.busy_since {
            stamp.store(0, Ordering::Relaxed);
        }
        self.pid.store(pid, Ordering::Release);
    }

    /// Marks application thread `index` busy from now.
    pub fn request_started(&self, index: usize) {
        self.busy_since[index.min(MAX_THREADS - 1)].store(now_millis(), Ordering::Relaxed);
    }

    /// Marks application thread `index` idle and counts the request;
    /// returns true when that count reaches `max_requests`.
    pub fn request_finished(&self, index: usize) -> bool {
        self.busy_since[index.min(MAX_THREADS - 1)].store(0, Ordering::Relaxed);
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.max_requests.load(Ordering::Relaxed);
        limit > 0 && served == limit
    }

    /// When application thread `index`'s current request started (ms
    /// since the epoch), 0 when idle.
    pub fn busy_stamp(&self, index: usize) -> u64 {
        self.busy_since[index.min(MAX_THREADS - 1)].load(Ordering::Relaxed)
    }

    /// Requests completed by this worker.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The longest-running current request, in milliseconds.
    pub fn longest_busy_millis(&self) -> u64 {
        let now = now_millis();
        self.busy_since
            .iter()
            .map(|stamp| stamp.load(Ordering::Relaxed))
            .filter(|&since| since != 0)
            .map(|since| now.saturating_sub(since))
            .max()
            .unwrap_or(0)
    }

    /// Records why the worker leaves; the first reason wins.
    pub fn retire(&self, why: Retire) {
        let _ = self.retiring.compare_exchange(
            Retire::No as u32,
            why as u32,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Why the worker is leaving.
    pub fn retiring(&self) -> Retire {
        Retire::from_u32(self.retiring.load(Ordering::Acquire))
    }

    /// Whether the worker is up and accepting.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == 1
    }
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot::new()
    }
}

/// Milliseconds since the epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The shared mapping of every slot.
#[derive(Debug)]
pub struct Scoreboard {
    slots: &'static [WorkerSlot],
}

impl Scoreboard {
    /// Maps `capacity` slots shared with every process forked afterwards.
    ///
    /// # Errors
    /// `mmap` failed.
    pub fn new(capacity: usize) -> io::Result<Scoreboard> {
        let bytes = capacity * std::mem::size_of::<WorkerSlot>();
        // SAFETY: an anonymous shared mapping; the result is checked.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is zero-filled, suitably aligned (page
        // aligned), `bytes` long, and never unmapped; all-zero bytes are a
        // valid `WorkerSlot` (atomics of zero).
        let slots = unsafe { std::slice::from_raw_parts(pointer.cast::<WorkerSlot>(), capacity) };
        Ok(Scoreboard { slots })
    }

    /// Takes a free slot for a worker about to start; its index.
    pub fn claim(&self) -> Option<usize> {
        let index = self
            .slots
            .iter()
            .position(|slot| slot.pid.load(Ordering::Acquire) == 0)?;
        // A placeholder pid until the fork tells the real one.
        self.slots[index].reset(-1);
        Some(index)
    }

    /// Records the pid of the worker in slot `index`.
    pub fn set_pid(&self, index: usize, pid: i32) {
        self.slots[index].pid.store(pid, Ordering::Release);
    }

    /// Frees slot `index`.
    pub fn release(&self, index: usize) {
        self.slots[index].pid.store(0, Ordering::Release);
    }

    /// Slot `index`.
    pub fn slot(&self, index: usize) -> &'static WorkerSlot {
        &self.slots[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_across_fork() {
        let board = Scoreboard::new(4).unwrap();
        let index = board.claim().unwrap();
        let slot = board.slot(index);
        // SAFETY: the child only touches atomics in the shared mapping and
        // exits with _exit, running no destructors.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            slot.request_started(3);
            slot.request_finished(3);
            slot.retire(Retire::MaxRequests);
            slot.retire(Retire::Lifetime);
            // SAFETY: terminating the forked child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(slot.served(), 1);
        assert_eq!(slot.retiring(), Retire::MaxRequests);
        assert_eq!(slot.longest_busy_millis(), 0);
        assert_ne!(board.claim(), Some(index));
        board.release(index);
        assert_eq!(board.claim(), Some(index));
    }
}
