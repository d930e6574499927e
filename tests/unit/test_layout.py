"""Code tests of the layout itself: the promises ARCHITECTURE.md makes about the code.

- Only the thin `prefect_tasks*.py` modules of each stage package import Prefect (and
  `tasks.monitoring.events`, which is Prefect's events client); every other module of
  `tasks/` runs (and is tested) without the orchestrator.
- No import cycles between modules of `tasks/` (imports under TYPE_CHECKING excepted).
- No function longer than ~80 lines unless its docstring says why ("Long on purpose").
- Flows hold no stage logic: every `tasks` name a flow imports is a task, a parameter
  model, a context helper or a result type.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tasks"
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in TASKS.rglob("*.py")
    }


def _imports(path: Path) -> set[str]:
    """Modules a file imports, leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


# Modules besides the thin task modules that may import Prefect, and why.
PREFECT_CLIENTS = {
    "tasks.monitoring.events",  # emits Prefect custom events: it is Prefect's events API
}


def _is_thin_task_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("prefect_tasks")


def test_only_the_thin_task_modules_import_prefect():
    offenders = [
        f"{name}: {sorted(i for i in _imports(path) if i.split('.')[0] in ('prefect', 'prefect_dask'))}"
        for name, path in _modules().items()
        if not _is_thin_task_module(name)
        and name not in PREFECT_CLIENTS
        and any(i.split(".")[0] in ("prefect", "prefect_dask") for i in _imports(path))
    ]
    assert offenders == []


def test_every_stage_package_has_plain_modules_and_one_thin_task_module():
    packages = sorted(p.parent.name for p in TASKS.glob("*/__init__.py"))
    assert packages == [
        "backtest",
        "core",
        "datasets",
        "evaluation",
        "features",
        "ingest",
        "landing",
        "monitoring",
        "ops",
        "quality",
        "release",
        "reporting",
        "serving",
        "training",
    ]
    for stage in (
        "ingest",
        "quality",
        "features",
        "monitoring",
        "training",
        "evaluation",
        "release",
    ):
        assert (TASKS / stage / "prefect_tasks.py").exists(), stage
    assert not list(TASKS.glob("*.py"))[1:], "tasks/ holds packages, not flat modules"


def test_every_project_import_names_a_module_that_exists():
    """Lazy imports inside functions too: a renamed module must not survive in a CLI path."""
    modules = set(_modules()) | {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "flows").glob("*.py")
    }
    modules |= {"tasks", "flows", "data_contracts"}
    missing = []
    for path in [
        *TASKS.rglob("*.py"),
        *(ROOT / "flows").glob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                name = node.module
            elif isinstance(node, ast.Import):
                name = node.names[0].name
            else:
                continue
            if name.split(".")[0] in ("tasks", "flows") and name not in modules:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert missing == []


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {
        name: {i for i in _imports(path) if i in modules and i != name}
        for name, path in modules.items()
    }
    # a package's __init__ importing its own submodule is how a package exports; not a cycle
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_function_is_longer_than_80_lines_without_saying_why():
    long = []
    for path in [*TASKS.rglob("*.py"), *(ROOT / "flows").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                docstring = ast.get_docstring(node) or ""
                if length > MAX_LINES and "Long on purpose" not in docstring:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert long == []


def test_the_flows_read_as_a_table_of_contents():
    """The nightly flow's body is stage calls: no loops over data, no arithmetic."""
    tree = ast.parse((ROOT / "flows" / "nightly.py").read_text())
    flow = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    for statement in flow.body:
        for node in ast.walk(statement):
            assert not isinstance(node, ast.For | ast.While | ast.BinOp), ast.unparse(node)[:80]


def _calls(path: Path):
    """(enclosing function name, call node) for every call in a file."""
    tree = ast.parse(path.read_text())
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.Call):
                    yield func.name, node


def test_every_prefect_task_has_a_timeout():
    """Nothing holds the deployment's slot forever: each @task names `timeout_seconds`."""
    missing = []
    for path in TASKS.glob("*/prefect_tasks*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                name = ast.unparse(deco.func if isinstance(deco, ast.Call) else deco)
                keywords = {k.arg for k in deco.keywords} if isinstance(deco, ast.Call) else set()
                if name == "task" and "timeout_seconds" not in keywords:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert missing == []


def test_every_dask_wait_in_tasks_is_bounded():
    """Every `.result()`, `wait`, `as_completed` and `wait_for_workers` passes `timeout=`,
    and `gather` (which has none) is only called by `gather_within`, which waits first.

    A Prefect `state.result()` is exempt: a final state holds its result, nothing waits.
    """
    unbounded = []
    for path in [*TASKS.rglob("*.py"), *(ROOT / "flows").glob("*.py")]:
        for function, call in _calls(path):
            callee = call.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            receiver = ast.unparse(callee.value) if isinstance(callee, ast.Attribute) else ""
            has_timeout = any(k.arg == "timeout" for k in call.keywords)
            where = f"{path.relative_to(ROOT)}:{call.lineno} {ast.unparse(call)[:60]}"
            unbounded_here = (
                (name == "gather" and function != "gather_within")
                or (name == "result" and not has_timeout and not receiver.endswith("state"))
                or (name in ("as_completed", "wait_for_workers") and not has_timeout)
                or (name == "wait" and receiver in ("", "distributed") and not has_timeout)
            )
            if unbounded_here:
                unbounded.append(where)
    assert unbounded == []
