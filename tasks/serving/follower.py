"""Follow `@champion`: poll the registry, load a new version next to the old, swap atomically.

Why polling and not events: the registry's alias can move from the nightly flow's promote
step, from `nightshift promote` / `nightshift rollback`, or from the MLflow UI. MLflow's
registry webhooks need an MLflow tracking *server* and a service reachable from it (none
with the embedded SQLite store), and a Prefect event would only cover the flow's own
promotions. One `get_model_version_by_alias` call every few seconds sees every move in
every configuration, at the cost of up to `poll_seconds` of delay.

A swap is one reference assignment: a request reads `follower.current` once and is
answered entirely by that version, so no request sees half a swap or fails during one.
A version that fails its integrity check or smoke test is refused (and remembered: it is
not retried while the alias stays on it); the version already serving keeps serving.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.serving.model import LoadedVersion, VersionRefused, download_and_load

logger = logging.getLogger("nightshift.serving")

CHAMPION = "champion"

Loader = Callable[[str, str, str, str], LoadedVersion]


@dataclass
class Swap:
    """One change of the served version (for /health and the logs)."""

    from_version: str | None
    to_version: str
    at: float
    load_seconds: float


@dataclass
class ChampionFollower:
    """Keeps `current` on the version the registry's alias points at, if it may serve."""

    tracking_uri: str
    model_name: str
    alias: str = CHAMPION
    poll_seconds: float = 5.0
    cache_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="nightshift-serve-"))
    loader: Loader = download_and_load
    current: LoadedVersion | None = None
    refused: dict[str, str] = field(default_factory=dict)
    swaps: list[Swap] = field(default_factory=list)
    last_check: float | None = None
    last_error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load at a time (the poller, or a test's check)

    def alias_version(self) -> str | None:
        """The version the alias points at now; None when the model or alias does not exist."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            found = MlflowClient(
                self.tracking_uri, registry_uri=self.tracking_uri
            ).get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
                return None
            raise
        return str(found.version)

    def check_once(self) -> str | None:
        """Follow the alias once: load and swap in its version if it changed; the version served."""
        with self._lock:
            try:
                target = self.alias_version()
                self.last_error = None
            except Exception as error:  # the registry is down: keep serving what we have
                self.last_error = f"registry unreachable: {error!r}"
                logger.warning("serving %s: %s", self.model_name, self.last_error)
                return self.version
            finally:
                self.last_check = time.time()
            if target is None or target == self.version or target in self.refused:
                return self.version
            self._load_and_swap(target)
            return self.version

    def _load_and_swap(self, target: str) -> None:
        started = time.perf_counter()
        try:
            loaded = self.loader(self.tracking_uri, self.model_name, target, self.cache_dir)
        except VersionRefused as refused:
            if refused.reason.startswith("download failed"):
                self.last_error = str(refused)  # transient: try again at the next poll
            else:
                self.refused[target] = refused.reason
            logger.error(
                "serving %s: @%s -> v%s %s; still serving v%s",
                self.model_name,
                self.alias,
                target,
                refused.reason,
                self.version or "-",
            )
            return
        previous = self.current
        self.current = loaded  # the swap: one reference assignment
        seconds = time.perf_counter() - started
        self.swaps.append(Swap(previous and previous.version, target, time.time(), seconds))
        logger.info(
            "serving %s: @%s v%s -> v%s (loaded and checked in %.2f s)",
            self.model_name,
            self.alias,
            previous.version if previous else "-",
            target,
            seconds,
        )
        if previous is not None:
            previous.discard()  # its session is in memory; in-flight requests still hold it

    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current else None

    def start(self) -> None:
        """Poll in a background thread every `poll_seconds` until `stop()`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.check_once()
                self._stop.wait(self.poll_seconds)

        self._thread = threading.Thread(target=loop, name="champion-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict:
        """What /health reports: the served version, the alias, refusals, recent swaps."""
        current = self.current
        return {
            "model": self.model_name,
            "alias": self.alias,
            "version": current.version if current else None,
            "loaded_at": current.loaded_at if current else None,
            "poll_seconds": self.poll_seconds,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "refused": self.refused,
            "swaps": [vars(s) for s in self.swaps[-10:]],
        }
