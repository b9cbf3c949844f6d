//! The reference `wsgi-server` binary: the library's [`main_with`] with
//! the embedded CPython (or, built without the `python` feature, the
//! built-in Rust applications), plus what only a binary may choose: the
//! global allocator. Everything else (configuration, listeners, master,
//! workers) is the library's `runner`, shared with the Python package.
//!
//! Exit codes: 0 clean stop, 1 bad usage, configuration or bind failure,
//! 4 the application could not be loaded (gunicorn's `APP_LOAD_ERROR`).

use std::process::ExitCode;

use wsgi_server::{main_with, process};

/// mimalloc rather than glibc's malloc: a request makes ~20 short-lived
/// allocations on the I/O and application threads, which cost ~3,000
/// instructions more per request in glibc (free lists, `malloc_consolidate`
/// on the larger ones) than in mimalloc's thread-local pages (callgrind,
/// hello at 16 connections; docs/performance.md). Python's own objects keep
/// CPython's allocator.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, through its plain entry points when the alignment asked for is
/// one every mimalloc block has: `mimalloc::MiMalloc` calls the aligned
/// ones for every allocation, whose alignment checks cost ~15 instructions
/// more per call, and a hello request makes about 12 allocations (callgrind).
struct Mimalloc;

/// Every mimalloc block is aligned to a machine word (its smallest size
/// class is one word, and every class is a whole number of words).
const WORD_ALIGN: usize = std::mem::size_of::<usize>();

extern "C" {
    fn mi_malloc(size: usize) -> *mut libc::c_void;
    fn mi_zalloc(size: usize) -> *mut libc::c_void;
    fn mi_realloc(pointer: *mut libc::c_void, new_size: usize) -> *mut libc::c_void;
}

// SAFETY: each call passes the caller's layout on to mimalloc, to the
// aligned entry points (`MiMalloc`) whenever the alignment is more than a
// word; `mi_free` frees a block whichever entry point made it.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi_malloc(layout.size()).cast()
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi_zalloc(layout.size()).cast()
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: see the impl.
        unsafe { mimalloc::MiMalloc.dealloc(pointer, layout) }
    }

    unsafe fn realloc(
        &self,
        pointer: *mut u8,
        layout: std::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        // SAFETY: see the impl; a block keeps its word alignment when moved.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi_realloc(pointer.cast(), new_size).cast()
            } else {
                mimalloc::MiMalloc.realloc(pointer, layout, new_size)
            }
        }
    }
}

/// mimalloc's defaults trade memory for speed in a way a server with many
/// small worker processes should not: it commits its arenas eagerly and
/// keeps freed pages for a second. Worker RSS under 128 connections: 13.5 MiB
/// with glibc, 22.5 MiB with mimalloc's defaults, 14.4 MiB without
/// transparent huge pages (the `no_thp` feature, Cargo.toml), ~12.5-14.5 MiB
/// with these options as well, at the same speed. Freed pages are returned
/// after 100 ms, not at once: returning them at once made every 64 KiB
/// request-body buffer a `madvise` plus 16 page faults (64 KiB uploads:
/// 37-45 -> 30-35 us of CPU per request; peak RSS +0.3 MiB at hello c=128).
fn tune_allocator() {
    extern "C" {
        fn mi_option_get(option: libc::c_int) -> libc::c_long;
        fn mi_option_set(option: libc::c_int, value: libc::c_long);
    }
    wsgi_server::log::set_idle_hook(release_freed_memory);
    // Positions in mimalloc 3's `mi_option_e` (mimalloc.h), each with its
    // default: if the enum ever moves, the defaults do not match and the
    // options are left alone rather than set at the wrong positions.
    const ARENA_EAGER_COMMIT: (libc::c_int, libc::c_long, libc::c_long) = (4, 2, 0);
    // In milliseconds.
    const PURGE_DELAY: (libc::c_int, libc::c_long, libc::c_long) = (15, 1000, 100);
    // In KiB: 1 GiB by default, 1 MiB here.
    const ARENA_RESERVE: (libc::c_int, libc::c_long, libc::c_long) = (23, 1 << 20, 1 << 10);
    let options = [ARENA_EAGER_COMMIT, PURGE_DELAY, ARENA_RESERVE];
    // SAFETY: plain getters and setters of mimalloc's option table, called
    // with in-range option numbers (checked against their defaults).
    unsafe {
        if options
            .iter()
            .all(|&(option, default, _)| mi_option_get(option) == default)
        {
            for (option, _, value) in options {
                mi_option_set(option, value);
            }
        }
    }
}

/// mimalloc purges freed pages (after the purge delay) only from within
/// later allocator calls: a worker that goes quiet after a burst keeps them.
/// Called about once a second by the log writer thread: after 3 s of hello
/// at 128 connections the worker's RSS went back from 14.5 to 12.5 MiB
/// (12.0 before the burst) instead of staying at 14.5.
fn release_freed_memory() {
    extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mimalloc's collection entry point, safe from any thread; not
    // forced, so it purges only what has waited for the purge delay.
    unsafe { mi_collect(false) }
}

fn main() -> ExitCode {
    // First: process titles later overwrite the argv area (USR2 re-executes
    // the remembered command line).
    process::remember_start();
    tune_allocator();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let code = main_with(&args, &vars, new_runtime());
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The embedded interpreter, started by us (feature `embed`).
#[cfg(feature = "embed")]
fn new_runtime() -> wsgi_server::python_runtime::PythonRuntime {
    wsgi_server::python_runtime::PythonRuntime::new()
}

/// Without `embed` nothing here could start Python: the built-in Rust
/// applications only.
#[cfg(not(feature = "embed"))]
fn new_runtime() -> wsgi_server::runtime::RustRuntime {
    wsgi_server::runtime::RustRuntime::default()
}
