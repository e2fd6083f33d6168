"""Every command as a real ``python -m quantrack`` process on a real DuckDB workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("quantrack.adapters.duckdb")

from quantrack import open_workspace
from quantrack.cli._errors import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_ERROR, EXIT_NOT_FOUND
from quantrack.domain import Batch, BatchStatus, Experiment
from quantrack.workspace import DATABASE_FILE
from tests.cli import batch_jobs
from tests.cli.helpers import Recorded, populate

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Real:
    """A populated workspace on disk and what it holds."""

    path: Path
    recorded: Recorded
    retry_batch: str


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Real:
    """A DuckDB workspace holding the runs of `populate` and a run_batch batch."""
    path = tmp_path_factory.mktemp("cli") / "ws"
    ws = open_workspace(path)
    recorded = populate(ws)
    with ThreadPoolExecutor(2) as pool:
        batch = ws.run_batch(
            batch_jobs.score,
            [{"x": x} for x in range(5)],
            name="squares",
            executor=pool,
            progress=False,
        )
    return Real(path, recorded, batch.id)


def qt(
    *args: str,
    workspace: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m quantrack ARGS`` in a new process."""
    environment = {k: v for k, v in os.environ.items() if k != "QUANTRACK_HOME"}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    command = [sys.executable, "-m", "quantrack", *args]
    if workspace is not None:
        command += ["--workspace", str(workspace)]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or REPO,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(_ok(result))


def _experiments(result: subprocess.CompletedProcess[str]) -> list[Experiment]:
    return [Experiment.model_validate(item) for item in _json(result)]


@pytest.mark.slow
def test_runs_commands_on_a_real_workspace(real: Real) -> None:
    """list, show, compare, diff, best, find-hash, similar and inputs work end to end."""
    rec, ws = real.recorded, real.path
    listed = [
        Experiment.model_validate(e)
        for e in _json(qt("runs", "list", "--json", "--limit", "100", workspace=ws))
    ]
    assert len(listed) == 21
    where = _experiments(
        qt(
            "runs",
            "list",
            "--json",
            "--where",
            "sharpe > 0.5 and fast < 30",
            "--sort",
            "-sharpe",
            workspace=ws,
        )
    )
    assert [e.name for e in where] == ["sma-fast", "sma-mid"]
    table = _ok(qt("runs", "list", workspace=ws))
    assert all(len(line) <= 80 for line in table.splitlines())
    show = _json(qt("runs", "show", rec.runs["sma-fast"][:24], "--json", workspace=ws))
    assert show["id"] == rec.runs["sma-fast"]
    diff = _json(
        qt("runs", "diff", rec.runs["sma-mid"], rec.runs["sma-slow"], "--json", workspace=ws)
    )
    assert diff["code"][0]["path"] == "strategy.py"
    compare = _json(
        qt("runs", "compare", rec.runs["sma-fast"], rec.runs["sma-mid"], "--json", workspace=ws)
    )
    assert compare["differs"]["params"] == ["fast"]
    best = _experiments(qt("runs", "best", "--metric", "sharpe", "-n", "2", "--json", workspace=ws))
    assert [e.metrics["sharpe"] for e in best] == [1.5, 1.3]
    config = show["definition"]["config_hash"]
    found = _experiments(qt("runs", "find-hash", config, "--json", workspace=ws))
    assert [e.id for e in found] == [rec.runs["sma-fast"]]
    similar = _json(qt("runs", "similar", rec.runs["sma-fast"], "--json", workspace=ws))
    assert [e["id"] for e in similar] == [rec.runs["sma-mid"]]
    inputs = _experiments(qt("runs", "inputs", rec.input_id, "--json", workspace=ws))
    assert {e.name for e in inputs} == {"sma-fast", "sma-mid"}


@pytest.mark.slow
def test_export_and_delete(real: Real, tmp_path: Path) -> None:
    """`runs export` writes a folder; `runs delete --yes` removes the run; a bare delete
    without an answer on stdin does not.
    """
    target = real.recorded.runs["sma-broken"]
    exported = _json(
        qt("runs", "export", target, str(tmp_path / "out"), "--json", workspace=real.path)
    )
    assert Path(exported["path"]).is_dir()
    again = qt("runs", "export", target, str(tmp_path / "out"), workspace=real.path)
    assert again.returncode == EXIT_BAD_INPUT
    assert "--overwrite" in again.stderr
    refused = qt("runs", "delete", target, workspace=real.path, stdin="")
    assert refused.returncode != 0
    assert _json(qt("runs", "show", target, "--json", workspace=real.path))["id"] == target
    deleted = _json(qt("runs", "delete", target, "--yes", "--json", workspace=real.path))
    assert deleted == {"deleted": target}
    gone = qt("runs", "show", target, workspace=real.path)
    assert gone.returncode == EXIT_NOT_FOUND


@pytest.mark.slow
def test_batches_commands(real: Real) -> None:
    """list, show, failed, stats, and retry from the function the batch recorded."""
    ws = real.path
    listed = [Batch.model_validate(b) for b in _json(qt("batches", "list", "--json", workspace=ws))]
    assert {b.name for b in listed} == {"ma-grid", "squares"}
    shown = _json(qt("batches", "show", real.retry_batch, "--json", workspace=ws))
    assert shown["status"] == "partial"
    failed = _json(qt("batches", "failed", real.retry_batch, "--json", workspace=ws))
    assert [item["index"] for item in failed] == [3]
    stats = _json(qt("batches", "stats", "--since", "2000-01-01", "--json", workspace=ws))
    assert stats["batches"] == 2
    still = qt("batches", "retry", real.retry_batch, "--json", workspace=ws)
    assert still.returncode == EXIT_ERROR
    assert Batch.model_validate(json.loads(still.stdout)).status is BatchStatus.FAILED
    fixed = _json(
        qt(
            "batches",
            "retry",
            real.retry_batch,
            "--json",
            workspace=ws,
            env={"QT_CLI_TEST_FIXED": "1"},
        )
    )
    assert fixed["status"] == "completed"
    assert fixed["params"]["retry_of_batch"] == real.retry_batch
    ended = qt("batches", "resume", real.retry_batch, workspace=ws)
    assert ended.returncode == EXIT_ERROR
    assert "has already ended" in ended.stderr


@pytest.mark.slow
def test_artifacts_and_sql(real: Real) -> None:
    """`artifacts verify --all`, `artifacts gc` (a dry run) and `sql` over the views."""
    ws = real.path
    verify = _json(qt("artifacts", "verify", "--all", "--json", workspace=ws))
    assert verify["problems"] == []
    orphan = open_workspace(ws).artifacts.put(b"no run refers to this", kind="file")
    fresh = _json(qt("artifacts", "gc", "--json", workspace=ws))
    assert fresh["dry_run"] is True
    assert orphan.id not in fresh["removed"]  # written within the grace period
    dry = _json(qt("artifacts", "gc", "--grace", "0", "--json", workspace=ws))
    assert orphan.id in dry["removed"]
    assert open_workspace(ws).artifacts.exists(orphan.id)
    applied = _json(qt("artifacts", "gc", "--grace", "0", "--apply", "--json", workspace=ws))
    assert orphan.id in applied["removed"]
    assert not open_workspace(ws).artifacts.exists(orphan.id)
    after = _json(qt("artifacts", "verify", "--all", "--json", workspace=ws))
    assert after["problems"] == []
    rows = _json(
        qt(
            "sql",
            "select name, count(*) as n from metrics group by name order by name",
            "--json",
            workspace=ws,
        )
    )
    assert {"name": "sharpe", "n": 14} in rows
    views = ("experiments", "metrics", "params", "batches", "batch_items")
    counts = ", ".join(f"(select count(*) from {view}) as {view}" for view in views)
    [row] = _json(qt("sql", f"select {counts}", "--json", workspace=ws))
    assert set(row) == set(views)
    assert row["batches"] >= 2  # ma-grid and squares (and retries of squares)
    table = _ok(qt("sql", f"select {counts}", workspace=ws))
    assert table.splitlines()[0].split() == list(views)
    bad = qt("sql", "delete from experiments", workspace=ws)
    assert bad.returncode == EXIT_BAD_INPUT
    assert bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr


def test_report_command_writes_html(real: Real, tmp_path: Path) -> None:
    """`report` on runs and a batch writes one self-contained HTML page."""
    rec = real.recorded
    out = tmp_path / "r.html"
    data = _json(
        qt(
            "report",
            rec.runs["sma-fast"],
            rec.batch_id,
            "-o",
            str(out),
            "--json",
            workspace=real.path,
        )
    )
    assert data["heatmap"] == {"metric": "sharpe", "x": "fast_window", "y": "slow_window"}
    page = out.read_text()
    assert "<script src=" not in page
    assert "Plotly.newPlot" in page


def test_bad_input_one_line_and_exit_codes(real: Real, tmp_path: Path) -> None:
    """Unknown ids, a malformed --where and a missing workspace: one line, right exit code."""
    unknown = qt("runs", "show", "ffffffffffff", workspace=real.path)
    assert unknown.returncode == EXIT_NOT_FOUND
    assert unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith("error: ")
    where = qt("runs", "list", "--where", "sharpe >", workspace=real.path)
    assert where.returncode == EXIT_BAD_INPUT
    assert where.stderr.splitlines()[0] == (
        "error: --where: bad where expression at column 9: the expression ends too early"
    )
    missing = qt("runs", "list", workspace=tmp_path / "nowhere")
    assert missing.returncode == EXIT_NOT_FOUND
    assert "no quantrack workspace at" in missing.stderr
    assert not (tmp_path / "nowhere").exists()
    usage = qt("runs", "list", "--limit", "0", workspace=real.path)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_default_workspace_comes_from_quantrack_home(real: Real, tmp_path: Path) -> None:
    """Without --workspace the CLI uses $QUANTRACK_HOME."""
    result = qt(
        "runs",
        "list",
        "--json",
        "--limit",
        "1",
        env={"QUANTRACK_HOME": str(real.path)},
        cwd=tmp_path,
    )
    assert len(_json(result)) == 1


@pytest.fixture
def held(real: Real) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the workspace's database file open."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(real.path / DATABASE_FILE)!r})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    yield holder
    holder.kill()
    holder.wait()


def test_busy_workspace_is_reported(real: Real, held: subprocess.Popen[str]) -> None:
    """A workspace another process holds past --timeout is exit 4 naming the file."""
    result = qt("--timeout", "0.5", "runs", "list", workspace=real.path)
    assert result.returncode == EXIT_BUSY, result.stderr
    assert result.stderr.startswith("error: workspace database ")
    assert "stayed busy" in result.stderr
    assert str(held.pid) in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_logs_info_to_stderr(tmp_path: Path) -> None:
    """Lifecycle events reach stderr with -v only; stdout stays pure JSON either way."""
    workspace = tmp_path / "ws"
    created = qt(
        "ops",
        workspace=workspace,
        stdin=json.dumps({"op": "create_experiment", "definition": {"name": "v"}}) + "\n",
    )
    run_id = json.loads(created.stdout)["result"]["id"]

    def move(status: str, *flags: str) -> subprocess.CompletedProcess[str]:
        line = {"op": "update_status", "experiment_id": run_id, "status": status}
        return qt(*flags, "ops", workspace=workspace, stdin=json.dumps(line) + "\n")

    loud = move("running", "-v")
    assert "experiment.status_changed" in loud.stderr
    assert json.loads(loud.stdout)["ok"] is True
    quiet = move("cancelled")
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["result"]["status"] == "cancelled"


@pytest.mark.slow
def test_demo_records_both_engines_and_writes_a_report(tmp_path: Path) -> None:
    """`demo` records a backtrader run and a vectorbt sweep of at least 100 runs, ranks
    the sweep and writes the report.
    """
    pytest.importorskip("backtrader")
    pytest.importorskip("vectorbt")
    workspace = tmp_path / "ws"
    data = _json(qt("demo", "--json", workspace=workspace, cwd=tmp_path))
    bt_run = Experiment.model_validate(data["backtrader_run"])
    assert bt_run.definition.engine == "backtrader"
    assert bt_run.status.value == "completed"
    assert "final_value" in bt_run.metrics
    batch = Batch.model_validate(data["batch"])
    assert batch.total >= 100
    assert batch.status is BatchStatus.COMPLETED
    best = [Experiment.model_validate(e) for e in data["best"]]
    sharpes = [e.metrics["sharpe"] for e in best]
    assert sharpes == sorted(sharpes, reverse=True)
    assert {e.definition.batch_id for e in best} == {batch.id}
    assert Path(data["report"]) == tmp_path / "quantrack-demo.html"
    assert "Heat map of sharpe" in Path(data["report"]).read_text()
    listed = _experiments(qt("runs", "list", "--json", "--limit", "500", workspace=workspace))
    assert len(listed) == batch.total + 1
    text = _ok(qt("runs", "best", "--metric", "sharpe", "-n", "3", workspace=workspace))
    assert best[0].id in text


@pytest.mark.slow
def test_resume_finishes_a_batch_whose_process_died(tmp_path: Path) -> None:
    """`batches resume` completes a batch left running by a killed process, each item once."""
    workspace = tmp_path / "ws"
    script = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from quantrack import open_workspace\n"
        "from tests.cli.batch_jobs import dies_at_two\n"
        f"ws = open_workspace({str(workspace)!r})\n"
        "ws.run_batch(dies_at_two, [{'x': x} for x in range(5)], name='dies',\n"
        "             executor=ThreadPoolExecutor(1), progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_CLI_TEST_KILL": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=120, check=False
    )
    assert killed.returncode == -9
    [batch] = [
        Batch.model_validate(b) for b in _json(qt("batches", "list", "--json", workspace=workspace))
    ]
    assert batch.status is BatchStatus.RUNNING
    resumed = Batch.model_validate(
        _json(qt("batches", "resume", batch.id[:20], "--json", workspace=workspace))
    )
    assert (resumed.id, resumed.status, resumed.succeeded) == (batch.id, BatchStatus.COMPLETED, 5)
    runs = _experiments(qt("runs", "list", "--batch", batch.id, "--json", workspace=workspace))
    assert sorted(r.params["x"] for r in runs) == [0, 1, 2, 3, 4]


def test_cli_import_stays_light() -> None:
    """Importing the CLI loads no database, data-frame, plotting or engine library."""
    heavy = ("duckdb", "pandas", "numpy", "pyarrow", "plotly", "backtrader", "vectorbt")
    code = f"import sys, quantrack.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
