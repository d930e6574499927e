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

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

from tasks.serving.follower import ChampionFollower
from tasks.serving.model import LoadedVersion
from tasks.serving.schema import (
    V2_TYPES,
    RequestError,
    columns_from_invocation,
    columns_from_v2,
    invocation_response,
    parse_json,
    v2_response,
)

logger = logging.getLogger("nightshift.serving")

ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
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
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _error(status: int, message: str, loaded: LoadedVersion | None, name: str) -> Response:
    code = ERROR_CODES.get(status, "INVALID_PARAMETER_VALUE" if status < 500 else "UNAVAILABLE")
    return _json(status, {"error_code": code, "message": message}, loaded, name)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise RequestError(415, f"Content-Type {content_type!r}: send application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(follower: ChampionFollower, limits: Limits = Limits()) -> FastAPI:
    """The service's FastAPI application around a (started or not) champion follower.

    Long on purpose: it reads as the list of endpoints.
    """
    name = follower.model_name
    app = FastAPI(title=f"nightshift model service: {name}@{follower.alias}", docs_url=None)

    async def score(
        request: Request, parse: Callable, respond: Callable[[LoadedVersion, pd.DataFrame], dict]
    ) -> Response:
        loaded = follower.current  # this request is answered by this version, start to end
        if loaded is None:
            return _error(503, f"no version of {name} serves yet (@{follower.alias})", None, name)
        try:
            payload = parse_json(await _read_body(request, limits.max_body_bytes))
            columns, _ = parse(payload, loaded.columns, limits.max_rows)
            # Scored alone, never batched with other requests: the int8 network quantizes
            # its activations per call, so a row's score depends on the rows beside it.
            answer = loaded.predict(pd.DataFrame(columns))
            return _json(200, respond(loaded, answer), loaded, name)
        except RequestError as error:
            return _error(error.status, error.message, loaded, name)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            logger.exception("serving %s v%s: request %s failed", name, loaded.version, incident)
            return _error(500, f"internal error while scoring (incident {incident})", loaded, name)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await score(request, columns_from_invocation, lambda _, a: invocation_response(a))

    @app.post("/v2/models/{model}/infer")
    async def v2_infer(model: str, request: Request) -> Response:
        if model != name:
            return _error(404, f"unknown model {model!r}; this service serves {name!r}", None, name)
        request_id = request.headers.get("x-request-id")
        return await score(
            request, columns_from_v2, lambda v, a: v2_response(name, v.version, a, request_id)
        )

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
    return app


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
