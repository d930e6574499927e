"""Stage results on disk: each stage writes its typed result next to its outputs.

This is what lets every stage run alone (`nightshift train --as-of D`): a stage reads
the results of the stages before it from the lake, as the flow would have passed them.
Results are dataclasses or pydantic models; pydantic turns them into JSON and back.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import TypeAdapter

from tasks.core.context import RunContext

T = TypeVar("T")


def result_path(ctx: RunContext, stage: str) -> str:
    return ctx.run_dir(stage, "result.json")


def write_result(ctx: RunContext, stage: str, result: T) -> T:
    """Record a stage's result in the lake (atomically) and hand it back."""
    payload = TypeAdapter(type(result)).dump_python(result, mode="json")
    ctx.lake.write_bytes_atomic(result_path(ctx, stage), json.dumps(payload, indent=1).encode())
    return result


def read_result(ctx: RunContext, stage: str, kind: type[T]) -> T:
    """A stage's recorded result; a clear error naming the command that makes it."""
    path = result_path(ctx, stage)
    if not ctx.lake.exists(path):
        raise FileNotFoundError(
            f"no {stage} result for dataset {ctx.dataset} as_of {ctx.as_of} ({path}); "
            f"run `nightshift {stage} --as-of {ctx.as_of} --dataset {ctx.dataset}` "
            "(or the whole flow) first"
        )
    return TypeAdapter(kind).validate_python(ctx.lake.read_json(path))
