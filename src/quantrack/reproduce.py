"""Reproduce a recorded run and verify that it gives the same results.

:func:`reproduce` rebuilds a run recorded by an engine adapter from what was recorded:

* the **captured code** is written into a fresh temporary folder and the reproduction runs
  in a separate Python process with that folder first on ``sys.path``, so the code that
  produced the run is what runs again, whatever has happened to the original files since;
* the **recipe** the adapter stored (kind ``recipe``: the strategy or function by module
  and name, the data feeds, broker, commission, sizers, analyzers for backtrader; the
  call's arguments for vectorbt's ``adapter.run(fn, ...)``) and the recorded **params**;
* the **input data** stored as artifacts (``store_inputs=True`` on the adapters) and the
  **seed** (``random`` and ``numpy.random`` are seeded with it).

The reproduction is recorded as a new run whose definition says ``reproduces=<old id>``,
and the two are compared: metrics and the equity curve within a tolerance, input data
against the recorded fingerprints and hashes, package versions recorded against current
ones (informative) and the captured code against the working copy of the original files
(informative). The :class:`ReproductionReport` says "reproduced" or exactly what differs.

It sits beside the composition root (outside ``services``): it starts a process and loads
frames with pandas.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from quantrack.domain import (
    ArtifactRef,
    Experiment,
    ExperimentFilter,
    ExperimentStatus,
    QuantrackError,
    utcnow,
)
from quantrack.services.code_capture import MANIFEST_KIND, read_manifest

if TYPE_CHECKING:
    import pandas as pd

    from quantrack.workspace import Workspace

__all__ = [
    "CodeChange",
    "InputNotStored",
    "MetricDifference",
    "PackageDifference",
    "ReproductionFailed",
    "ReproductionReport",
    "reproduce",
]

RECIPE_KIND = "recipe"
_ENGINES = ("backtrader", "vectorbt")
_HINT_STORE = (
    "record the run with store_inputs=True on the adapter next time "
    "(BacktraderAdapter(workspace, store_inputs=True) or VectorbtAdapter(workspace, "
    "store_inputs=True)), which stores the input frames as Parquet artifacts, deduplicated "
    "by content"
)


class ReproductionFailed(QuantrackError):
    """The run cannot be rebuilt or executed again; the message says why and what to do."""


class InputNotStored(ReproductionFailed):
    """An input of the run was only fingerprinted, not stored, so it cannot be read back."""

    def __init__(self, experiment_id: str, input_name: str) -> None:
        super().__init__(
            f"run {experiment_id} cannot be reproduced: its input {input_name!r} was only "
            f"fingerprinted, not stored; {_HINT_STORE}"
        )
        self.input_name = input_name


@dataclass(frozen=True)
class MetricDifference:
    """A metric whose reproduced value differs from the recorded one (``None``: missing)."""

    name: str
    old: float | None
    new: float | None


@dataclass(frozen=True)
class PackageDifference:
    """A package whose version now differs from the one recorded (``None``: absent)."""

    name: str
    recorded: str | None
    current: str | None


@dataclass(frozen=True)
class CodeChange:
    """A captured file compared with the working copy at its original place.

    ``change`` is ``modified`` or ``missing`` (the working copy), or ``damaged`` (the
    captured copy no longer matches its hash: the reproduction ran the damaged copy).
    """

    path: str
    change: str


@dataclass(frozen=True)
class ReproductionReport:
    """What :func:`reproduce` found.

    ``reproduced`` is true when the reproduction completed and its metrics, equity curve
    and input data match the recorded run within ``tolerance``. Code and package
    differences are listed for information: they explain a mismatch but are not one.
    """

    experiment_id: str
    reproduction_id: str | None
    tolerance: float
    error: str | None = None
    metric_differences: tuple[MetricDifference, ...] = ()
    equity_difference: str | None = None
    data_differences: tuple[str, ...] = ()
    package_differences: tuple[PackageDifference, ...] = ()
    code_changes: tuple[CodeChange, ...] = ()
    metrics_compared: int = 0
    equity_points_compared: int = 0

    @property
    def reproduced(self) -> bool:
        """True when the results match within the tolerance."""
        return (
            self.error is None
            and not self.metric_differences
            and self.equity_difference is None
            and not self.data_differences
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        data = asdict(self)
        data["reproduced"] = self.reproduced
        return data

    def summary(self) -> str:
        """A few lines for people: "reproduced", or what differs."""
        head = (
            f"reproduced: run {self.reproduction_id} matches {self.experiment_id} "
            f"({self.metrics_compared} metrics, {self.equity_points_compared} equity points, "
            f"tolerance {self.tolerance:g})"
            if self.reproduced
            else f"NOT reproduced: run {self.reproduction_id} differs from {self.experiment_id}"
        )
        lines = [head]
        if self.error:
            lines.append(f"  error: {self.error}")
        for diff in self.metric_differences:
            lines.append(f"  metric {diff.name}: {_fmt(diff.old)} recorded, {_fmt(diff.new)} now")
        if self.equity_difference:
            lines.append(f"  equity curve: {self.equity_difference}")
        lines.extend(f"  data: {text}" for text in self.data_differences)
        for pkg in self.package_differences:
            lines.append(
                f"  package {pkg.name}: {pkg.recorded or 'absent'} recorded, "
                f"{pkg.current or 'absent'} now"
            )
        for change in self.code_changes:
            lines.append(f"  code {change.path}: {_CHANGE_TEXT[change.change]}")
        return "\n".join(lines)


_CHANGE_TEXT = {
    "modified": "the working copy differs from the captured file (the captured one was run)",
    "missing": "the working copy is gone (the captured file was run)",
    "damaged": "the captured copy no longer matches its hash (the damaged copy was run)",
}


def _fmt(value: float | None) -> str:
    return "missing" if value is None else repr(value)


def reproduce(
    workspace: Workspace,
    experiment_id: str,
    *,
    tolerance: float = 1e-9,
    timeout: float | None = None,
) -> ReproductionReport:
    """Rebuild run ``experiment_id`` from its record, run it again, record and compare it.

    Values match when ``|old - new| <= tolerance * max(1, |old|, |new|)``. ``timeout``
    bounds the reproduction's run in seconds (``None``: no limit).

    Raises :class:`~quantrack.ExperimentNotFound`, :class:`InputNotStored` when an input
    was only fingerprinted, and :class:`ReproductionFailed` when the run cannot be rebuilt
    (not completed, not recorded by an engine adapter, no recipe or captured code, a
    workspace with no folder) or the reproducing process dies. A reproduction whose
    strategy raises is recorded as failed and reported with ``error`` set.
    """
    if not isinstance(tolerance, int | float) or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    old = workspace.tracker.get_experiment(experiment_id)
    recipe = _check_reproducible(workspace, old)
    assert workspace.path is not None  # checked above
    folder = Path(tempfile.mkdtemp(prefix="quantrack-reproduce-"))
    try:
        code_root = folder / "captured_code"
        entry_module, code_changes = _restore_code(workspace, old, recipe, code_root)
        job = {
            "workspace": str(workspace.path.resolve()),
            "experiment_id": old.id,
            "sys_path": _import_roots(code_root, entry_module),
            "folder": str(folder),
        }
        job_file = folder / "job.json"
        job_file.write_text(json.dumps(job), "utf-8")
        outcome = _run_worker(job_file, folder, timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    new_id = outcome.get("new_id")
    if not new_id:
        raise ReproductionFailed(
            f"run {old.id} was rebuilt but could not be recorded: {outcome.get('error')}"
        )
    new = workspace.tracker.get_experiment(str(new_id))
    metric_diffs, compared = _compare_metrics(old.metrics, new.metrics, tolerance)
    equity_diff, points = (None, 0)
    if new.status is ExperimentStatus.COMPLETED:
        equity_diff, points = _compare_equity(workspace, old, new, tolerance)
    return ReproductionReport(
        experiment_id=old.id,
        reproduction_id=new.id,
        tolerance=float(tolerance),
        error=outcome.get("error") or new.error,
        metric_differences=metric_diffs,
        equity_difference=equity_diff,
        data_differences=tuple(outcome.get("data", ())),
        package_differences=_compare_packages(old, new),
        code_changes=code_changes,
        metrics_compared=compared,
        equity_points_compared=points,
    )


# -- what must hold before anything runs -------------------------------------------------


def _artifact(experiment: Experiment, kind: str) -> ArtifactRef | None:
    return next((ref for ref in experiment.artifacts if ref.kind == kind), None)


def _load_json(workspace: Workspace, ref: ArtifactRef) -> Any:
    try:
        return json.loads(workspace.artifacts.get(ref.id).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReproductionFailed(f"artifact {ref.id} is not a readable recipe: {exc}") from exc


def _check_reproducible(workspace: Workspace, old: Experiment) -> dict[str, Any]:
    engine = old.definition.engine
    if engine not in _ENGINES:
        raise ReproductionFailed(
            f"run {old.id} was recorded by engine {engine!r}; only runs recorded through the "
            "engine adapters (BacktraderAdapter, VectorbtAdapter) can be reproduced"
        )
    if old.status is not ExperimentStatus.COMPLETED:
        raise ReproductionFailed(
            f"run {old.id} is {old.status.value}; only completed runs have results to verify"
        )
    if workspace.path is None:
        raise ReproductionFailed(
            "reproduction runs in a separate process, which needs a workspace on disk; open "
            "one with open_workspace(path)"
        )
    ref = _artifact(old, RECIPE_KIND)
    if ref is None:
        if engine == "vectorbt":
            raise ReproductionFailed(
                f"run {old.id} was recorded from a finished Portfolio (adapter.record(pf)); "
                "quantrack cannot rebuild a portfolio built by your own code. Record it with "
                "adapter.run(build_portfolio, *args, **kwargs) to make it reproducible"
            )
        raise ReproductionFailed(
            f"run {old.id} has no recipe artifact (it was recorded by an older quantrack or "
            "the recipe could not be written); run it again to record one"
        )
    recipe = _load_json(workspace, ref)
    if not isinstance(recipe, dict) or recipe.get("engine") != engine:
        raise ReproductionFailed(f"artifact {ref.id} is not a {engine} recipe")
    if _artifact(old, MANIFEST_KIND) is None:
        raise ReproductionFailed(
            f"run {old.id} has no captured code; record it with capture_code=True (the "
            "default) from a strategy defined in a .py file"
        )
    if engine == "backtrader":
        _check_backtrader(old, recipe)
    else:
        _check_vectorbt(old, recipe)
    return recipe


def _check_backtrader(old: Experiment, recipe: dict[str, Any]) -> None:
    for position, feed in enumerate(recipe["feeds"]):
        name = feed.get("name") or f"data{position}"
        if feed.get("source") is None:
            raise ReproductionFailed(
                f"run {old.id} cannot be reproduced: data feed {name!r} "
                f"({feed['qualname']}) reads neither a DataFrame nor a file (a live, "
                "resampled or replayed feed), so quantrack could not store what it read"
            )
        if not feed.get("data"):
            raise InputNotStored(old.id, name)
    opaque = [
        f"{label} {entry['qualname']}: {', '.join(entry['opaque'])}"
        for label, entries in (
            ("feed", recipe["feeds"]),
            ("broker", [recipe["broker"]]),
            ("commission", recipe["commission"]),
            ("sizer", recipe["sizers"]),
            ("analyzer", recipe["analyzers"]),
            ("observer", recipe["observers"]),
            ("cerebro", [{"qualname": "Cerebro", **recipe["cerebro"]}]),
        )
        for entry in entries
        if entry.get("opaque")
    ]
    if opaque:
        raise ReproductionFailed(
            f"run {old.id} cannot be reproduced: these settings hold Python objects with no "
            f"recorded form: {'; '.join(opaque)}; pass plain values (numbers, strings, dates)"
        )


def _check_vectorbt(old: Experiment, recipe: dict[str, Any]) -> None:
    function = recipe["function"]
    qualname = str(function.get("qualname") or "")
    if not function.get("module") or "<" in qualname or function.get("module") == "__main__":
        raise ReproductionFailed(
            f"run {old.id} cannot be reproduced: its function {qualname or '?'} is not "
            "importable (a lambda, a nested function, or defined in a script run as "
            "__main__); define it at the top level of a module"
        )
    entries = [*recipe["args"], *recipe["kwargs"].values()]
    for entry in entries:
        if "opaque" in entry:
            raise ReproductionFailed(
                f"run {old.id} cannot be reproduced: an argument of type {entry['opaque']} "
                "has no recorded form; pass frames, Series and plain values to adapter.run"
            )
        if "input" in entry and not entry.get("stored"):
            raise InputNotStored(old.id, str(entry["input"]))
    equity = _artifact(old, "equity_curve")
    if old.definition.batch_id is None and equity is not None and equity.part is None:
        # The experiment of an adapter.run() call that built a sweep holds the shared
        # files (no part of them) and no metrics: its items are the runs to verify.
        raise ReproductionFailed(
            f"run {old.id} is the call that recorded a sweep, which has no results of its "
            "own; reproduce one of the sweep's runs (quantrack runs list --batch BATCH_ID)"
        )


# -- the code ------------------------------------------------------------------------------


def _entry_module(recipe: dict[str, Any]) -> tuple[str, str | None]:
    if recipe["engine"] == "backtrader":
        first = recipe["strategies"][0]
        return str(first["module"]), first.get("file")
    function = recipe["function"]
    return str(function["module"]), function.get("file")


def _restore_code(
    workspace: Workspace, old: Experiment, recipe: dict[str, Any], root: Path
) -> tuple[str, tuple[CodeChange, ...]]:
    """Write the captured files under ``root``; compare them with the working copies."""
    manifest = _artifact(old, MANIFEST_KIND)
    assert manifest is not None  # checked by _check_reproducible
    files = read_manifest(workspace.artifacts, manifest)
    module, origin = _entry_module(recipe)
    if module == "__main__":
        raise ReproductionFailed(
            f"run {old.id} cannot be reproduced: its strategy is defined in a script run as "
            "__main__, which cannot be imported again; move it into a module"
        )
    entry = _entry_path(files, module)
    working_root = _working_root(origin, entry)
    changes: list[CodeChange] = []
    for relative, artifact_id in sorted(files.items()):
        data = workspace.artifacts.get(artifact_id)
        if hashlib.sha256(data).hexdigest() != artifact_id:
            changes.append(CodeChange(relative, "damaged"))
        target = root.joinpath(*PurePosixPath(relative).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if working_root is not None:
            current = working_root.joinpath(*PurePosixPath(relative).parts)
            if not current.is_file():
                changes.append(CodeChange(relative, "missing"))
            elif hashlib.sha256(current.read_bytes()).hexdigest() != artifact_id:
                changes.append(CodeChange(relative, "modified"))
    return module, tuple(changes)


def _module_tails(module: str) -> tuple[str, str]:
    base = module.replace(".", "/")
    return f"{base}.py", f"{base}/__init__.py"


def _entry_path(files: dict[str, str], module: str) -> str | None:
    for relative in sorted(files):
        for tail in _module_tails(module):
            if relative == tail or relative.endswith("/" + tail):
                return relative
    return None


def _working_root(origin: str | None, entry: str | None) -> Path | None:
    """The folder the captured paths were relative to, from the entry file's location."""
    if not origin or not entry:
        return None
    path = Path(origin)
    depth = len(PurePosixPath(entry).parts)
    if path.parts[-depth:] != PurePosixPath(entry).parts:
        return None
    return path.parents[depth - 1]


def _import_roots(root: Path, module: str) -> list[str]:
    """The folders to put first on ``sys.path`` so ``module`` imports from ``root``."""
    roots: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for tail in _module_tails(module):
            if relative == tail or relative.endswith("/" + tail):
                base = relative[: -len(tail)].rstrip("/")
                roots.append(str(root / base) if base else str(root))
    if (root / "_outside").is_dir():
        roots.append(str(root / "_outside"))
    if not roots:
        raise ReproductionFailed(
            f"the captured code holds no file for module {module!r}; the strategy was not "
            "captured (was capture_code off, or is it defined outside a .py file?)"
        )
    return list(dict.fromkeys(roots))


# -- the process that reproduces -------------------------------------------------------------


def _run_worker(job_file: Path, folder: Path, timeout: float | None) -> dict[str, Any]:
    # -P: the working folder is not put on sys.path; only the captured code is added.
    command = [
        sys.executable,
        "-P",
        "-c",
        "from quantrack.reproduce import _main; _main()",
        str(job_file),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ReproductionFailed(
            f"the reproduction did not finish within {timeout} s; pass a larger timeout"
        ) from exc
    result = folder / "result.json"
    if not result.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ReproductionFailed(
            f"the reproducing process ended (exit code {done.returncode}) without a result:\n{tail}"
        )
    outcome: dict[str, Any] = json.loads(result.read_text("utf-8"))
    if outcome.get("fatal"):
        raise ReproductionFailed(str(outcome["fatal"]))
    return outcome


def _main() -> None:
    """Entry of the reproducing process: ``python -c ... job.json``; writes result.json."""
    job = json.loads(Path(sys.argv[1]).read_text("utf-8"))
    folder = Path(job["folder"])
    # The captured code first, so it wins over any other copy the environment can see.
    sys.path[:0] = job["sys_path"]
    outcome: dict[str, Any] = {"experiment_id": job["experiment_id"]}
    try:
        outcome.update(_reproduce_here(job, folder))
    except ReproductionFailed as exc:
        outcome["fatal"] = str(exc)
    except Exception as exc:
        outcome["fatal"] = (
            f"rebuilding run {job['experiment_id']} failed: {type(exc).__name__}: {exc}"
        )
    (folder / "result.json").write_text(json.dumps(outcome), "utf-8")


def _reproduce_here(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    from quantrack.workspace import open_workspace

    workspace = open_workspace(job["workspace"])
    old = workspace.tracker.get_experiment(job["experiment_id"])
    recipe_ref = _artifact(old, RECIPE_KIND)
    assert recipe_ref is not None
    recipe = _load_json(workspace, recipe_ref)
    if old.definition.seed is not None:
        _seed(old.definition.seed)
    data: list[str] = []
    started = utcnow()
    error: str | None = None
    try:
        if old.definition.engine == "backtrader":
            _backtrader(workspace, old, recipe, folder, data)
        else:
            new_id = _vectorbt(workspace, old, recipe, data)
            return {"new_id": new_id, "data": data}
    except ReproductionFailed:
        raise
    except Exception as exc:
        # The adapter recorded the failure; find that run below and report the error.
        error = f"{type(exc).__name__}: {exc}"
    found = workspace.tracker.list_experiments(
        ExperimentFilter(name=old.definition.name, created_after=started)
    )
    mine = [e for e in found if e.definition.reproduces == old.id]
    if not mine:
        raise ReproductionFailed(error or "the reproduction ran but its record was not found")
    return {"new_id": mine[0].id, "data": data, "error": error}


def _seed(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with both engines
        return
    np.random.seed(seed % 2**32)


def _resolve(module: str, qualname: str) -> Any:
    import importlib

    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _decode(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dict):
        if "__datetime__" in value:
            return dt.datetime.fromisoformat(value["__datetime__"])
        if "__date__" in value:
            return dt.date.fromisoformat(value["__date__"])
        if "__time__" in value:
            return dt.time.fromisoformat(value["__time__"])
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__list__" in value:
            return [_decode(v) for v in value["__list__"]]
    return value


def _decoded(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: _decode(value) for key, value in entry.get("params", {}).items()}


def _read_input(workspace: Workspace, artifact_id: str, label: str, data: list[str]) -> bytes:
    """The stored bytes of an input; a hash mismatch is recorded as a data difference."""
    raw = workspace.artifacts.get(artifact_id)
    if hashlib.sha256(raw).hexdigest() != artifact_id:
        data.append(
            f"input {label!r}: the stored data no longer matches its hash {artifact_id[:16]}… "
            "(changed or damaged since the run; the changed data was used)"
        )
    return raw


def _backtrader(
    workspace: Workspace,
    old: Experiment,
    recipe: dict[str, Any],
    folder: Path,
    data: list[str],
) -> None:
    import backtrader as bt

    from quantrack.engines.backtrader import BacktraderAdapter

    cerebro_params = _decoded(recipe["cerebro"])
    cerebro_params.pop("maxcpus", None)  # one combination: no worker processes
    cerebro = bt.Cerebro(**cerebro_params)
    broker = recipe["broker"]
    cerebro.broker = _resolve(broker["module"], broker["qualname"])(**_decoded(broker))
    for scheme in recipe["commission"]:
        info = _resolve(scheme["module"], scheme["qualname"])(**_decoded(scheme))
        cerebro.broker.addcommissioninfo(info, name=scheme["key"])
    _add_feeds(workspace, cerebro, recipe["feeds"], folder / "inputs", data)
    strategy_keys = _add_strategies(old, cerebro, recipe["strategies"])
    for sizer in recipe["sizers"]:
        cls = _resolve(sizer["module"], sizer["qualname"])
        args = [_decode(a) for a in sizer["args"]]
        if sizer["key"] is None:
            cerebro.addsizer(cls, *args, **_decoded(sizer))
        else:
            cerebro.addsizer_byidx(sizer["key"], cls, *args, **_decoded(sizer))
    for analyzer in recipe["analyzers"]:
        cls = _resolve(analyzer["module"], analyzer["qualname"])
        extra = {"_name": analyzer["_name"]} if analyzer.get("_name") else {}
        cerebro.addanalyzer(
            cls, *[_decode(a) for a in analyzer["args"]], **extra, **_decoded(analyzer)
        )
    for observer in recipe["observers"]:
        cls = _resolve(observer["module"], observer["qualname"])
        add = cerebro.addobservermulti if observer.get("multi") else cerebro.addobserver
        add(cls, *[_decode(a) for a in observer["args"]], **_decoded(observer))
    caller = {k: v for k, v in old.params.items() if k != "backtrader" and k not in strategy_keys}
    BacktraderAdapter(workspace, store_inputs=True).run(
        cerebro,
        name=old.definition.name,
        params=caller,
        tags=old.definition.tags,
        description=f"reproduction of {old.id}",
        seed=old.definition.seed,
        reproduces=old.id,
    )


def _add_feeds(
    workspace: Workspace, cerebro: Any, feeds: list[dict[str, Any]], folder: Path, data: list[str]
) -> None:
    """Rebuild every data feed from its stored input; note fingerprints that differ."""
    from quantrack.adapters.frames import frame_from_parquet
    from quantrack.engines.backtrader import _fingerprint_bytes, _source_of

    folder.mkdir(exist_ok=True)
    for position, feed in enumerate(feeds):
        label = feed.get("name") or f"data{position}"
        raw = _read_input(workspace, feed["data"], label, data)
        source: Any
        if feed["source"] == "file":
            path = folder / f"{position}-{feed['file_name']}"
            path.write_bytes(raw)
            source = str(path)
        else:
            source = frame_from_parquet(raw)
        built = _resolve(feed["module"], feed["qualname"])(dataname=source, **_decoded(feed))
        fingerprint = _fingerprint_bytes(_source_of(built))
        if fingerprint is not None:
            now = hashlib.sha256(fingerprint).hexdigest()
            if now != feed["fingerprint"]:
                data.append(
                    f"feed {label!r}: the data read back has fingerprint {now[:16]}…, the run "
                    f"recorded {str(feed['fingerprint'])[:16]}…"
                )
        cerebro.adddata(built, name=feed["name"] or None)


def _add_strategies(old: Experiment, cerebro: Any, entries: list[dict[str, Any]]) -> set[str]:
    """Add the strategies with the run's recorded params; return the params' names."""
    from quantrack.engines.backtrader import _plain

    section: Any = old.params.get("backtrader") or {}
    recorded: list[dict[str, Any]] = list(section.get("strategies") or [])
    keys: set[str] = set()
    for position, entry in enumerate(entries):
        cls = _resolve(entry["module"], entry["qualname"])
        own = recorded[position] if position < len(recorded) else {}
        params: dict[str, Any] = dict(own.get("params") or {})
        keys.update(params)
        defaults = dict(cls.params._getitems())
        # Only what differs from the class's defaults is passed, so objects left at their
        # default (an indicator class, say) stay the objects the code itself names.
        kwargs = {k: v for k, v in params.items() if k not in defaults or _plain(defaults[k]) != v}
        opaque = sorted(set(kwargs) & set(entry.get("opaque", ())))
        if opaque or entry.get("args_opaque"):
            raise ReproductionFailed(
                f"run {old.id} cannot be reproduced: strategy {entry['qualname']} was given "
                f"Python objects with no recorded form ({', '.join(opaque) or 'positional args'})"
            )
        cerebro.addstrategy(cls, *list(own.get("args") or []), **kwargs)
    return keys


def _vectorbt(
    workspace: Workspace, old: Experiment, recipe: dict[str, Any], data: list[str]
) -> str:
    from quantrack.adapters.frames import frame_from_parquet, frame_to_parquet
    from quantrack.engines._vbt_metrics import column_axis
    from quantrack.engines.vectorbt import VectorbtAdapter

    function = recipe["function"]
    fn = _resolve(function["module"], function["qualname"])

    def value_of(entry: dict[str, Any]) -> Any:
        if "value" in entry:
            return tuple(entry["value"]) if entry.get("tuple") else entry["value"]
        raw = _read_input(workspace, entry["artifact"], entry["input"], data)
        frame = frame_from_parquet(raw)
        if hashlib.sha256(frame_to_parquet(frame)).hexdigest() != entry["artifact"]:
            data.append(f"input {entry['input']!r}: the stored frame does not read back as itself")
        restored: pd.DataFrame | pd.Series[Any] = frame
        if entry.get("series"):
            restored = frame.iloc[:, 0].rename(entry.get("series_name"))
        if entry.get("freq"):
            try:
                restored.index.freq = entry["freq"]  # type: ignore[attr-defined]
            except (ValueError, AttributeError, TypeError):
                data.append(f"input {entry['input']!r}: its index frequency could not be restored")
        return restored

    args = [value_of(entry) for entry in recipe["args"]]
    kwargs = {key: value_of(entry) for key, entry in recipe["kwargs"].items()}
    adapter = VectorbtAdapter(workspace, store_inputs=True)
    arg_ids = {
        entry["artifact"]
        for entry in [*recipe["args"], *recipe["kwargs"].values()]
        if "input" in entry
    }
    extra_inputs = [ref for ref in old.definition.inputs if ref.id not in arg_ids]
    if old.definition.batch_id is None:
        adapter.run(
            fn,
            *args,
            name=old.definition.name,
            params=old.params,
            inputs=extra_inputs or None,
            tags=old.definition.tags,
            reproduces=old.id,
            **kwargs,
        )
        assert adapter.last_result is not None
        if adapter.last_result.run_id is None:
            raise ReproductionFailed("the reproduction could not be recorded")
        return adapter.last_result.run_id
    pf = fn(*args, **kwargs)
    axis = column_axis(pf, single_params_from_index=False)
    index = old.definition.batch_index or 0
    equity = _artifact(old, "equity_curve")
    if index >= len(axis) or (
        equity is not None and equity.part is not None and axis.labels[index] != equity.part
    ):
        raise ReproductionFailed(
            f"the rebuilt sweep has no column {equity.part if equity else index!r} at position "
            f"{index}; the function now builds columns {', '.join(axis.labels[:5])}"
        )
    column = pf.wrapper.get_columns()[index]
    selected = pf[column]
    params = {k: v for k, v in old.params.items() if k not in axis.level_names}
    result = adapter.record(
        selected,
        name=old.definition.name,
        params=params,
        inputs=list(old.definition.inputs) or None,
        tags=old.definition.tags,
        strategy=old.definition.strategy,
        description=f"reproduction of {old.id}",
        reproduces=old.id,
        code_from=fn,
    )
    return result.experiment_id


# -- comparing -------------------------------------------------------------------------------


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _compare_metrics(
    old: dict[str, float], new: dict[str, float], tolerance: float
) -> tuple[tuple[MetricDifference, ...], int]:
    diffs = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None or not _close(a, b, tolerance):
            diffs.append(MetricDifference(name, a, b))
    return tuple(diffs), len(set(old) | set(new))


def _equity_series(workspace: Workspace, experiment: Experiment) -> pd.Series[Any] | None:
    ref = _artifact(experiment, "equity_curve")
    if ref is None:
        return None
    if experiment.definition.engine == "backtrader":
        from quantrack.adapters.frames import get_frame

        frame = get_frame(workspace.artifacts, ref)
        series: pd.Series[Any] = frame.set_index("time")["value"]
        return series
    from quantrack.engines.vectorbt import VectorbtAdapter

    adapter = VectorbtAdapter(tracker=workspace.tracker, artifacts=workspace.artifacts)
    return adapter.load_equity(ref)


def _compare_equity(
    workspace: Workspace, old: Experiment, new: Experiment, tolerance: float
) -> tuple[str | None, int]:
    before = _equity_series(workspace, old)
    after = _equity_series(workspace, new)
    if before is None:
        return None, 0
    if after is None:
        return "the reproduction recorded no equity curve", 0
    if len(before) != len(after):
        return f"{len(before)} points recorded, {len(after)} now", 0
    if not before.index.equals(after.index):
        for position, (a, b) in enumerate(zip(before.index, after.index, strict=True)):
            if a != b:
                return f"the time axis differs first at point {position}: {a} recorded, {b} now", 0
    for position, (stamp, a, b) in enumerate(
        zip(before.index, before.to_numpy(), after.to_numpy(), strict=True)
    ):
        if not _close(float(a), float(b), tolerance):
            worst = float(abs(before.to_numpy() - after.to_numpy()).max())
            return (
                f"first differs at {stamp} (point {position}): {float(a)!r} recorded, "
                f"{float(b)!r} now; largest difference {worst:g}"
            ), len(before)
    return None, len(before)


def _compare_packages(old: Experiment, new: Experiment) -> tuple[PackageDifference, ...]:
    before = dict(old.definition.provenance.packages)
    after = dict(new.definition.provenance.packages)
    for experiment, versions in ((old, before), (new, after)):
        python = experiment.definition.provenance.python_version
        if python:
            versions.setdefault("python", python)
    return tuple(
        PackageDifference(name, before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    )
