"""A PasteDeploy application for wsgi-server's tests.

`main` (entry point `paste.app_factory: main`) answers with its `db_uri`
setting and PasteDeploy's `here` (the directory of the INI file);
`header_filter` (`paste.filter_app_factory: header`) adds a response header.
"""


def main(global_config, **settings):
    """paste.app_factory: (global_config, **local settings) -> WSGI app."""
    db_uri = settings.get("db_uri", "")
    here = global_config.get("here", "")
    body = f"db_uri={db_uri}\nhere={here}\n".encode()

    def app(environ, start_response):
        start_response(
            "200 OK",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def header_filter(app, global_config, header="X-Paste-Filter", value="on", **settings):
    """paste.filter_app_factory: wraps `app`, adding `header: value`."""

    def filtered(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, list(headers) + [(header, value)], exc_info)

        return app(environ, start)

    return filtered
