"""A small closed-loop HTTP load generator on loopback (asyncio, keep-alive, no dependencies).

`concurrency` connections each send the same POST body, wait for the answer and send the
next, until `duration_s` seconds or `max_requests` requests, whichever comes first. The
client is deliberately thin (pre-built request bytes, minimal response parsing) so that on
a 2-core machine it takes as little CPU from the server under test as possible.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class LoadResult:
    """Latencies of the successful requests and the counts of the run."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")
        )


async def _one_connection(host, port, request, deadline, budget, latencies, errors) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if head[9:12] == b"200":
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors.append(head[:12].decode() + " " + body[:200].decode(errors="replace"))
    finally:
        writer.close()


async def _run(host, port, path, body, concurrency, duration_s, max_requests) -> LoadResult:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(
            _one_connection(host, port, request, deadline, budget, latencies, errors)
            for _ in range(concurrency)
        )
    )
    seconds = time.perf_counter() - started
    return LoadResult(
        len(latencies), len(errors), seconds, np.array(latencies), errors[0] if errors else None
    )


def run_load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    concurrency: int = 4,
    duration_s: float = 20.0,
    max_requests: int = 200_000,
) -> LoadResult:
    """Closed-loop load against http://host:port/path; bounded in time and in count."""
    return asyncio.run(_run(host, port, path, body, concurrency, duration_s, max_requests))
