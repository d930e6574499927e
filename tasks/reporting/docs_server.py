"""`nightshift docs`: serve a local lake's reports (the validation pages) on 127.0.0.1.

A browser will not open a `file://` link from the Prefect UI's http page, so the links
artifact points at this server: `http://127.0.0.1:8765/validation/<dataset>/<as_of>/docs/`.
Static files only, loopback only.
"""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_PORT = 8765


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files, without a log line per request on stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass


def make_server(directory: str | Path, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """An HTTP server for `directory` bound to 127.0.0.1:`port` (0: any free port).

    Raises OSError naming the port when it is taken.
    """
    handler = functools.partial(QuietHandler, directory=str(directory))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise OSError(
            f"127.0.0.1:{port} is taken ({error.strerror}); pick another --port"
        ) from None


def validation_pages(directory: str | Path) -> list[str]:
    """The nights' validation pages under `directory`, relative paths, newest as_of last."""
    root = Path(directory)
    pages = root.glob("validation/*/*/docs/index.html")
    return sorted((str(p.relative_to(root)) for p in pages), key=lambda p: (p.split("/")[2], p))
