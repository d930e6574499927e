"""The embedded Prefect server: started once, kept across nights, reused by every run.

Starting Prefect's server costs a run 8-20 s on a small machine (its imports, the
database check), more than everything else before the first task together. So the
embedded default keeps the server it starts: a uvicorn process in a session of its own,
listening on loopback, its database under `<home>/prefect` as before, and where it
listens recorded in `<home>/prefect/server.json`. The next run of the same home finds it
there, checks `/api/health` and reuses it.

- `nightshift prefect-server status | stop` shows and stops it (`make clean-lake` stops
  it before deleting the home).
- `NIGHTSHIFT_PREFECT_SERVER_KEEP=false`: a private server per run, stopped at its end
  (the behaviour before); a kept server that is already running is still reused.
- `NIGHTSHIFT_PREFECT_API_URL`: a real server; nothing here runs.

The server is the same app Prefect's own ephemeral server runs (`create_app`, no UI, no
background services): a `nightshift run` needs only its API. `make ui-prefect` opens the
same database with the UI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from tasks.core.settings import Settings

APP = "prefect.server.api.server:create_app"


@dataclass
class EmbeddedServer:
    """A local Prefect server this home uses: reused, or started by this process."""

    api_url: str
    pid: int
    reused: bool
    kept: bool
    log_path: Path
    process: subprocess.Popen | None = None  # when this process started it

    def wait_until_healthy(self, timeout_s: float = 120.0) -> None:
        """Block until `/api/health` answers; raise naming the log if the server died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if healthy(self.api_url, timeout_s=1.0):
                return
            exited = self.process.poll() if self.process else None
            if exited is not None or (self.process is None and not _alive(self.pid)):
                raise RuntimeError(
                    f"the embedded Prefect server (pid {self.pid}, {self.api_url}) exited "
                    f"before it answered; its log: {self.log_path}\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)
        raise RuntimeError(
            f"the embedded Prefect server (pid {self.pid}) did not answer at {self.api_url} "
            f"within {timeout_s:.0f} s; its log: {self.log_path}"
        )

    def stop(self) -> None:
        """Stop a server this process started for itself (a kept one stays)."""
        if self.process is None or self.kept:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class PrefectApi:
    """The API a run talks to: configured, a reused embedded server, or one just started."""

    url: str
    origin: str  # "configured" | "reused" | "started"
    server: EmbeddedServer | None = None

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the API answers (at once for a configured or reused server)."""
        if self.server is not None:
            self.server.wait_until_healthy(timeout_s)


@contextmanager
def open_prefect_api(settings: Settings) -> Iterator[PrefectApi]:
    """The Prefect API for the block, exported to the environment at once, not waited for.

    The configured URL when there is one; else this home's kept embedded server, or a new
    one (kept across runs unless NIGHTSHIFT_PREFECT_SERVER_KEEP=false). Its URL is known
    before it answers, so Dask workers started meanwhile inherit it; call
    `wait_until_ready` before the first API call. Imports Prefect only when it must (to
    read a configuration file, or when already imported): its import is seconds that the
    Dask cluster can start during.
    """
    configured = configured_api_url()
    if configured:
        yield PrefectApi(configured, "configured")
        return
    server = embedded_server(settings)
    os.environ["PREFECT_API_URL"] = server.api_url
    api = PrefectApi(server.api_url, "reused" if server.reused else "started", server)
    try:
        with _prefect_settings_with(server.api_url):
            yield api
    finally:
        if "prefect.logging.handlers" in sys.modules:
            # Ship the last log lines and events before the process (or server) goes.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()  # a private server only; a kept one serves the next run


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect would read it, without importing Prefect when nothing
    but the environment can set it (no Prefect already loaded, no config file)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" not in sys.modules and not _prefect_config_files():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _prefect_config_files() -> bool:
    """Whether a file Prefect reads its settings from exists (profiles, prefect.toml, a
    `.env`, `[tool.prefect]` in pyproject.toml)."""
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml"))
    if profiles.exists() or Path("prefect.toml").exists() or Path(".env").exists():
        return True
    try:
        return "[tool.prefect" in Path("pyproject.toml").read_text()
    except OSError:
        return False


def _prefect_settings_with(api_url: str):
    """Prefect's settings context with the URL when Prefect is already imported (its
    settings were read before the environment had it); else nothing to do: Prefect reads
    the environment when it is first imported."""
    if "prefect.settings" not in sys.modules:
        return nullcontext()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})


def state_path(settings: Settings) -> Path:
    """`<home>/prefect/server.json`: pid and URL of the kept server of this home."""
    return settings.prefect_home / "server.json"


def healthy(api_url: str, timeout_s: float = 1.0) -> bool:
    """True when a Prefect API answers `GET <api_url>/health` with 200."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def kept_server(settings: Settings) -> EmbeddedServer | None:
    """The kept server of this home when its process is still the Prefect server we
    started (pid alive and running Prefect's app), else None (a stale record)."""
    try:
        state = json.loads(state_path(settings).read_text())
        pid, api_url = int(state["pid"]), str(state["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_prefect_server(pid):
        return None
    return EmbeddedServer(api_url, pid, True, True, _log_path(settings))


def embedded_server(settings: Settings, keep: bool | None = None) -> EmbeddedServer:
    """This home's running kept server, or a new one (started, not yet waited for).

    The lock makes two runs starting at once share one server instead of racing to
    start two. The caller waits with `wait_until_healthy` when it needs the API, so the
    Dask cluster and the flow's imports start meanwhile.
    """
    keep = settings.prefect_server_keep if keep is None else keep
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.prefect_home / "server.lock"), timeout=60):
        found = kept_server(settings)
        if found is not None:
            return found
        return _start(settings, keep)


def stop_kept_server(settings: Settings, timeout_s: float = 15.0) -> int | None:
    """Stop this home's kept server; returns its pid (None when none was running)."""
    found = kept_server(settings)
    state_path(settings).unlink(missing_ok=True)
    if found is None:
        return None
    os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(found.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(found.pid):
        os.kill(found.pid, signal.SIGKILL)
    return found.pid


def _start(settings: Settings, keep: bool) -> EmbeddedServer:
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = _log_path(settings)
    env = {
        **os.environ,
        "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(settings.prefect_home)),
        "PREFECT_UI_ENABLED": "0",  # what Prefect's own ephemeral server sets
        "PREFECT__SERVER_EPHEMERAL": "1",  # no background services: runs need the API only
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", APP, "--host", "127.0.0.1"]
            + ["--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # kept: a session of its own, so Ctrl-C on the run does not stop it
            start_new_session=keep,
        )
    if keep:
        state_path(settings).write_text(
            json.dumps(
                {
                    "pid": process.pid,
                    "api_url": api_url,
                    "started": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
    return EmbeddedServer(api_url, process.pid, False, keep, log_path, process)


def _log_path(settings: Settings) -> Path:
    return settings.prefect_home / "server.log"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_prefect_server(pid: int) -> bool:
    """pid alive and running Prefect's app (never signal a process that reused the pid)."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():  # no /proc (macOS): trust the record
        return True
    try:
        return APP in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
