//! Static files (`--static-map PREFIX=DIR`, `--static-index`,
//! `--static-expires`), answered by the I/O thread without the application.
//!
//! [`StaticFiles::reply`] is the one entry point: given a request's environ
//! it returns `None` (not a static file: the application serves it) or a
//! complete [`Reply`] whose body is a file region, which the connection
//! sends with `sendfile(2)` through its usual response path. A static
//! answer never enters the application and is not counted by
//! `--max-requests`.
//!
//! # Rules
//! - PREFIX matches whole segments of the request's URL path (`/static`
//!   matches `/static/a.css`, never `/staticx`), before `SCRIPT_NAME` is
//!   taken off. Mounts are tried longest prefix first (equal prefixes in the
//!   order given); the first that has the file serves it.
//! - **Fall-through** (uWSGI's behaviour, not nginx `alias`'s 404): a path
//!   with no file under any matching mount, or a directory without a
//!   `--static-index` file, goes to the application, which serves the rest.
//!   Directories are never listed.
//! - **Refusals answer 404 and open nothing**: `.` and `..` segments (raw or
//!   percent-encoded in any case), encoded slashes (`%2F`), backslashes (raw
//!   or `%5C`), NUL (`%00`), malformed escapes, symlinks that lead out of
//!   DIR, and anything that is neither a regular file nor a directory (a
//!   malformed path is claimed only by a mount other than `/`). One
//!   status for all, so a client cannot tell "exists but refused" from
//!   "absent". A file the server may not read is 403.
//! - Paths are resolved by the kernel: `openat2(2)` with `RESOLVE_BENEATH`
//!   below DIR's descriptor, so a symlink inside DIR that points inside DIR
//!   is followed, one that points out fails (`EXDEV`), and no rename between
//!   a check and the open can change that (a `canonicalize` + prefix check
//!   has that race). Kernels before 5.6 lack `openat2`; there we fall back
//!   to `canonicalize`, the prefix check and `O_NOFOLLOW` on the last step.
//! - Only `GET` and `HEAD` (405 with `Allow: GET, HEAD` for others).
//!   Conditional requests per RFC 9110 §13.2.2 (`If-None-Match` wins over
//!   `If-Modified-Since`), one byte range per §14 (`If-Range`, 206, 416).
//!   Several ranges get the whole file (200): §14.2 lets a server ignore
//!   `Range`, clients (media players, download resumers) ask for one range,
//!   and multipart/byteranges would be a second body format for little
//!   use, with overlapping-range amplification to defend against.
//! - Precompressed siblings `FILE.br`, `FILE.gz` of compressible types are
//!   served when `Accept-Encoding` allows them (q-values honoured, `q=0`
//!   refuses; `br` first on a tie), with `Content-Encoding`, an ETag of their
//!   own, ranges over the compressed bytes, and `Vary: Accept-Encoding` on
//!   every compressible file whichever representation goes out.
//!
//! Lookups are blocking `openat2`/`fstat` calls on the I/O thread: cheap on a
//! local disk (nginx makes the same calls without threads), a stall on a
//! slow network file system.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use wsgi_core::{Environ, FileRegion, ResponseHead};

use crate::config::StaticSettings;
use crate::date::format_imf_fixdate;

/// A complete response to a static path.
#[derive(Debug)]
pub struct Reply {
    /// Status and headers, `Content-Length` included.
    pub head: ResponseHead,
    /// What follows the head.
    pub body: ReplyBody,
}

/// The body of a [`Reply`].
#[derive(Debug)]
pub enum ReplyBody {
    /// None (`HEAD`, 304).
    Empty,
    /// A short text (errors).
    Text(Bytes),
    /// A region of an open file, for `sendfile(2)`.
    File(FileRegion),
}

/// The static mounts of one process.
#[derive(Debug)]
pub struct StaticFiles {
    /// Longest prefix first.
    mounts: Vec<Mount>,
    /// `--static-index` names, tried in order.
    index: Vec<Vec<u8>>,
    /// `--static-expires`: `Cache-Control: max-age`.
    expires: Option<u64>,
    /// Whether the kernel has `openat2(2)`.
    beneath: bool,
}

#[derive(Debug)]
struct Mount {
    /// The prefix's path segments.
    prefix: Vec<Vec<u8>>,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Requests below the prefix are looked up in this directory.
    Dir {
        /// `O_PATH` descriptor: the anchor of `RESOLVE_BENEATH`.
        fd: OwnedFd,
        /// The canonical path, for the fallback without `openat2`.
        path: PathBuf,
    },
    /// One file served at exactly the prefix (uWSGI's
    /// `--static-map /favicon.ico=static/favicon.ico`).
    File(PathBuf),
}

impl StaticFiles {
    /// Opens the mounts `settings` names; `None` when there are none. A
    /// mount that cannot be opened is logged and left out.
    pub fn open(settings: &StaticSettings) -> Option<StaticFiles> {
        let mut mounts = Vec::new();
        for (text, path) in &settings.maps {
            let Some((prefix, _)) = segments(text.as_bytes()) else {
                crate::log!(Error, "--static-map {text}: not a usable URL prefix");
                continue;
            };
            match open_target(path) {
                Ok(target) => mounts.push(Mount { prefix, target }),
                Err(error) => crate::log!(
                    Error,
                    "--static-map {text}: cannot open {}: {error}",
                    path.display()
                ),
            }
        }
        if mounts.is_empty() {
            return None;
        }
        // Stable: equal prefixes keep their order.
        mounts.sort_by_key(|mount| std::cmp::Reverse(mount.prefix.len()));
        let beneath = mounts.iter().all(|mount| match &mount.target {
            Target::Dir { fd, .. } => !matches!(
                open_beneath(fd, b"."),
                Err(error) if error.raw_os_error() == Some(libc::ENOSYS)
            ),
            Target::File(_) => true,
        });
        if !beneath {
            crate::log!(
                Warning,
                "static files: this kernel has no openat2(2); paths are checked with realpath instead"
            );
        }
        Some(StaticFiles {
            mounts,
            index: settings
                .index
                .iter()
                .map(|name| name.as_bytes().to_vec())
                .collect(),
            expires: settings.expires,
            beneath,
        })
    }

    /// The answer to `environ`'s request if its path is a static file (or a
    /// refused path under a static prefix); `None` sends it to the
    /// application.
    pub fn reply(&self, environ: &Environ) -> Option<Reply> {
        let path = url_path(&environ.request_uri)?;
        let Some((segments, trailing_slash)) = segments(path) else {
            // Malformed or escaping: refused if it is meant for a mount,
            // otherwise none of our business.
            if self.leniently_mounted(path) {
                crate::log!(Debug, "static files: refused path {:?}", lossy(path));
                return Some(text_reply(404, Vec::new()));
            }
            return None;
        };
        for mount in &self.mounts {
            let Some(rest) = segments.strip_prefix(mount.prefix.as_slice()) else {
                continue;
            };
            match self.lookup(mount, rest, trailing_slash) {
                Lookup::Missing => continue,
                Lookup::Refused(status) => {
                    crate::log!(Debug, "static files: {status} for {:?}", lossy(path));
                    return Some(text_reply(status, Vec::new()));
                }
                Lookup::Found(found) => return Some(self.respond(environ, *found)),
            }
        }
        None
    }

    /// Whether `path`, decoded once without any check, falls under a mount:
    /// what a refused path was aiming at. A mount at `/` claims no such
    /// path: it would take every URL with an encoded slash from the
    /// application, and nothing is opened for them either way.
    fn leniently_mounted(&self, path: &[u8]) -> bool {
        let decoded = wsgi_core::percent_decode(path);
        let parts: Vec<&[u8]> = decoded
            .split(|&byte| byte == b'/' || byte == b'\\')
            .filter(|part| !part.is_empty())
            .collect();
        self.mounts.iter().any(|mount| {
            !mount.prefix.is_empty()
                && mount.prefix.len() <= parts.len()
                && mount
                    .prefix
                    .iter()
                    .zip(&parts)
                    .all(|(prefix, part)| prefix[..] == part[..])
        })
    }

    fn lookup<'a>(&self, mount: &'a Mount, rest: &[Vec<u8>], trailing_slash: bool) -> Lookup<'a> {
        match &mount.target {
            Target::File(path) => {
                if !rest.is_empty() || trailing_slash {
                    return Lookup::Missing;
                }
                let name = path.file_name().unwrap_or_default().as_bytes().to_vec();
                match open_file(path, false).and_then(|file| Ok((file.metadata()?, file))) {
                    Ok((meta, file)) if meta.is_file() => Lookup::Found(Box::new(Found {
                        file,
                        meta,
                        name,
                        base: Base::Path(path),
                    })),
                    Ok(_) => Lookup::Refused(404),
                    Err(error) => classify(&error),
                }
            }
            Target::Dir { fd, path } => {
                let mut relative = join(rest);
                if relative.is_empty() {
                    relative.push(b'.');
                }
                if trailing_slash {
                    // A trailing slash names a directory: `a.css/` is not `a.css`.
                    relative.push(b'/');
                }
                let file = match self.open_in(fd, path, &relative) {
                    Ok(file) => file,
                    Err(error) => return classify(&error),
                };
                let meta = match file.metadata() {
                    Ok(meta) => meta,
                    Err(error) => return classify(&error),
                };
                if meta.is_file() {
                    return Lookup::Found(Box::new(Found {
                        file,
                        meta,
                        name: rest.last().cloned().unwrap_or_default(),
                        base: Base::Beneath {
                            mount,
                            relative,
                            beneath: self.beneath,
                        },
                    }));
                }
                if !meta.is_dir() {
                    return Lookup::Refused(404);
                }
                if relative.last() != Some(&b'/') {
                    relative.push(b'/');
                }
                for index in &self.index {
                    let mut candidate = relative.clone();
                    candidate.extend_from_slice(index);
                    let opened = self
                        .open_in(fd, path, &candidate)
                        .and_then(|file| Ok((file.metadata()?, file)));
                    match opened {
                        Ok((meta, file)) if meta.is_file() => {
                            return Lookup::Found(Box::new(Found {
                                file,
                                meta,
                                name: index.clone(),
                                base: Base::Beneath {
                                    mount,
                                    relative: candidate,
                                    beneath: self.beneath,
                                },
                            }))
                        }
                        Ok(_) => {}
                        Err(error) => match classify(&error) {
                            Lookup::Missing => {}
                            refused => return refused,
                        },
                    }
                }
                // No index: the application may serve the directory's URL.
                Lookup::Missing
            }
        }
    }

    fn open_in(&self, fd: &OwnedFd, root: &Path, relative: &[u8]) -> io::Result<File> {
        if self.beneath {
            open_beneath(fd, relative)
        } else {
            open_checked(root, relative)
        }
    }

    /// The response for a file found: method, validators, conditionals,
    /// encodings and ranges.
    fn respond(&self, environ: &Environ, found: Found<'_>) -> Reply {
        let method = &environ.request_method[..];
        if method != b"GET" && method != b"HEAD" {
            // RFC 9110 §15.5.6: a 405 lists the methods the target allows.
            return text_reply(405, vec![field("Allow", "GET, HEAD")]);
        }
        let content_type = content_type(&found.name);
        let compressible = is_compressible(&content_type);
        let Found {
            mut file,
            mut meta,
            base,
            ..
        } = found;
        let mut encoding = None;
        if compressible {
            if let Some(accept) = header(environ, b"HTTP_ACCEPT_ENCODING") {
                for candidate in preferred_encodings(accept) {
                    let opened = base
                        .open_variant(candidate.suffix)
                        .and_then(|file| Ok((file.metadata()?, file)));
                    if let Ok((variant_meta, variant)) = opened {
                        if variant_meta.is_file() {
                            (file, meta, encoding) = (variant, variant_meta, Some(candidate));
                            break;
                        }
                    }
                }
            }
        }
        let size = meta.len();
        let (seconds, nanos) = modified(&meta);
        // RFC 9110 §8.8.3: strong enough for a file that is replaced, not
        // edited in place within one nanosecond at the same size (as nginx's,
        // which has only seconds); one per encoding (§8.8.3.3).
        let etag = format!(
            "\"{seconds:x}.{nanos:x}-{size:x}{}\"",
            encoding.map_or("", |coding| coding.etag_suffix)
        );
        let last_modified = format_imf_fixdate(seconds);

        // Fields a 304 repeats (RFC 9110 §15.4.5).
        let mut headers = vec![field("ETag", etag.clone())];
        if let Some(age) = self.expires {
            headers.push(field("Cache-Control", format!("max-age={age}")));
        }
        if compressible {
            headers.push(field("Vary", "Accept-Encoding"));
        }
        if not_modified(environ, &etag, seconds) {
            return Reply {
                head: head(304, headers, None),
                body: ReplyBody::Empty,
            };
        }
        headers.push(field(
            "Last-Modified",
            Bytes::copy_from_slice(&last_modified),
        ));
        headers.push(field("Content-Type", content_type));
        if let Some(coding) = encoding {
            headers.push(field("Content-Encoding", coding.name));
        }
        headers.push(field("Accept-Ranges", "bytes"));

        // RFC 9110 §14.2: range handling is defined for GET only.
        let range = match header(environ, b"HTTP_RANGE") {
            Some(range) if method == b"GET" && if_range_holds(environ, &etag, seconds) => {
                parse_range(range, size)
            }
            _ => ByteRange::Whole,
        };
        let (status, offset, length) = match range {
            ByteRange::Whole => (200, 0, size),
            ByteRange::Part { first, last } => {
                // RFC 9110 §14.4: `Content-Range: bytes FIRST-LAST/SIZE`.
                headers.push(field(
                    "Content-Range",
                    format!("bytes {first}-{last}/{size}"),
                ));
                (206, first, last - first + 1)
            }
            ByteRange::Unsatisfiable => {
                // RFC 9110 §15.5.17: 416 with `Content-Range: bytes */SIZE`.
                let mut fields = vec![field("Content-Range", format!("bytes */{size}"))];
                fields.extend(
                    headers
                        .into_iter()
                        .filter(|(name, _)| &name[..] == b"ETag" || &name[..] == b"Last-Modified"),
                );
                return text_reply(416, fields);
            }
        };
        headers.push(field("Content-Length", length.to_string()));
        let body = if method == b"HEAD" || length == 0 {
            ReplyBody::Empty
        } else {
            ReplyBody::File(FileRegion {
                file,
                offset,
                len: Some(length),
            })
        };
        Reply {
            head: head(status, headers, Some(length)),
            body,
        }
    }
}

/// A file found for a request.
#[derive(Debug)]
struct Found<'a> {
    file: File,
    meta: Metadata,
    /// Its name, for the content type.
    name: Vec<u8>,
    /// Where its precompressed siblings are.
    base: Base<'a>,
}

/// How to open a found file's siblings.
#[derive(Debug)]
enum Base<'a> {
    Beneath {
        mount: &'a Mount,
        relative: Vec<u8>,
        beneath: bool,
    },
    Path(&'a Path),
}

impl Base<'_> {
    fn open_variant(&self, suffix: &str) -> io::Result<File> {
        match self {
            Base::Beneath {
                mount,
                relative,
                beneath,
            } => {
                let Target::Dir { fd, path } = &mount.target else {
                    return Err(io::ErrorKind::NotFound.into());
                };
                let mut name = relative.clone();
                name.extend_from_slice(suffix.as_bytes());
                if *beneath {
                    open_beneath(fd, &name)
                } else {
                    open_checked(path, &name)
                }
            }
            Base::Path(path) => {
                let mut name = path.as_os_str().as_bytes().to_vec();
                name.extend_from_slice(suffix.as_bytes());
                open_file(Path::new(OsStr::from_bytes(&name)), false)
            }
        }
    }
}

#[derive(Debug)]
enum Lookup<'a> {
    /// Boxed: `Metadata` is large, the other variants tiny.
    Found(Box<Found<'a>>),
    /// Nothing to serve here: try the next mount, then the application.
    Missing,
    /// Answer this status.
    Refused(u16),
}

/// What an open error means for the request.
fn classify<'a>(error: &io::Error) -> Lookup<'a> {
    match error.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => Lookup::Missing,
        Some(libc::EACCES | libc::EPERM) => Lookup::Refused(403),
        // EXDEV: a symlink leads out of the directory; ELOOP: a symlink
        // loop; anything else: the file cannot be served.
        _ => Lookup::Refused(404),
    }
}

fn open_target(path: &Path) -> io::Result<Target> {
    let canonical = path.canonicalize()?;
    if canonical.is_dir() {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&canonical)?;
        Ok(Target::Dir {
            fd: OwnedFd::from(dir),
            path: canonical,
        })
    } else {
        Ok(Target::File(path.to_path_buf()))
    }
}

/// `struct open_how` of `openat2(2)` (libc's is `non_exhaustive`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Flags for every file we serve: `O_NONBLOCK` so that a FIFO in the
/// directory cannot block the I/O thread in `open`.
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Opens `relative` below `dir`; the kernel refuses any resolution that
/// leaves it (`..`, absolute symlinks, symlinks pointing out: `EXDEV`).
fn open_beneath(dir: &OwnedFd, relative: &[u8]) -> io::Result<File> {
    let path = CString::new(relative).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let how = OpenHow {
        flags: OPEN_FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `dir` is an open descriptor, `path` a NUL-terminated string and
    // `how` a correctly sized `struct open_how`, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
}

/// Without `openat2`: resolve every symlink, check the result is still
/// below `root`, and open it without following a last-moment symlink.
fn open_checked(root: &Path, relative: &[u8]) -> io::Result<File> {
    let real = root.join(OsStr::from_bytes(relative)).canonicalize()?;
    if !real.starts_with(root) {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    open_file(&real, true)
}

fn open_file(path: &Path, no_follow: bool) -> io::Result<File> {
    // The access mode comes from `read(true)`; the rest as `OPEN_FLAGS`.
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY | if no_follow { libc::O_NOFOLLOW } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// The path of a request-target (origin-form or absolute-form), without
/// the query; `None` for `*` and the like.
fn url_path(target: &[u8]) -> Option<&[u8]> {
    let end = target
        .iter()
        .position(|&byte| byte == b'?' || byte == b'#')
        .unwrap_or(target.len());
    let target = &target[..end];
    if target.starts_with(b"/") {
        return Some(target);
    }
    let scheme_end = target.windows(3).position(|window| window == b"://")?;
    let rest = &target[scheme_end + 3..];
    Some(match rest.iter().position(|&byte| byte == b'/') {
        Some(slash) => &rest[slash..],
        None => b"/",
    })
}

/// The decoded segments of `path` (empty ones dropped) and whether it ends
/// with `/`; `None` for anything that could step out of a directory or
/// mean something else to another decoder: `.`/`..`, `/` or `\` or NUL
/// inside a segment, a malformed escape.
fn segments(path: &[u8]) -> Option<(Vec<Vec<u8>>, bool)> {
    let mut segments = Vec::new();
    for raw in path.split(|&byte| byte == b'/') {
        if raw.is_empty() {
            continue;
        }
        let segment = decode_strict(raw)?;
        if segment == b"."
            || segment == b".."
            || segment
                .iter()
                .any(|&byte| byte == b'/' || byte == b'\\' || byte == 0)
        {
            return None;
        }
        segments.push(segment);
    }
    Some((segments, path.ends_with(b"/")))
}

fn decode_strict(raw: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = hex(*bytes.next()?)?;
            let low = hex(*bytes.next()?)?;
            decoded.push(high << 4 | low);
        } else {
            decoded.push(byte);
        }
    }
    Some(decoded)
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

fn join(segments: &[Vec<u8>]) -> Vec<u8> {
    segments.join(&b'/')
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A request header by its CGI name (`HTTP_RANGE`).
fn header<'a>(environ: &'a Environ, key: &[u8]) -> Option<&'a [u8]> {
    environ
        .headers
        .iter()
        .find(|(name, _)| &name[..] == key)
        .map(|(_, value)| &value[..])
}

/// A header field with a static name.
pub fn field(name: &'static str, value: impl Into<Bytes>) -> (Bytes, Bytes) {
    (Bytes::from_static(name.as_bytes()), value.into())
}

fn head(status: u16, headers: Vec<(Bytes, Bytes)>, content_length: Option<u64>) -> ResponseHead {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("");
    ResponseHead {
        status,
        reason: Bytes::from_static(reason.as_bytes()),
        headers,
        content_length,
    }
}

/// A short `text/plain` answer whose body is the reason phrase.
pub fn text_reply(status: u16, mut headers: Vec<(Bytes, Bytes)>) -> Reply {
    let mut reply = head(status, Vec::new(), None);
    let body = reply.reason.clone();
    headers.push(field("Content-Type", "text/plain; charset=utf-8"));
    headers.push(field("Content-Length", body.len().to_string()));
    reply.headers = headers;
    reply.content_length = Some(body.len() as u64);
    Reply {
        head: reply,
        body: ReplyBody::Text(body),
    }
}

/// The file's modification time: whole seconds and nanoseconds since the epoch.
fn modified(meta: &Metadata) -> (u64, u32) {
    meta.modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or((0, 0), |since| (since.as_secs(), since.subsec_nanos()))
}

/// The media type from the extension; `charset=utf-8` on text, which is
/// what a static site holds today (RFC 6657 gives text/* no default charset
/// worth relying on).
fn content_type(name: &[u8]) -> String {
    let guess = mime_guess::from_path(Path::new(OsStr::from_bytes(name)))
        .first_raw()
        .unwrap_or("application/octet-stream");
    if guess.starts_with("text/") || guess == "application/javascript" {
        format!("{guess}; charset=utf-8")
    } else {
        guess.to_owned()
    }
}

/// Types worth a precompressed sibling: text and text-like formats.
fn is_compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.ends_with("+json")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
        )
}

/// A content coding we look for as a sibling file.
#[derive(Debug, Clone, Copy)]
struct Coding {
    name: &'static str,
    suffix: &'static str,
    etag_suffix: &'static str,
}

const BROTLI: Coding = Coding {
    name: "br",
    suffix: ".br",
    etag_suffix: "-br",
};
const GZIP: Coding = Coding {
    name: "gzip",
    suffix: ".gz",
    etag_suffix: "-gz",
};

/// The codings `Accept-Encoding` allows (RFC 9110 §12.5.3), best first:
/// highest q, `br` before `gzip` on a tie; `q=0` (or an unreadable q)
/// refuses; `*` stands for codings not named.
fn preferred_encodings(accept: &[u8]) -> Vec<Coding> {
    let (mut brotli, mut gzip, mut star) = (None, None, None);
    for item in accept.split(|&byte| byte == b',') {
        let mut parts = item.split(|&byte| byte == b';');
        let coding = trim(parts.next().unwrap_or_default());
        let mut q = 1.0f32;
        for parameter in parts {
            let parameter = trim(parameter);
            if parameter.len() > 2 && parameter[..2].eq_ignore_ascii_case(b"q=") {
                q = std::str::from_utf8(&parameter[2..])
                    .ok()
                    .and_then(|text| text.parse::<f32>().ok())
                    .filter(|q| q.is_finite())
                    .unwrap_or(0.0);
            }
        }
        if coding.eq_ignore_ascii_case(b"br") {
            brotli = Some(q);
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            gzip = Some(q);
        } else if coding == b"*" {
            star = Some(q);
        }
    }
    let brotli = brotli.or(star).unwrap_or(0.0);
    let gzip = gzip.or(star).unwrap_or(0.0);
    let mut allowed: Vec<(f32, Coding)> = [(brotli, BROTLI), (gzip, GZIP)]
        .into_iter()
        .filter(|(q, _)| *q > 0.0)
        .collect();
    // Stable: brotli stays first on a tie.
    allowed.sort_by(|a, b| b.0.total_cmp(&a.0));
    allowed.into_iter().map(|(_, coding)| coding).collect()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// RFC 9110 §13.2.2 steps 3 and 4: `If-None-Match` (weak comparison,
/// §13.1.2) and, only without it, `If-Modified-Since` (§13.1.3).
fn not_modified(environ: &Environ, etag: &str, modified: u64) -> bool {
    if let Some(list) = header(environ, b"HTTP_IF_NONE_MATCH") {
        return list.split(|&byte| byte == b',').any(|candidate| {
            let candidate = trim(candidate);
            candidate == b"*" || weak(candidate) == weak(etag.as_bytes())
        });
    }
    header(environ, b"HTTP_IF_MODIFIED_SINCE")
        .and_then(http_date)
        .is_some_and(|since| modified <= since)
}

/// RFC 9110 §13.1.5: the range applies only if the validator still
/// matches, compared strongly (a weak ETag never matches).
fn if_range_holds(environ: &Environ, etag: &str, modified: u64) -> bool {
    match header(environ, b"HTTP_IF_RANGE") {
        None => true,
        Some(value) => {
            let value = trim(value);
            if value.starts_with(b"\"") || value.starts_with(b"W/") {
                value == etag.as_bytes()
            } else {
                http_date(value) == Some(modified)
            }
        }
    }
}

fn weak(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// An HTTP-date in any of the three forms RFC 9110 §5.6.7 makes
/// recipients accept, as seconds since the epoch.
fn http_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    httpdate::parse_http_date(text)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
}

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// Serve it whole: no range, one we ignore (other unit, bad syntax,
    /// several ranges).
    Whole,
    /// One satisfiable range, `last` inclusive and within the file.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

/// RFC 9110 §14.1.2: `bytes=FIRST-[LAST]` or `bytes=-SUFFIX`.
fn parse_range(value: &[u8], size: u64) -> ByteRange {
    let value = trim(value);
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"bytes=") {
        return ByteRange::Whole;
    }
    let specs: Vec<&[u8]> = value[6..]
        .split(|&byte| byte == b',')
        .map(trim)
        .filter(|spec| !spec.is_empty())
        .collect();
    let [spec] = specs[..] else {
        return ByteRange::Whole;
    };
    let Some(dash) = spec.iter().position(|&byte| byte == b'-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // The last SUFFIX bytes; none of an empty file (§14.1.3).
        let Some(suffix) = number(last) else {
            return ByteRange::Whole;
        };
        if suffix == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part {
            first: size.saturating_sub(suffix),
            last: size - 1,
        };
    }
    let Some(first) = number(first) else {
        return ByteRange::Whole;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(last) if last >= first => last,
            _ => return ByteRange::Whole,
        }
    };
    if first >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part {
        first,
        last: last.min(size - 1),
    }
}

/// Decimal digits; too large saturates (a range past any file).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |total, digit| {
        total
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_what_could_escape() {
        for path in [
            &b"/static/../secret"[..],
            b"/static/%2e%2e/secret",
            b"/static/%2E%2e/secret",
            b"/static/.%2E/secret",
            b"/static/./a",
            b"/static/a%2fb",
            b"/static/a%2Fb",
            b"/static/a\\b",
            b"/static/a%5cb",
            b"/static/a%00b",
            b"/static/a%zz",
            b"/static/a%2",
        ] {
            assert_eq!(segments(path), None, "{}", lossy(path));
        }
        assert_eq!(
            segments(b"/static//a%20b/"),
            Some((vec![b"static".to_vec(), b"a b".to_vec()], true))
        );
        // Decoded once only: a file literally named `%2e%2e` is a name.
        assert_eq!(
            segments(b"/%252e%252e"),
            Some((vec![b"%2e%2e".to_vec()], false))
        );
    }

    /// Both resolvers on a real directory: a symlink inside is followed,
    /// ones leading out are refused with `EXDEV` (the fallback is what a
    /// kernel without `openat2` gets).
    #[test]
    fn symlinks_out_of_the_directory_are_refused() {
        let root = std::env::temp_dir().join(format!("static-files-test-{}", std::process::id()));
        let www = root.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(root.join("secret"), b"secret").unwrap();
        std::fs::write(www.join("a.txt"), b"a").unwrap();
        for (link, target) in [("out", "../secret"), ("in", "a.txt"), ("up", "..")] {
            let _ = std::fs::remove_file(www.join(link));
            std::os::unix::fs::symlink(target, www.join(link)).unwrap();
        }
        let Ok(Target::Dir { fd, path }) = open_target(&www) else {
            panic!("no directory");
        };
        let exdev = |result: io::Result<File>| {
            result.map(drop).map_err(|error| error.raw_os_error()) == Err(Some(libc::EXDEV))
        };
        for open in [
            &(|relative: &[u8]| open_beneath(&fd, relative)) as &dyn Fn(&[u8]) -> io::Result<File>,
            &|relative: &[u8]| open_checked(&path, relative),
        ] {
            assert!(open(b"in").is_ok());
            assert!(open(b"a.txt").is_ok());
            assert!(exdev(open(b"out")));
            assert!(exdev(open(b"up/secret")));
            assert!(exdev(open(b"../secret")));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path(b"/a/b?x=/.."), Some(&b"/a/b"[..]));
        assert_eq!(url_path(b"http://h:1/s/a"), Some(&b"/s/a"[..]));
        assert_eq!(url_path(b"http://h"), Some(&b"/"[..]));
        assert_eq!(url_path(b"*"), None);
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        let check = |value: &str, size, expect| {
            assert_eq!(parse_range(value.as_bytes(), size), expect, "{value}")
        };
        check("bytes=0-9", 100, Part { first: 0, last: 9 });
        check(
            "BYTES=90-",
            100,
            Part {
                first: 90,
                last: 99,
            },
        );
        check(
            "bytes=90-1000",
            100,
            Part {
                first: 90,
                last: 99,
            },
        );
        check(
            "bytes=-10",
            100,
            Part {
                first: 90,
                last: 99,
            },
        );
        check("bytes=-1000", 100, Part { first: 0, last: 99 });
        check("bytes=100-", 100, Unsatisfiable);
        check("bytes=-0", 100, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=-5", 0, Unsatisfiable);
        check("bytes=99999999999999999999999-", 100, Unsatisfiable);
        check("bytes=5-4", 100, Whole);
        check("bytes=0-1,5-6", 100, Whole);
        check("items=0-1", 100, Whole);
        check("bytes=a-b", 100, Whole);
        check("bytes=", 100, Whole);
        check("bytes=-", 100, Whole);
    }

    #[test]
    fn accept_encoding() {
        let names = |accept: &str| {
            preferred_encodings(accept.as_bytes())
                .iter()
                .map(|coding| coding.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("gzip, br"), ["br", "gzip"]);
        assert_eq!(names("gzip;q=1, br;q=0.5"), ["gzip", "br"]);
        assert_eq!(names("br;q=0, gzip"), ["gzip"]);
        assert_eq!(names("*"), ["br", "gzip"]);
        assert_eq!(names("*;q=0, gzip"), ["gzip"]);
        assert_eq!(names("identity"), Vec::<&str>::new());
        assert_eq!(names("br;q=zz"), Vec::<&str>::new());
        assert_eq!(names(""), Vec::<&str>::new());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(b"a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type(b"a.png"), "image/png");
        assert_eq!(content_type(b"noext"), "application/octet-stream");
        assert!(is_compressible(&content_type(b"a.js")));
        assert!(!is_compressible(&content_type(b"a.png")));
    }
}
