"""Code tests of the UI entry points: `nightshift docs` serving, `make ui-*` on a taken port."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tasks.reporting.docs_server import make_server, validation_pages

ROOT = Path(__file__).resolve().parents[3]


def test_docs_server_serves_the_validation_pages_on_loopback(tmp_path):
    page = tmp_path / "validation" / "flights" / "2013-02-28" / "docs" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<h1>flights as_of 2013-02-28</h1>")
    server = make_server(tmp_path, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        [relative] = validation_pages(tmp_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{relative}", timeout=10) as answer:
            assert b"as_of 2013-02-28" in answer.read()
        with pytest.raises(OSError, match=f"127.0.0.1:{port} is taken"):
            make_server(tmp_path, port)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("target", ["ui-mlflow", "ui-prefect", "ui-docs"])
def test_ui_targets_fail_loudly_on_a_taken_port(target):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            # the venv is this interpreter's; `-o` keeps make from (re)installing it
            [
                "make",
                "-s",
                "-o",
                ".venv/.installed",
                target,
                f"PORT={port}",
                f"BIN={Path(sys.executable).parent}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
