//! libpython's writable data in a process that links libpython but never
//! runs Python: the embedded server's master without `--preload`.
//!
//! The dynamic loader relocates libpython's `.data` at start-up (3.11:
//! ~34,000 pointers in 1.2 MiB: static types, deep-frozen modules), which
//! makes every page of it private to the process. A worker forked from the
//! master starts its own interpreter, which writes to nearly all of those
//! pages, so they are copied and the master's 1.1 MiB are its alone, kept
//! only so that the next fork has them. [`release`] records how each word
//! differs from the file (a few bytes per relocated pointer) and drops the
//! pages (`MADV_DONTNEED`: the mapping reads the file again); [`restore`]
//! writes the differences back, before a fork or anything else that could
//! use libpython. Between the two nothing in the process may call into
//! libpython: the caller guarantees that the interpreter is not started,
//! and the process exits through [`restore`] (an `atexit` handler, before
//! libpython's own destructors run).

use std::sync::Mutex;

/// One writable, file-backed mapping of libpython and its differences from
/// the file.
#[derive(Debug)]
struct Region {
    start: usize,
    len: usize,
    /// [`encode`]d words that differ from the file.
    diff: Vec<u8>,
}

#[derive(Debug, Default)]
struct Image {
    regions: Vec<Region>,
    /// Where pointers into libpython start: differences are stored relative to it.
    anchor: usize,
    /// The pages are dropped; [`restore`] must run before libpython is used.
    released: bool,
    /// Taking the record failed once (an unexpected layout): never try again.
    unusable: bool,
}

static IMAGE: Mutex<Image> = Mutex::new(Image {
    regions: Vec::new(),
    anchor: 0,
    released: false,
    unusable: false,
});

fn image() -> std::sync::MutexGuard<'static, Image> {
    IMAGE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops libpython's relocated data pages, keeping how they differ from
/// the file. Returns the bytes released (0 when nothing was: not Linux, a
/// layout this does not understand).
///
/// # Safety
/// No interpreter may run in this process, and nothing may call into
/// libpython (or read its data) until [`restore`] has run; the process must
/// have one thread.
pub unsafe fn release() -> usize {
    let mut image = image();
    if image.released || image.unusable {
        return 0;
    }
    if image.regions.is_empty() {
        match record() {
            Some((anchor, regions)) if !regions.is_empty() => {
                image.anchor = anchor;
                image.regions = regions;
                // SAFETY: registers a plain `extern "C" fn()`.
                unsafe { libc::atexit(restore_at_exit) };
            }
            _ => {
                image.unusable = true;
                return 0;
            }
        }
    }
    let mut released = 0;
    for region in &image.regions {
        // SAFETY: the range is a private file mapping of libpython (from
        // /proc/self/maps); dropping its pages makes it read the file again,
        // which `restore` corrects before anything reads it.
        unsafe {
            libc::madvise(
                region.start as *mut libc::c_void,
                region.len,
                libc::MADV_DONTNEED,
            )
        };
        released += region.len;
    }
    image.released = true;
    released
}

/// Puts back what [`release`] dropped (nothing if it did not). Call before
/// forking a process that will run Python, and before anything in this one
/// may use libpython.
pub fn restore() {
    let mut image = image();
    if !image.released {
        return;
    }
    for region in &image.regions {
        // SAFETY: libpython's writable mapping, recorded by `release`; the
        // Rust side holds no reference into it.
        unsafe { restore_region(region, image.anchor) };
    }
    image.released = false;
}

extern "C" fn restore_at_exit() {
    restore();
}

/// The writable file mappings of the object that defines `Py_IsInitialized`,
/// each with its differences from the file; and that object's load address.
/// Allocates little besides the records themselves: what the master
/// allocates here it keeps (nothing later makes its allocator return pages).
#[cfg(target_os = "linux")]
fn record() -> Option<(usize, Vec<Region>)> {
    use std::os::unix::fs::MetadataExt;

    // SAFETY: dladdr fills `info` for an address of a loaded object.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let symbol = pyo3::ffi::Py_IsInitialized as *const libc::c_void;
    // SAFETY: see above; `info` outlives the call.
    if unsafe { libc::dladdr(symbol, &mut info) } == 0 || info.dli_fbase.is_null() {
        return None;
    }
    let base = info.dli_fbase as usize;
    // A libpython linked statically is part of the object this code is in,
    // whose data (this module's own state among it) is in use: leave it.
    // SAFETY: as above, for an address of this function.
    let mut ours: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: see above; `ours` outlives the call.
    if unsafe { libc::dladdr(record as *const libc::c_void, &mut ours) } == 0
        || ours.dli_fbase as usize == base
    {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    // (start, end, perms, offset, inode, path)
    let parsed = || {
        maps.lines().filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _device = fields.next()?;
            let inode: u64 = fields.next()?.parse().ok()?;
            let path = fields.next().unwrap_or("");
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
                perms,
                offset,
                inode,
                path,
            ))
        })
    };
    // The object's first mapping names its file.
    let (_, _, _, _, inode, path) = parsed().find(|map| map.0 == base && map.3 == 0)?;
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if meta.ino() != inode {
        return None;
    }
    let page = page_size();
    let mut regions = Vec::new();
    for (start, end, perms, offset, map_inode, _) in parsed() {
        if map_inode != inode || perms != "rw-p" {
            continue;
        }
        let len = end - start;
        // Past the file's last page the mapping would fault (SIGBUS) once
        // its pages read the file again.
        let file_pages = (meta.len() as usize).div_ceil(page) * page;
        if offset as usize + len > file_pages || start % page != 0 || len % page != 0 {
            return None;
        }
        regions.push(record_region(&file, offset, start, len, base)?);
    }
    Some((base, regions))
}

#[cfg(not(target_os = "linux"))]
fn record() -> Option<(usize, Vec<Region>)> {
    None
}

/// The differences between the mapping at `start` (`len` bytes, readable)
/// and `file` from `offset`.
#[cfg(unix)]
fn record_region(
    file: &std::fs::File,
    offset: u64,
    start: usize,
    len: usize,
    anchor: usize,
) -> Option<Region> {
    // Two passes, the first to size the record exactly: a growing vector
    // would leave its earlier, larger buffers to the allocator.
    let mut size = 0;
    let mut scratch = Vec::with_capacity(32);
    diff_words(file, offset, start, len, |index, value, in_file, last| {
        scratch.clear();
        encode(&mut scratch, last, index, value, in_file, anchor);
        size += scratch.len();
    })?;
    drop(scratch);
    let mut diff = Vec::with_capacity(size);
    diff_words(file, offset, start, len, |index, value, in_file, last| {
        encode(&mut diff, last, index, value, in_file, anchor);
    })?;
    Some(Region { start, len, diff })
}

/// Calls `found(index, value, file's word, last)` for each word of the
/// mapping at `start` that differs from `file` from `offset` (`last`: the
/// previous index found, for [`encode`]).
#[cfg(unix)]
fn diff_words(
    file: &std::fs::File,
    offset: u64,
    start: usize,
    len: usize,
    mut found: impl FnMut(usize, u64, u64, &mut Option<usize>),
) -> Option<()> {
    use std::os::unix::fs::FileExt;

    let mut last = None;
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let want = chunk.len().min(len - done);
        let buf = &mut chunk[..want];
        buf.fill(0);
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..], offset + (done + got) as u64) {
                Ok(0) => break, // past the end: the mapping reads zeros
                Ok(n) => got += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        for (word, bytes) in buf.chunks_exact(8).enumerate() {
            let index = done / 8 + word;
            // SAFETY: inside the mapping (index < len / 8), which the caller
            // says is readable; an aligned word.
            let now = unsafe { ((start + index * 8) as *const u64).read_volatile() };
            let file_word = u64::from_ne_bytes(bytes.try_into().ok()?);
            if now != file_word {
                found(index, now, file_word, &mut last);
            }
        }
        done += want;
    }
    Some(())
}

/// Writes `region`'s differences back into its mapping.
///
/// # Safety
/// The mapping must still be there, writable, and unreferenced on the Rust side.
unsafe fn restore_region(region: &Region, anchor: usize) {
    let words = region.len / 8;
    let base = region.start as *mut u64;
    let in_file = |index: usize| {
        if index < words {
            // SAFETY: inside the mapping, which reads the file again
            // (released) until this word is written.
            unsafe { base.add(index).read_volatile() }
        } else {
            0
        }
    };
    decode(&region.diff, anchor, in_file, |index, value| {
        if index < words {
            // SAFETY: inside the mapping; see the function's contract.
            unsafe { base.add(index).write_volatile(value) }
        }
    });
}

#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Appends word `index` = `value` (`file`: what the file has there): the
/// gap from the previous index and the kind, then the value if one is
/// needed. Kinds: the file's word plus `anchor` (the loader's relative
/// relocations, whose addend the linker also left in place: no value
/// stored), a pointer into the library (relative to `anchor`: 3-4 bytes),
/// anything else (the value itself). Varints throughout.
fn encode(
    out: &mut Vec<u8>,
    last: &mut Option<usize>,
    index: usize,
    value: u64,
    file: u64,
    anchor: usize,
) {
    let gap = (index - last.map_or(0, |last| last + 1)) as u64;
    *last = Some(index);
    let relative = value.wrapping_sub(anchor as u64);
    if relative == file {
        put_varint(out, gap << 2);
    } else if relative < 1 << 32 {
        put_varint(out, gap << 2 | 1);
        put_varint(out, relative);
    } else {
        put_varint(out, gap << 2 | 2);
        put_varint(out, value);
    }
}

/// Calls `write(index, value)` for each word [`encode`]d in `bytes`, where
/// `file(index)` reads the file's word there.
fn decode(
    bytes: &[u8],
    anchor: usize,
    file: impl Fn(usize) -> u64,
    mut write: impl FnMut(usize, u64),
) {
    let mut at = 0;
    let mut next = 0usize;
    while at < bytes.len() {
        let Some(tag) = get_varint(bytes, &mut at) else {
            return;
        };
        let index = next + (tag >> 2) as usize;
        let value = match tag & 3 {
            0 => file(index).wrapping_add(anchor as u64),
            1 => match get_varint(bytes, &mut at) {
                Some(relative) => relative.wrapping_add(anchor as u64),
                None => return,
            },
            _ => match get_varint(bytes, &mut at) {
                Some(value) => value,
                None => return,
            },
        };
        write(index, value);
        next = index + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let anchor = 0x7f00_0000_0000usize;
        // (index, value, the file's word)
        let words = [
            (0usize, anchor as u64 + 0x10, 0),
            (1, 0, 77),
            (2, u64::MAX, 0),
            (300, anchor as u64 + 0x5a_0000, 0x5a_0000),
            (301, anchor as u64 + 0x5a_0000, 1),
            (302, 0x5555_0000_1234, 0),
            (100_000, anchor as u64, 0),
        ];
        let mut bytes = Vec::new();
        let mut last = None;
        for &(index, value, file) in &words {
            encode(&mut bytes, &mut last, index, value, file, anchor);
        }
        let file = |index: usize| {
            words
                .iter()
                .find(|word| word.0 == index)
                .map_or(0, |word| word.2)
        };
        let mut seen = Vec::new();
        decode(&bytes, anchor, file, |index, value| {
            seen.push((index, value, file(index)))
        });
        assert_eq!(seen, words);
    }

    /// A private mapping of a file, changed like the loader changes
    /// libpython's data: dropped, it reads the file again; restored, it reads
    /// as changed, past the file's end (zeros there) included.
    #[test]
    fn a_dropped_mapping_is_restored() {
        use std::io::Write;
        use std::os::fd::AsRawFd;

        let page = page_size();
        let len = 3 * page;
        let path = std::env::temp_dir().join(format!("wsgi-image-{}", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        // Two and a half pages: the mapping's tail is past the end.
        let contents: Vec<u8> = (0..len / 2 * 5 / 3).map(|i| (i % 251) as u8).collect();
        file.write_all(&contents).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a fresh private mapping of our own file.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(start, libc::MAP_FAILED);
        let start = start as usize;
        let anchor = start;
        let words = len / 8;
        // SAFETY: inside our mapping.
        let word = |index: usize| unsafe { ((start + index * 8) as *const u64).read_volatile() };
        let changes = [
            (0, anchor as u64 + 8),
            (1, word(1).wrapping_add(anchor as u64)),
            (7, 0),
            (page / 8 + 3, u64::MAX),
            (words - 1, 0x1234),
        ];
        for &(index, value) in &changes {
            // SAFETY: inside our writable mapping.
            unsafe { ((start + index * 8) as *mut u64).write_volatile(value) };
        }
        let changed: Vec<u64> = (0..words).map(word).collect();
        let region = record_region(&file, 0, start, len, anchor).unwrap();
        assert!(region.diff.len() < 40, "{} bytes", region.diff.len());
        // SAFETY: our own mapping.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        let mut expected = contents.clone();
        expected.resize(len, 0);
        let dropped: Vec<u8> = (0..words)
            .flat_map(|index| word(index).to_ne_bytes())
            .collect();
        assert_eq!(dropped, expected);
        // SAFETY: the mapping is still there and writable.
        unsafe { restore_region(&region, anchor) };
        let restored: Vec<u64> = (0..words).map(word).collect();
        assert_eq!(restored, changed);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(start as *mut libc::c_void, len) };
        std::fs::remove_file(&path).unwrap();
    }
}
