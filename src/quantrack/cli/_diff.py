"""``runs diff``: everything that differs between two runs, as data and as text.

Differences are gathered into a plain dict (what ``--json`` prints) in sections: the
definition's fields, params, metrics (with the change), input data fingerprints, package
and interpreter versions, and the captured strategy code as unified diffs.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from quantrack.cli._output import console, fmt_value, new_table, print_table
from quantrack.domain import Experiment, QuantrackError
from quantrack.workspace import Workspace

__all__ = ["code_files", "diff_experiments", "diff_mappings", "print_diff"]


def diff_mappings(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Keys whose values differ: ``{"name", "a", "b"}``, a missing side is ``None``."""
    rows = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key) or (key in a) != (key in b):
            rows.append({"name": key, "a": a.get(key), "b": b.get(key)})
    return rows


def _text(ws: Workspace, artifact_id: str) -> str | None:
    try:
        data = ws.artifacts.get(artifact_id)
    except (KeyError, QuantrackError):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def code_files(ws: Workspace, experiment: Experiment) -> dict[str, str]:
    """The strategy code captured with a run, ``{relative path: text}``.

    Read from the run's code manifest (see :mod:`quantrack.services.code_capture`) when it
    has one, else from its ``code`` artifacts by display name.
    """
    from quantrack.services.code_capture import CODE_KIND, MANIFEST_KIND, read_manifest

    files: dict[str, str] = {}
    manifests = [r for r in experiment.artifacts if r.kind == MANIFEST_KIND]
    for ref in manifests:
        try:
            listed = read_manifest(ws.artifacts, ref)
        except (ValueError, QuantrackError):
            continue
        for path, artifact_id in listed.items():
            text = _text(ws, artifact_id)
            files[path] = text if text is not None else "<content missing or not text>\n"
    if manifests:
        return files
    for ref in experiment.artifacts:
        if ref.kind == CODE_KIND:
            text = _text(ws, ref.id)
            if text is not None:
                files[ref.name or f"code-{ref.id[:8]}"] = text
    return files


def _code_diff(ws: Workspace, a: Experiment, b: Experiment) -> list[dict[str, Any]]:
    left, right = code_files(ws, a), code_files(ws, b)
    diffs = []
    for path in sorted(set(left) | set(right)):
        old, new = left.get(path, ""), right.get(path, "")
        if old == new:
            continue
        lines = difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{path}" if path in left else "/dev/null",
            tofile=f"b/{path}" if path in right else "/dev/null",
        )
        diffs.append({"path": path, "diff": "".join(lines)})
    return diffs


def _inputs(experiment: Experiment) -> dict[str, str]:
    return {
        (ref.name or f"input-{i}") + (f"[{ref.part}]" if ref.part else ""): ref.id
        for i, ref in enumerate(experiment.definition.inputs)
    }


def _versions(experiment: Experiment) -> dict[str, Any]:
    p = experiment.definition.provenance
    versions: dict[str, Any] = dict(p.packages)
    versions["python"] = p.python_version
    if p.engine:
        versions[p.engine] = p.engine_version or versions.get(p.engine)
    return {k: v for k, v in versions.items() if v is not None}


def diff_experiments(ws: Workspace, a: Experiment, b: Experiment) -> dict[str, Any]:
    """Every difference between runs ``a`` and ``b``, section by section."""
    da, db = a.definition, b.definition
    fields = {
        "name": (da.name, db.name),
        "status": (a.status.value, b.status.value),
        "strategy": (da.strategy, db.strategy),
        "engine": (da.engine, db.engine),
        "seed": (da.seed, db.seed),
        "tags": (list(da.tags), list(db.tags)),
        "config_hash": (da.config_hash, db.config_hash),
        "git_commit": (da.provenance.git_commit, db.provenance.git_commit),
        "git_dirty": (da.provenance.git_dirty, db.provenance.git_dirty),
        "code_hash": (da.provenance.code_hash, db.provenance.code_hash),
    }
    metrics = diff_mappings(a.metrics, b.metrics)
    for row in metrics:
        if isinstance(row["a"], float) and isinstance(row["b"], float):
            row["change"] = row["b"] - row["a"]
    return {
        "a": a.id,
        "b": b.id,
        "definition": [{"name": k, "a": va, "b": vb} for k, (va, vb) in fields.items() if va != vb],
        "params": diff_mappings(a.params, b.params),
        "metrics": metrics,
        "inputs": diff_mappings(_inputs(a), _inputs(b)),
        "versions": diff_mappings(_versions(a), _versions(b)),
        "code": _code_diff(ws, a, b),
    }


def print_diff(report: Mapping[str, Any]) -> None:
    """Print a :func:`diff_experiments` report for people."""
    out = console()
    out.print(f"a = {report['a']}\nb = {report['b']}")
    sections = ("definition", "params", "metrics", "inputs", "versions")
    if not any(report[s] for s in (*sections, "code")):
        out.print("no differences")
        return
    for section in sections:
        rows = report[section]
        if not rows:
            continue
        table = new_table("", "A", "B", title=section, wrap=("A", "B"))
        for row in rows:
            table.add_row(row["name"], fmt_value(row["a"]), fmt_value(row["b"]))
        print_table(table)
    for item in report["code"]:
        out.print(Text(f"code: {item['path']}", style="bold"))
        for line in item["diff"].splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            out.print(Text(line, style=style), overflow="fold")
