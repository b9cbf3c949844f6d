"""A small Flask app: `GET /json` answers `{"message":"Hello, World!"}` as JSON.

The "real framework" case: routing, request and response objects, JSON
encoding. Any other path is Flask's own 404.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/json")
def json_route():
    return jsonify(message="Hello, World!")


application = app
