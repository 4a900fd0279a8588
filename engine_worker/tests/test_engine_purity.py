"""The engine core must stay pure: standard library only, no floats or Decimal.

Scans the AST of every module under engine_worker/engine/, then imports the package
in a fresh interpreter and checks what ended up in sys.modules."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ENGINE_DIR = Path(__file__).resolve().parents[1] / "engine"
REPO = ENGINE_DIR.parents[1]
FORBIDDEN = {"django", "redis", "channels", "rq", "django_rq", "psycopg", "psycopg2",
             "rest_framework", "decimal"}


def _modules() -> list[Path]:
    files = sorted(ENGINE_DIR.rglob("*.py"))
    assert files, "engine package not found"
    return files


def test_engine_imports_only_the_standard_library() -> None:
    stdlib = sys.stdlib_module_names
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                problems.append(f"{path.name}:{node.lineno} dynamic __import__")
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN or top not in stdlib:
                    problems.append(f"{path.name}:{node.lineno} imports {name}")
    assert problems == []


def test_engine_has_no_floats_or_decimals() -> None:
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                problems.append(f"{path.name}:{node.lineno} float literal")
            if isinstance(node, ast.Name) and node.id in {"float", "Decimal"}:
                problems.append(f"{path.name}:{node.lineno} uses {node.id}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                problems.append(f"{path.name}:{node.lineno} true division")
    assert problems == []


def test_importing_the_engine_loads_nothing_outside_the_standard_library() -> None:
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import engine_worker.engine\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    stdlib = sys.stdlib_module_names
    outside = [
        m for m in loaded
        if m.split(".")[0] not in stdlib
        and m not in ("engine_worker",)
        and not m.startswith("engine_worker.engine")
    ]
    assert outside == []
    assert not [m for m in loaded if m.split(".")[0] in FORBIDDEN]
