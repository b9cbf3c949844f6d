"""Starts bjoern or fastwsgi, which have no command line of their own
(adapted from the shared bench harness).

    python serve.py bjoern|fastwsgi MODULE[:CALLABLE] HOST PORT

MODULE is imported from the current directory (the harness runs servers
from xtask/bench/apps). Both serve keep-alive by default.
"""
import importlib
import os
import sys


def load(spec):
    mod_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(mod_name), attr or "application")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("bjoern", "fastwsgi"):
        sys.exit(__doc__)
    _, server, spec, host, port = sys.argv
    if server == "fastwsgi":
        import fastwsgi

        fastwsgi.run(wsgi_app=load(spec), host=host, port=int(port))
        return
    import bjoern

    bjoern.run(load(spec), host, int(port))


if __name__ == "__main__":
    main()
