"""The HTTP application: MLflow's `/invocations`, Open Inference Protocol v2, health.

Endpoints (every response carries `X-Model-Name` and `X-Model-Version`, the version that
answered or, for health checks, the one serving now):

    GET  /health                       liveness, with the follower's status (200)
    GET  /ready, /ping                 200 once a version serves, 503 before
    POST /invocations                  MLflow scoring protocol (dataframe_split / _records)
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/<name>             model metadata (inputs, outputs, version)
    GET  /v2/models/<name>/ready
    POST /v2/models/<name>/infer       one input tensor per column

Bad requests get a 4xx JSON body `{"error_code": ..., "message": ...}` naming the field;
an unexpected failure is a 500 with a short message and an id to find it in the log, never
a stack trace. Request bodies are bounded (`max_body_bytes`) and so are rows per request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tasks.serving.follower import ChampionFollower
from tasks.serving.model import LoadedVersion
from tasks.serving.schema import (
    V2_TYPES,
    RequestError,
    columns_from_invocation,
    columns_from_v2,
    dump_json,
    invocation_response,
    parse_json,
    v2_response,
)

logger = logging.getLogger("nightshift.serving")

ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


@dataclass(frozen=True)
class Limits:
    """Bounds on one request."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_rows: int = 4096


def _json(status: int, body: dict, loaded: LoadedVersion | None, name: str) -> Response:
    headers = {"X-Model-Name": name, "X-Model-Version": loaded.version if loaded else "none"}
    return Response(
        dump_json(body),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _error_body(status: int, message: str) -> dict:
    code = ERROR_CODES.get(status, "INVALID_PARAMETER_VALUE" if status < 500 else "UNAVAILABLE")
    return {"error_code": code, "message": message}


def _error(status: int, message: str, loaded: LoadedVersion | None, name: str) -> Response:
    return _json(status, _error_body(status, message), loaded, name)


async def _read_body(headers: dict[bytes, bytes], receive: Callable, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
    if "json" not in content_type:
        raise RequestError(415, f"Content-Type {content_type!r}: send application/json")
    declared = headers.get(b"content-length", b"").decode("latin-1")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes exceeds {limit} bytes")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def build_app(follower: ChampionFollower, limits: Limits = Limits()) -> _ScoringEndpoints:
    """The service's ASGI application around a (started or not) champion follower.

    The scoring endpoints are `_ScoringEndpoints`; FastAPI serves the others.
    Long on purpose: it reads as the list of endpoints.
    """
    name = follower.model_name
    app = FastAPI(title=f"nightshift model service: {name}@{follower.alias}", docs_url=None)

    def ready() -> Response:
        loaded = follower.current
        if loaded is None:
            return _error(503, f"not ready: no version of {name} loaded yet", None, name)
        return _json(200, {"ready": True, "model": name, "version": loaded.version}, loaded, name)

    app.get("/ready")(ready)
    app.get("/ping")(ready)
    app.get("/v2/health/ready")(ready)

    @app.get("/health")
    def health() -> Response:
        return _json(200, {"status": "alive", **follower.status()}, follower.current, name)

    @app.get("/v2/health/live")
    def live() -> Response:
        return _json(200, {"live": True}, follower.current, name)

    @app.get("/v2/models/{model}/ready")
    def model_ready(model: str) -> Response:
        if model != name:
            return _error(404, f"unknown model {model!r}; this service serves {name!r}", None, name)
        return ready()

    @app.get("/v2/models/{model}")
    def metadata(model: str) -> Response:
        loaded = follower.current
        if model != name:
            return _error(404, f"unknown model {model!r}; this service serves {name!r}", None, name)
        if loaded is None:
            return _error(503, f"not ready: no version of {name} loaded yet", None, name)
        inputs = [
            {"name": c.name, "datatype": V2_TYPES.get(c.type, "FP64"), "shape": [-1]}
            for c in loaded.columns
        ]
        outputs = [
            {"name": loaded.outputs[0], "datatype": "FP64", "shape": [-1]},
            {"name": loaded.outputs[1], "datatype": "BOOL", "shape": [-1]},
        ]
        body = {
            "name": name,
            "versions": [loaded.version],
            "platform": "onnxruntime",
            "inputs": inputs,
            "outputs": outputs,
        }
        return _json(200, body, loaded, name)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        logger.error(
            "serving %s: %s %s failed (%s): %r",
            name,
            request.method,
            request.url.path,
            incident,
            error,
        )
        return _error(500, f"internal error (incident {incident})", follower.current, name)

    app.add_middleware(_VersionHeaders, follower=follower)
    return _ScoringEndpoints(app, follower, limits)


class _ScoringEndpoints:
    """ASGI: `POST /invocations` and `POST /v2/models/<name>/infer`, in front of FastAPI.

    Scoring one row costs well under a millisecond; FastAPI's routing, request object and
    middleware stack cost as much again, so the two scoring endpoints are answered here,
    straight from the ASGI messages, and everything else goes on to FastAPI.
    """

    def __init__(self, app: FastAPI, follower: ChampionFollower, limits: Limits) -> None:
        self.app = app
        self.follower = follower
        self.limits = limits
        self.name = follower.model_name
        self.v2_prefix, self.v2_suffix = "/v2/models/", "/infer"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/invocations":
            model = None
        elif path.startswith(self.v2_prefix) and path.endswith(self.v2_suffix):
            model = path[len(self.v2_prefix) : -len(self.v2_suffix)]
        else:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            body = _error_body(405, f"{scope['method']} {path}: use POST")
            await _send_json(send, 405, body, self.name, self.follower.current)
            return
        await self.score(scope, receive, send, model)

    async def score(self, scope: dict, receive: Callable, send: Callable, v2: str | None) -> None:
        """Answer one scoring request (`v2`: the model named in a v2 path, else None)."""
        name, loaded = self.name, self.follower.current  # one version answers, start to end
        status, body = 200, {}
        headers = dict(scope["headers"])
        try:
            if v2 is not None and v2 != name:
                raise RequestError(404, f"unknown model {v2!r}; this service serves {name!r}")
            if loaded is None:
                raise RequestError(503, f"no version of {name} serves yet (@{self.follower.alias})")
            payload = parse_json(await _read_body(headers, receive, self.limits.max_body_bytes))
            parse = columns_from_invocation if v2 is None else columns_from_v2
            columns, _ = parse(payload, loaded.columns, self.limits.max_rows)
            # Scored alone, never batched with other requests: the int8 network quantizes
            # its activations per call, so a row's score depends on the rows beside it.
            answer = loaded.score(columns)
            if v2 is None:
                body = invocation_response(answer)
            else:
                body = v2_response(name, loaded.version, answer, _header(headers, b"x-request-id"))
        except RequestError as error:
            status, body = error.status, _error_body(error.status, error.message)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            version = loaded.version if loaded else "none"
            logger.exception("serving %s v%s: request %s failed", name, version, incident)
            message = f"internal error while scoring (incident {incident})"
            status, body = 500, _error_body(500, message)
        await _send_json(send, status, body, name, loaded)


async def _send_json(
    send: Callable, status: int, body: dict, name: str, loaded: LoadedVersion | None
) -> None:
    """One JSON response as ASGI messages, naming the model and the version that answered."""
    content = dump_json(body)
    version = (loaded.version if loaded else "none").encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"x-model-name", name.encode()),
        (b"x-model-version", version),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _header(headers: dict[bytes, bytes], key: bytes) -> str | None:
    value = headers.get(key)
    return None if value is None else value.decode("latin-1")


class _VersionHeaders:
    """ASGI middleware: responses that did not name a version (404, 405) get the current one."""

    def __init__(self, app: Callable[..., Awaitable[None]], follower: ChampionFollower) -> None:
        self.app = app
        self.follower = follower

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-model-version" for k, _ in headers):
                    version = self.follower.version or "none"
                    headers.append((b"x-model-version", version.encode()))
                    headers.append((b"x-model-name", self.follower.model_name.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)


def serve_forever(
    follower: ChampionFollower, host: str = "127.0.0.1", port: int = 8080, limits: Limits = Limits()
) -> None:
    """Load the champion (when there is one), follow the alias, serve until interrupted."""
    import os
    import shutil

    import uvicorn

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    follower.check_once()
    follower.start()
    try:
        uvicorn.run(
            build_app(follower, limits),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        follower.stop()
        shutil.rmtree(follower.cache_dir, ignore_errors=True)
