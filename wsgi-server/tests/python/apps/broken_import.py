"""A module whose import raises: the server must exit 4 and print the
traceback once."""

CONSTANT = 1

raise RuntimeError("broken at import 8c1f")
