"""The model service under load, side by side in one run; prints BENCHMARKS.md tables.

    .venv/bin/python benchmarks/serving.py [--seconds 20] [--concurrency 4]
    .venv/bin/python benchmarks/serving.py --build-small     # no `make run` home yet

Serves `models:/<name>@champion` of the configured registry (`NIGHTSHIFT_*` settings, as
`make run` leaves them) three ways, one after another, on the same machine and rows:

1. `nightshift serve-model` (this service) on 127.0.0.1: one process, uvicorn;
2. `mlflow models serve` on the same version (`--env-manager local --workers 1`): one
   process, uvicorn, running the registered pyfunc (the same numpy path for small inputs).
   Both uvicorns use uvloop and httptools when installed (they are dependencies), so the
   comparison is of what each server does per request, on the same HTTP stack.
3. the bare onnxruntime session of the same ONNX file, in process (the limit: no HTTP,
   no preprocessing), and the in-process pyfunc (preprocessing + onnxruntime, no HTTP).

Each HTTP target gets `--concurrency` keep-alive connections sending one request after
another (benchmarks/loadgen.py, closed loop) for `--seconds` (at most `--max-requests`),
at batch 1 and batch 256, after a short warm-up. Then the served ONNX file is timed
against the fp32 ONNX export of the same run's fp32 torch weights, and against the fp32
torch network itself, with one thread each.

`--build-small` first makes a registry in a temporary home: `nightshift land` and
`nightshift run` on 2013-01-01..2013-01-31 (7 days held out, 2 epochs, no search).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, run_load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"no answer from {url} after {timeout} s")


def build_small_home(home: Path) -> dict[str, str]:
    """A registry from the real nightly flow on January 2013 (environment to use it)."""
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "PYTHONPATH": str(REPO)}
    env["NIGHTSHIFT_PREFECT_SERVER_KEEP"] = "false"  # a one-off home: no server left behind
    cli = [sys.executable, "-m", "flows.cli"]
    subprocess.run([*cli, "land", "--through", "2013-01-31"], env=env, check=True, cwd=REPO)
    subprocess.run(
        [*cli, "run", "--as-of", "2013-01-31", "--holdout-days", "7", "--epochs", "2"]
        + ["--trials", "0"],
        env=env,
        check=True,
        cwd=REPO,
    )
    return {"NIGHTSHIFT_HOME": str(home)}


def _rows(ctx, version, model_dir: Path) -> pd.DataFrame:
    """Real holdout rows of the version's night when the lake has them, else its example."""
    from tasks.core.results import read_result
    from tasks.features.build import FeatureSet

    try:
        as_of = date.fromisoformat(version.tags["as_of"])
        features = read_result(ctx.with_(as_of=as_of), "features", FeatureSet)
        return ctx.lake.read_parquet(features.holdout_path)[list(ctx.spec.input_columns)]
    except (KeyError, ValueError, FileNotFoundError):
        example = json.loads((model_dir / "serving_input_example.json").read_text())
        split = example["dataframe_split"]
        return pd.DataFrame(split["data"], columns=split["columns"])


def _body(rows: pd.DataFrame, batch: int) -> bytes:
    picked = rows.iloc[np.arange(batch) % len(rows)]
    split = json.loads(picked.to_json(orient="split", date_format="iso", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def _load(port: int, body: bytes, args) -> LoadResult:
    run_load("127.0.0.1", port, "/invocations", body, args.concurrency, 2.0)  # warm-up
    result = run_load(
        "127.0.0.1", port, "/invocations", body, args.concurrency, args.seconds, args.max_requests
    )
    if result.errors:
        print(f"  {result.errors} failed requests, first: {result.first_error}", file=sys.stderr)
    return result


def measure_server(command: list[str], ready: str, port: int, bodies, args, env) -> dict:
    """Start a server, load it at each batch size, stop it."""
    server = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(f"http://127.0.0.1:{port}{ready}", server)
        return {batch: _load(port, body, args) for batch, body in bodies.items()}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _timed(fn, seconds: float) -> np.ndarray:
    fn()
    times, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def in_process(model_dir: Path, rows: pd.DataFrame, batches, seconds: float) -> dict:
    """Bare onnxruntime on preprocessed rows, and the pyfunc's predict, in this process."""
    from tasks.serving.model import load_from_dir

    loaded = load_from_dir("bench", "0", str(model_dir))
    model = loaded.model
    out = {}
    for batch in batches:
        frame = rows.iloc[np.arange(batch) % len(rows)].reset_index(drop=True)
        codes, numeric = model.preprocessor.transform(model.spec.feature_frame(frame))
        feed = {"codes": codes.astype(np.int64), "numeric": numeric}
        out[("onnxruntime", batch)] = _timed(lambda f=feed: model.session.run(None, f), seconds)
        out[("pyfunc", batch)] = _timed(lambda f=frame: model.predict(None, f), seconds)
    return out


def compressed_vs_fp32(client, version, model_dir: Path, rows: pd.DataFrame) -> list[tuple]:
    """ms per call of the served ONNX vs the fp32 ONNX export and fp32 torch (1 thread)."""
    import mlflow.artifacts

    from tasks.release.compress import ExportNet, export_onnx, onnx_latency_ms, torch_latency_ms
    from tasks.release.pyfunc import session
    from tasks.serving.model import load_from_dir
    from tasks.training.loop import load_network

    model = load_from_dir("bench", "0", str(model_dir)).model
    scratch = Path(tempfile.mkdtemp(prefix="nightshift-fp32-"))
    fp32_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path="fp32", dst_path=str(scratch)
        )
    )
    net = load_network(str(fp32_dir / "weights.pt"), str(fp32_dir / "net_config.json"))
    results = []
    for batch in (1, 256):
        frame = rows.iloc[np.arange(batch) % len(rows)].reset_index(drop=True)
        codes, numeric = model.preprocessor.transform(model.spec.feature_frame(frame))
        codes = codes.astype(np.int64)
        fp32_path = export_onnx(ExportNet(net), (codes[:1], numeric[:1]), str(scratch / "f.onnx"))
        repeats = 2000 if batch == 1 else 300
        served = onnx_latency_ms(model.session, codes, numeric, repeats)
        fp32 = onnx_latency_ms(session(fp32_path), codes, numeric, repeats)
        torch_ms = torch_latency_ms(net, codes, numeric, repeats, threads=1)
        results.append((batch, served, fp32, torch_ms))
    return results


def _row(name: str, batch: int, result: LoadResult) -> str:
    return (
        f"| {name} | {batch} | {result.percentile(50):.2f} | {result.percentile(99):.2f} "
        f"| {result.throughput:,.0f} | {result.throughput * batch:,.0f} | {result.requests:,} "
        f"| {result.errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per target and batch")
    parser.add_argument("--concurrency", type=int, default=4, help="connections")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--build-small", action="store_true", help="make a small registry first")
    args = parser.parse_args()
    if args.build_small:
        os.environ.update(build_small_home(Path(tempfile.mkdtemp(prefix="nightshift-bench-"))))

    import mlflow
    from mlflow.tracking import MlflowClient

    from tasks.core.context import RunContext
    from tasks.core.settings import get_settings
    from tasks.evaluation.champion import CHAMPION
    from tasks.serving.model import download_and_load

    get_settings.cache_clear()
    settings = get_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    ctx = RunContext.from_settings(settings, date.today(), "flights")
    client = MlflowClient(settings.tracking_uri)
    try:
        version = client.get_model_version_by_alias(ctx.model_name, CHAMPION)
    except Exception:
        raise SystemExit(
            f"no {ctx.model_name}@champion in {settings.tracking_uri}: `make run`, "
            "or pass --build-small"
        ) from None
    loaded = download_and_load(
        settings.tracking_uri,
        ctx.model_name,
        str(version.version),
        tempfile.mkdtemp(prefix="nightshift-bench-model-"),
    )
    model_dir = next(Path(loaded.path).rglob("MLmodel")).parent
    rows = _rows(ctx, version, model_dir)
    bodies = {batch: _body(rows, batch) for batch in (1, 256)}
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }
    ours_port, mlflow_port = _free_port(), _free_port()
    ours = measure_server(
        [sys.executable, "-m", "flows.cli", "serve-model", "--port", str(ours_port)],
        "/ready",
        ours_port,
        bodies,
        args,
        env,
    )
    theirs = measure_server(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{ctx.model_name}/{version.version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        "/ping",
        mlflow_port,
        bodies,
        args,
        env,
    )
    local = in_process(model_dir, rows, (1, 256), min(args.seconds, 10.0))
    speed = compressed_vs_fp32(client, version, model_dir, rows)

    cores = os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load1 = os.getloadavg()[0]
    stack = ", ".join(m for m in ("uvloop", "httptools") if importlib.util.find_spec(m))
    print(
        f"{ctx.model_name} v{version.version} ({version.tags.get('compression_variant')}); "
        f"{platform.machine()}, {cores} cores, {ram:.0f} GiB RAM, no GPU; {date.today()}; "
        f"load average at the end {load1:.1f}; {args.concurrency} connections, "
        f"{args.seconds:g} s per target and batch; rows: {len(rows):,} real rows cycled; "
        f"both servers: 1 uvicorn process ({stack or 'h11, asyncio'})\n"
    )
    print("| target | batch | p50 ms | p99 ms | requests/s | rows/s | requests | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for batch in (1, 256):
        print(_row("nightshift serve-model", batch, ours[batch]))
        print(_row("mlflow models serve", batch, theirs[batch]))
        for name in ("pyfunc", "onnxruntime"):
            times = local[(name, batch)]
            label = (
                "in-process pyfunc (no HTTP)" if name == "pyfunc" else "bare onnxruntime (limit)"
            )
            print(
                f"| {label} | {batch} | {np.percentile(times, 50):.3f} | "
                f"{np.percentile(times, 99):.3f} | {1000 / times.mean():,.0f} | "
                f"{1000 / times.mean() * batch:,.0f} | {len(times):,} | 0 |"
            )
    for batch in (1, 256):
        ratio = ours[batch].throughput / max(theirs[batch].throughput, 1e-9)
        print(f"\nthroughput at batch {batch}: serve-model / mlflow models serve = {ratio:.1f}x")
    print(
        "\n| batch | served ONNX ms | fp32 ONNX ms | fp32 torch ms | speed-up vs fp32 ONNX "
        "| speed-up vs fp32 torch |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for batch, served, fp32, torch_ms in speed:
        print(
            f"| {batch} | {served:.4f} | {fp32:.4f} | {torch_ms:.4f} | {fp32 / served:.2f}x "
            f"| {torch_ms / served:.2f}x |"
        )
    loaded.discard()


if __name__ == "__main__":
    main()
