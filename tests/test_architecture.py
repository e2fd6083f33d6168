"""The layers' dependency rule, checked by walking the imports of every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "quantrack"

# Libraries the inner layers must never reach. Services may compute with numpy/scipy
# (DESIGN.md forbids them storage, frame and engine libraries, not numerics: the
# overfitting statistics are a service on the ports), but only inside functions, which
# the import-time test below keeps honest.
FORBIDDEN_LIBRARIES = ("duckdb", "pandas", "numpy", "pyarrow", "backtrader", "vectorbt")
NUMERIC_LIBRARIES = ("numpy", "scipy")
FORBIDDEN_IN = {
    "domain": (*FORBIDDEN_LIBRARIES, "scipy"),
    "ports": (*FORBIDDEN_LIBRARIES, "scipy"),
    "services": tuple(lib for lib in FORBIDDEN_LIBRARIES if lib not in NUMERIC_LIBRARIES),
}
OUTER_PACKAGES = (
    "quantrack.adapters",
    "quantrack.engines",
    "quantrack.cli",
    "quantrack.workspace",
)
# What each inner layer may import of quantrack itself.
ALLOWED_INSIDE = {
    "domain": ("quantrack.domain",),
    "ports": ("quantrack.domain", "quantrack.ports"),
    "services": ("quantrack.domain", "quantrack.ports", "quantrack.services"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with its line."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = ".".join(("quantrack", *path.relative_to(PACKAGE).parent.parts))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            # `from quantrack import adapters` imports a package, not a name.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def _is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(layer: str) -> list[str]:
    """Imports in ``layer`` that break the dependency rule, as readable lines."""
    problems: list[str] = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if any(_is_within(module, lib) for lib in FORBIDDEN_IN[layer]):
                problems.append(f"{where} (a storage/engine library)")
            elif any(_is_within(module, outer) for outer in OUTER_PACKAGES):
                problems.append(f"{where} (an outer layer)")
            elif _is_within(module, "quantrack") and module != "quantrack":
                if not any(_is_within(module, ok) for ok in ALLOWED_INSIDE[layer]):
                    problems.append(f"{where} (outside what {layer} may use)")
            elif module == "quantrack":
                problems.append(f"{where} (the package root, which pulls in the workspace)")
    return problems


@pytest.mark.parametrize("layer", sorted(ALLOWED_INSIDE))
def test_inner_layers_import_inward_only(layer: str) -> None:
    """domain, ports and services import no adapter, engine, cli, workspace or heavy library."""
    assert violations(layer) == []


def test_import_walker_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    """The walker resolves relative imports, so a violation cannot hide behind dots."""
    sample = PACKAGE / "services" / "recording.py"
    modules = {module for _, module in imported_modules(sample)}
    assert "quantrack.ports" in modules
    assert "quantrack.domain" in modules


def test_import_quantrack_stays_light() -> None:
    """`import quantrack` loads none of duckdb, pandas, numpy, pyarrow, backtrader, vectorbt."""
    heavy = ", ".join(repr(name) for name in FORBIDDEN_LIBRARIES)
    code = (
        "import sys, quantrack\n"
        f"loaded = [m for m in ({heavy},) if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
