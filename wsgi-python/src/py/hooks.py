"""wsgi_python.hooks: the objects gunicorn's server hooks receive.

Embedded in wsgi-python (src/hooks.rs); not a public module. `Arbiter`,
`Worker`, `Request` and `Response` carry the attributes of gunicorn's own
classes that hooks read; `Logger` has gunicorn's logging methods and writes
through the server's log.
"""
import inspect
import sys
import traceback
from collections.abc import Mapping

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50


class Config:
    """Attribute access to settings (gunicorn's `Config.__getattr__`)."""

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"No configuration setting for: {name}")

    @property
    def settings(self):
        return {name: _Setting(name, value) for name, value in self._values.items()}

    def __repr__(self):
        return f"<Config {sorted(self._values)}>"


class _Setting:
    def __init__(self, name, value):
        self.name = name
        self.value = value

    def get(self):
        return self.value


class Logger:
    """gunicorn's `glogging.Logger` methods, %-formatting like `logging`."""

    def __init__(self, emit):
        self._emit = emit

    def _log(self, level, msg, args, exc_info=False, **_ignored):
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError, KeyError) as error:
                text = f"{text} {args!r} (bad log format: {error})"
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text = text + "\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        self._emit(level, text)

    def debug(self, msg, *args, **kwargs):
        self._log(DEBUG, msg, args, **kwargs)

    def info(self, msg, *args, **kwargs):
        self._log(INFO, msg, args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        self._log(WARNING, msg, args, **kwargs)

    warn = warning

    def error(self, msg, *args, **kwargs):
        self._log(ERROR, msg, args, **kwargs)

    def critical(self, msg, *args, **kwargs):
        self._log(CRITICAL, msg, args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        kwargs.setdefault("exc_info", True)
        self._log(ERROR, msg, args, **kwargs)

    def log(self, level, msg, *args, **kwargs):
        if isinstance(level, str):
            level = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR,
                     "critical": CRITICAL}.get(level.lower(), INFO)
        self._log(level, msg, args, **kwargs)


class Arbiter:
    """The `server` argument: gunicorn's Arbiter, as far as hooks read it."""

    def __init__(self, log):
        self.log = log

    def update(self, pid, proc_name, num_workers, cfg):
        self.pid = pid
        self.proc_name = proc_name
        self.num_workers = num_workers
        cfg = dict(cfg)
        self.cfg = Config(cfg)
        self.timeout = cfg.get("timeout")
        self._max_requests = cfg.get("max_requests", 0)


class Worker:
    """The `worker` argument: gunicorn's Worker, as far as hooks read it."""

    def __init__(self, age, log):
        self.age = age
        self.log = log
        self.alive = True
        self.booted = False
        self.aborted = False
        self.nr = 0

    def update(self, pid, ppid, number, alive, server):
        # gunicorn's Worker.pid is "[booting]" until the fork.
        self.pid = pid if pid else "[booting]"
        self.ppid = ppid
        self.number = number
        self.alive = alive
        self.cfg = server.cfg
        self.timeout = server.timeout
        self.max_requests = server._max_requests

    def __repr__(self):
        return f"<Worker {self.pid}>"


def _header_name(key):
    # HTTP_X_FORWARDED_FOR -> X-FORWARDED-FOR (gunicorn keeps names upper-case).
    return key[5:].replace("_", "-")


class Request:
    """The `req` of pre_request/post_request: gunicorn's http.Request
    attributes, built from the environ."""

    def __init__(self, environ):
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        uri = environ.get("REQUEST_URI")
        if not uri:
            uri = environ.get("SCRIPT_NAME", "") + self.path
            if self.query:
                uri += "?" + self.query
        self.uri = uri
        self.fragment = ""
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, minor = protocol.split("/", 1)[1].split(".", 1)
            self.version = (int(major), int(minor))
        except (IndexError, ValueError):
            self.version = (1, 1)
        self.scheme = environ.get("wsgi.url_scheme", "http")
        headers = []
        if environ.get("CONTENT_TYPE"):
            headers.append(("CONTENT-TYPE", environ["CONTENT_TYPE"]))
        if environ.get("CONTENT_LENGTH"):
            headers.append(("CONTENT-LENGTH", environ["CONTENT_LENGTH"]))
        for key, value in environ.items():
            if key.startswith("HTTP_") and isinstance(value, str):
                headers.append((_header_name(key), value))
        self.headers = headers
        self.trailers = []
        address = environ.get("REMOTE_ADDR", "")
        try:
            self.remote_addr = (address, int(environ.get("REMOTE_PORT", "")))
        except ValueError:
            self.remote_addr = address

    def __repr__(self):
        return f"<Request {self.method} {self.uri}>"


class Response:
    """The `resp` of post_request: gunicorn's http.wsgi.Response attributes."""

    def __init__(self, status, headers, sent):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0])
        except (AttributeError, IndexError, ValueError):
            self.status_code = None
        self.headers = headers
        self.sent = sent
        self.response_length = None
        for name, value in headers:
            if name.lower() == "content-length":
                try:
                    self.response_length = int(value)
                except ValueError:
                    pass

    def __repr__(self):
        return f"<Response {self.status}>"


def format_exception(error):
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def takes(func, arity):
    """Whether func can be called with `arity` positional arguments
    (gunicorn's validate_callable checks the arity too)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return True  # a builtin without a signature: let the call tell
    try:
        signature.bind(*range(arity))
    except TypeError:
        return False
    return True


def post_request_adapter(func):
    """gunicorn's validate_post_request: 2- and 3-argument forms are allowed."""
    if takes(func, 4):
        return func
    if takes(func, 3):
        return lambda worker, req, environ, _resp: func(worker, req, environ)
    if takes(func, 2):
        return lambda worker, req, _environ, _resp: func(worker, req)
    return None
