"""PasteDeploy's ``paste.server_runner`` for ``egg:wsgi-server#main``.

In ``development.ini``::

    [server:main]
    use = egg:wsgi-server#main
    host = 127.0.0.1
    port = 6543
    workers = 2
    threads = 4

``pserve development.ini`` (or ``paster serve``) builds the application and
calls ``server_runner(app, global_conf, host=..., port=..., ...)``. The
section's settings mean what they mean under ``wsgi-server --paste``
(``host`` + ``port``, ``listen``, ``unix_socket``, ``workers``,
``threads``, ``timeout``, ... and every option of ``wsgi-server --help`` by
its name): the Rust configuration layer reads them, at the rank of a
PasteDeploy server section (the environment, e.g. ``WEB_CONCURRENCY``,
still overrides them, as with ``wsgi-server --paste``). The application
object pserve built is served as it is, forked into the workers.
"""

from ._native import run as _native_run

# The name under which the section is known, for --print-config and errors.
_USE = "egg:wsgi-server#main"


def server_runner(wsgi_app, global_conf, **settings):
    """Serves ``wsgi_app`` with the ``[server:NAME]`` settings; returns when
    the server stops (pserve then exits)."""
    ini = global_conf.get("__file__")
    argv = []
    if ini:
        # The file names the settings' source in messages; the section itself
        # is the one pserve read (given below), not read again.
        argv += ["--paste", ini]
    else:
        # Called by hand, without a file: host and port are the address.
        host, port = settings.pop("host", None), settings.pop("port", None)
        if host or port:
            argv.append(f"--bind={host or '127.0.0.1'}:{port or 8080}")
        argv.append(_describe(wsgi_app))
    pairs = [(str(key), str(value)) for key, value in settings.items()]
    code = _native_run(argv, wsgi_app, (_USE, pairs))
    if code:
        raise SystemExit(code)
    return code


def _describe(app):
    module = getattr(app, "__module__", None) or type(app).__module__
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"
