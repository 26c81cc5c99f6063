"""The house rules a reader relies on (STYLE.md): small modules and functions, imports that run one
way (`scripts → jobs/workers → app → models`), one way to write a job, actor names in one place.

Each rule reads the source as text (ast), so a change that breaks one fails here with the place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import keys

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "workers", "jobs", "models", "scripts")
#: A package may import its own layer's and lower layers' packages, never a higher one.
LAYER = {"models": 0, "app": 1, "jobs": 2, "workers": 2, "scripts": 3}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> Iterator[tuple[str, Path, ast.Module]]:
    """Every module of the farm's packages, without the benchmarks (measuring scripts)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "bench" not in path.relative_to(ROOT).parts:
                yield package, path, ast.parse(path.read_text(), filename=str(path))


def where(path: Path, node: ast.AST | None = None) -> str:
    line = f":{node.lineno}" if isinstance(node, ast.stmt | ast.expr) else ""
    return f"{path.relative_to(ROOT)}{line}"


def imported(tree: ast.Module) -> Iterator[tuple[ast.stmt, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


def test_no_module_is_longer_than_400_lines() -> None:
    long = [f"{where(path)} ({n} lines)" for _, path, _ in sources()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_no_function_is_longer_than_60_lines() -> None:
    long = [f"{where(path, node)} {node.name} ({n} lines)"
            for _, path, tree in sources() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and (n := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES]
    assert long == []


def test_imports_run_one_way() -> None:
    backwards = [f"{where(path, node)} {package} imports {name}"
                 for package, path, tree in sources() for node, name in imported(tree)
                 if (top := name.split(".")[0]) in LAYER and top != package
                 and LAYER[top] > LAYER[package]]
    assert backwards == []


def test_the_cli_reads_records_not_api_schemas() -> None:
    cli = [(path, tree) for package, path, tree in sources()
           if package == "scripts" and (path.parent.name == "cli" or path.name == "farmctl.py")]
    assert cli
    assert [f"{where(path, node)} {name}" for path, tree in cli for node, name in imported(tree)
            if name.startswith("app.api")] == []


def test_only_the_outbox_writes_job_rows() -> None:
    # (a migration is a snapshot of its day: 0005 moved the old outbox's rows into the ledger)
    writers = [where(path, node) for _, path, tree in sources() for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and "INSERT INTO jobs" in node.value and path != ROOT / "app" / "outbox.py"
               and "migrations" not in path.parts]
    assert writers == []


KINDS = [value for value in vars(keys).values() if isinstance(value, keys.JobKind)]


@pytest.mark.parametrize("kind", KINDS, ids=[kind.actor for kind in KINDS])
def test_an_actor_is_named_in_app_keys_only(kind: keys.JobKind) -> None:
    spelled = [where(path, node) for _, path, tree in sources() for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and node.value == kind.actor
               and path != ROOT / "app" / "keys.py"]
    assert spelled == []


def test_every_job_kind_has_its_actor_on_its_queue() -> None:
    import jobs

    declared = {name: jobs.broker.get_actor(name).queue_name for name in jobs.broker.get_declared_actors()}
    assert {kind.actor: declared.get(kind.actor) for kind in KINDS} == {kind.actor: kind.queue
                                                                       for kind in KINDS}
