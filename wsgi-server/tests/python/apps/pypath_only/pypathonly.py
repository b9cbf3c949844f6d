"""An app importable only through --pythonpath (the --pythonpath test)."""

import json
import os


def application(environ, start_response):
    body = json.dumps({"app": "pypathonly", "cwd": os.getcwd()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
