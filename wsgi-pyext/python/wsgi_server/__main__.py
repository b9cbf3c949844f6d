"""``python -m wsgi_server ARGS``: the same as the ``wsgi-server`` command."""

from . import main

if __name__ == "__main__":
    main()
