//! Where the server listens: the one place listeners are described
//! ([`BindSpec`]), parsed from `--bind` style strings, and bound into
//! listening sockets before any worker or thread exists.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http,
    /// The uwsgi binary protocol (nginx `uwsgi_pass`).
    Uwsgi,
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// TCP, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
    /// An already-listening socket inherited from our parent (`fd://N`,
    /// systemd socket activation).
    Fd(RawFd),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(address) => write!(formatter, "http://{address}"),
            BindAddr::Unix(path) => write!(formatter, "unix:{}", path.display()),
            BindAddr::Fd(fd) => write!(formatter, "fd://{fd}"),
        }
    }
}

/// One listener as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Where.
    pub addr: BindAddr,
    /// What it speaks.
    pub protocol: Protocol,
}

impl BindSpec {
    /// Parses gunicorn's `--bind` forms: `HOST:PORT`, `[V6]:PORT`, `:PORT`
    /// (all interfaces), `PORT`, `unix:PATH`, `fd://N`.
    ///
    /// # Errors
    /// A message naming what is wrong with the address.
    pub fn parse(text: &str, protocol: Protocol) -> Result<BindSpec, String> {
        let addr = if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{text:?}: empty unix socket path"));
            }
            BindAddr::Unix(PathBuf::from(path))
        } else if let Some(fd) = text.strip_prefix("fd://") {
            let fd = fd
                .parse::<RawFd>()
                .map_err(|_| format!("{text:?}: fd://N needs a file descriptor number"))?;
            BindAddr::Fd(fd)
        } else if text.contains('/') {
            // uWSGI's `--socket /tmp/app.sock` form.
            BindAddr::Unix(PathBuf::from(text))
        } else {
            BindAddr::Tcp(parse_tcp(text)?)
        };
        Ok(BindSpec { addr, protocol })
    }
}

fn parse_tcp(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{text:?}: invalid port"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let with_port = if text.contains(':') {
        text.to_owned()
    } else {
        format!("{text}:8000")
    };
    with_port
        .to_socket_addrs()
        .map_err(|error| format!("{text:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("{text:?}: the name resolves to no address"))
}

/// A bound, listening socket (non-blocking), and what it speaks.
#[derive(Debug)]
pub struct BoundListener {
    /// The spec it came from (with the real port if port 0 was asked).
    pub spec: BindSpec,
    /// The listening socket.
    pub fd: OwnedFd,
    /// Remove the socket file at exit (unix sockets we created).
    pub unlink_on_exit: Option<PathBuf>,
}

impl BoundListener {
    /// Whether it is a unix socket (inherited fds are asked for their family).
    pub fn is_unix(&self) -> bool {
        socket_family(self.fd.as_raw_fd()) == Some(libc::AF_UNIX)
    }
}

/// Options for binding.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Mode for unix sockets (`--chmod-socket`).
    pub unix_mode: Option<u32>,
    /// `SO_REUSEPORT` (several processes each with their own queue).
    pub reuse_port: bool,
    /// `TCP_DEFER_ACCEPT` for this many seconds: a TCP connection is
    /// accepted once its first bytes are in (or after that long), so the
    /// worker finds its request at once (and may lend it to an application
    /// thread) rather than racing the client's first write. uWSGI sets it
    /// by default.
    pub defer_accept: Option<u32>,
}

/// Binds one listener.
///
/// # Errors
/// The operating system's error, with the address in the message.
pub fn bind(spec: &BindSpec, options: BindOptions) -> io::Result<BoundListener> {
    let with_context =
        |error: io::Error| io::Error::new(error.kind(), format!("{}: {error}", spec.addr));
    match &spec.addr {
        BindAddr::Tcp(address) => {
            let fd = bind_tcp(*address, options).map_err(with_context)?;
            let actual = local_tcp_addr(fd.as_raw_fd()).unwrap_or(*address);
            Ok(BoundListener {
                spec: BindSpec {
                    addr: BindAddr::Tcp(actual),
                    protocol: spec.protocol,
                },
                fd,
                unlink_on_exit: None,
            })
        }
        BindAddr::Unix(path) => {
            let fd = bind_unix(path, options).map_err(with_context)?;
            Ok(BoundListener {
                spec: spec.clone(),
                fd,
                unlink_on_exit: Some(path.clone()),
            })
        }
        BindAddr::Fd(raw) => {
            let raw = *raw;
            if socket_family(raw).is_none() {
                return Err(with_context(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an open socket",
                )));
            }
            set_nonblocking(raw).map_err(with_context)?;
            set_cloexec(raw).map_err(with_context)?;
            // SAFETY: the user handed us this descriptor to own (fd://N or
            // LISTEN_FDS); it is an open socket, checked above.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let addr = match local_tcp_addr(raw) {
                Some(address) => BindAddr::Tcp(address),
                None => BindAddr::Fd(raw),
            };
            Ok(BoundListener {
                spec: BindSpec {
                    addr,
                    protocol: spec.protocol,
                },
                fd,
                unlink_on_exit: None,
            })
        }
    }
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn new_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: socket(2) returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn bind_tcp(address: SocketAddr, options: BindOptions) -> io::Result<OwnedFd> {
    let family = if address.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let socket = new_socket(family)?;
    let fd = socket.as_raw_fd();
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if options.reuse_port {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if address.is_ipv6() {
        set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    if let Some(seconds) = options.defer_accept {
        let seconds = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, seconds)?;
    }
    let (storage, length) = sockaddr_from(address);
    // SAFETY: `storage` holds a valid sockaddr of `length` bytes.
    check(unsafe {
        libc::bind(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            length,
        )
    })?;
    // SAFETY: listen(2) on a socket we own.
    check(unsafe { libc::listen(fd, options.backlog) })?;
    Ok(socket)
}

fn bind_unix(path: &Path, options: BindOptions) -> io::Result<OwnedFd> {
    let socket = new_socket(libc::AF_UNIX)?;
    let fd = socket.as_raw_fd();
    // A stale socket file from a crashed run would make bind fail; remove it
    // only if nothing answers on it (never steal a live server's socket).
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= address.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long",
        ));
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let length = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `address` is a valid sockaddr_un of `length` bytes.
    check(unsafe {
        libc::bind(
            fd,
            (&address as *const libc::sockaddr_un).cast(),
            length as libc::socklen_t,
        )
    })?;
    if let Some(mode) = options.unix_mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    // SAFETY: listen(2) on a socket we own.
    check(unsafe { libc::listen(fd, options.backlog) })?;
    Ok(socket)
}

fn sockaddr_from(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match address {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as libc::socklen_t)
}

/// The socket's own address (`getsockname`), for TCP sockets.
pub(crate) fn local_tcp_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` has room for `length` bytes.
    let result = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut length,
        )
    };
    if result < 0 {
        return None;
    }
    socket_address(&storage)
}

/// An IPv4 or IPv6 address as the kernel gave it (`None` for others).
pub(crate) fn socket_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn socket_family(fd: RawFd) -> Option<libc::c_int> {
    let mut family: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `family` has room for `length` bytes.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut family as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(family)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were given; flags are read then set.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were given.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        let cases: &[(&str, Option<BindAddr>)] = &[
            (
                "127.0.0.1:8000",
                Some(BindAddr::Tcp("127.0.0.1:8000".parse().unwrap())),
            ),
            (
                "[::1]:9000",
                Some(BindAddr::Tcp("[::1]:9000".parse().unwrap())),
            ),
            (
                ":8080",
                Some(BindAddr::Tcp("0.0.0.0:8080".parse().unwrap())),
            ),
            (
                "8081",
                Some(BindAddr::Tcp("127.0.0.1:8081".parse().unwrap())),
            ),
            (
                "localhost:8082",
                Some(BindAddr::Tcp("127.0.0.1:8082".parse().unwrap())),
            ),
            (
                "unix:/tmp/x.sock",
                Some(BindAddr::Unix("/tmp/x.sock".into())),
            ),
            ("/tmp/y.sock", Some(BindAddr::Unix("/tmp/y.sock".into()))),
            ("fd://3", Some(BindAddr::Fd(3))),
            ("fd://x", None),
            ("unix:", None),
            ("127.0.0.1:99999", None),
        ];
        for (text, expect) in cases {
            let got = BindSpec::parse(text, Protocol::Http)
                .ok()
                .map(|spec| spec.addr);
            assert_eq!(&got, expect, "{text}");
        }
    }

    #[test]
    fn binds_tcp_port_zero_and_unix() {
        let options = BindOptions {
            backlog: 16,
            unix_mode: Some(0o660),
            reuse_port: false,
            defer_accept: Some(1),
        };
        let tcp = bind(
            &BindSpec::parse("127.0.0.1:0", Protocol::Http).unwrap(),
            options,
        )
        .unwrap();
        match tcp.spec.addr {
            BindAddr::Tcp(address) => assert_ne!(address.port(), 0),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!tcp.is_unix());
        let path = std::env::temp_dir().join(format!("wsgi-bind-test-{}.sock", std::process::id()));
        let unix = bind(
            &BindSpec {
                addr: BindAddr::Unix(path.clone()),
                protocol: Protocol::Uwsgi,
            },
            options,
        )
        .unwrap();
        assert!(unix.is_unix());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // A live socket is never stolen.
        assert!(bind(&unix.spec, options).is_err());
        drop(unix);
        // A stale one is replaced.
        assert!(bind(
            &BindSpec {
                addr: BindAddr::Unix(path.clone()),
                protocol: Protocol::Uwsgi
            },
            options
        )
        .is_ok());
        let _ = std::fs::remove_file(path);
    }
}
