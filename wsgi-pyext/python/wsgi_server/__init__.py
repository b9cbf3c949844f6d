"""wsgi-server: a WSGI application server written in Rust, as a Python package.

Three ways in, all running the same Rust core as the reference binary, with
this interpreter as the master process:

- the console script ``wsgi-server`` (and ``python -m wsgi_server``): exactly
  the binary's command line, e.g. ``wsgi-server -w 4 myapp:app``;
- ``serve(app, bind=..., workers=..., threads=..., **options)`` for scripts
  and tests;
- ``[server:main] use = egg:wsgi-server#main`` under ``pserve`` (see
  ``wsgi_server.paste``).

The master forks its workers from this process, so an application object
given to ``serve()`` reaches them without being imported again (as
``--preload`` does); the server refuses to start while other Python threads
run, since a fork copies the locks they hold.
"""

from ._native import RequestTimeout, __version__
from ._native import main as _native_main
from ._native import run as _native_run

__all__ = ["RequestTimeout", "main", "serve", "options_to_argv", "__version__"]


def main(argv=None):
    """The console script: ``wsgi-server ARGS``; exits with the server's code."""
    import sys

    if argv is None:
        argv = sys.argv[1:]
    raise SystemExit(_native_main(list(argv)))


def options_to_argv(options):
    """Keyword options as command-line flags: ``workers=4`` is
    ``--workers=4``, ``max_requests=100`` is ``--max-requests=100``,
    ``preload=True`` is ``--preload`` (``no_master=True`` is
    ``--no-master``), ``preload=False`` is ``--preload=false``, a list
    repeats its flag (``bind=["127.0.0.1:8000", "unix:/tmp/s"]``), ``None``
    is left out. Every option of ``wsgi-server --help`` is accepted by its
    long name."""
    argv = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is True:
                # Bare, as typed: negations (--no-master) take no value.
                argv.append(flag)
            elif item is False:
                argv.append(f"{flag}=false")
            else:
                argv.append(f"{flag}={item}")
    return argv


def _describe(app):
    """A name for an application object, for the log and --print-config."""
    module = getattr(app, "__module__", None) or type(app).__module__
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"


def serve(app, bind=None, workers=None, threads=None, **options):
    """Serves ``app`` until the server is stopped (TERM, INT or Ctrl-C, QUIT)
    and returns its exit code (0 on a clean stop).

    ``app`` is a WSGI callable, served as it is (in the workers forked from
    this process), or an application spec string as on the command line
    (``"myapp:app"``, ``"app.py"``), imported by each worker. ``bind`` is an
    address or a list of them (``"127.0.0.1:8000"``, ``"unix:/run/app.sock"``);
    every other option of ``wsgi-server --help`` is accepted by its long name
    with ``_`` for ``-`` (``max_requests=1000``, ``graceful_timeout=10``,
    ``no_master=True``, ``error_logfile="-"``).

    The environment counts as for the command line (``GUNICORN_CMD_ARGS``,
    ``WEB_CONCURRENCY``, ``PORT``, ...), below these options.
    """
    argv = options_to_argv(dict(bind=bind, workers=workers, threads=threads, **options))
    if isinstance(app, str):
        return _native_run(argv + [app])
    if not callable(app):
        raise TypeError(f"serve() needs a WSGI callable or an app spec string, not {type(app).__name__}")
    return _native_run(argv + [_describe(app)], app)
