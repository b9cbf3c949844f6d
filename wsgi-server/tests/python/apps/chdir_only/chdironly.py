"""An app importable only from its own directory (the --chdir test)."""

import json
import os


def application(environ, start_response):
    body = json.dumps({"app": "chdironly", "cwd": os.getcwd()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
