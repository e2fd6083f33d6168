"""Every command, in-process through typer's CliRunner, on an in-memory workspace."""

from __future__ import annotations

import json

import pytest

from quantrack.cli._errors import (
    EXIT_BAD_INPUT,
    EXIT_DAMAGED,
    EXIT_INTERNAL,
    EXIT_NOT_FOUND,
)
from quantrack.domain import Batch, BatchItemResult, Experiment, ExperimentStatus
from quantrack.workspace import Workspace
from tests.cli.conftest import Invoke
from tests.cli.helpers import Recorded


def _lines_fit(text: str) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, f"lines wider than 80 columns: {too_wide}"


def _runs(stdout: str) -> list[Experiment]:
    return [Experiment.model_validate(item) for item in json.loads(stdout)]


# -- runs list ---------------------------------------------------------------------------


def test_list_shows_newest_first_in_80_columns(invoke: Invoke, recorded: Recorded) -> None:
    """`runs list` prints a table no wider than 80 columns, full ids, newest first."""
    result = invoke(["runs", "list", "--limit", "50"])
    assert result.exit_code == 0, result.stderr
    _lines_fit(result.stdout)
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    # The sweep's runs share one creation time; ties are broken by id, descending.
    assert ids[:12] == sorted(recorded.batch_runs, reverse=True)
    assert ids[-1] == recorded.runs["sma-fast"]
    assert len(ids) == 16


def test_list_json_validates_as_experiments(invoke: Invoke, recorded: Recorded) -> None:
    """`runs list --json` prints experiments that validate as the pydantic model."""
    result = invoke(["runs", "list", "--json", "--status", "failed"])
    assert result.exit_code == 0, result.stderr
    runs = _runs(result.stdout)
    assert {r.name for r in runs} == {"sma-broken", "ma-grid 15/80"}
    assert all(r.status is ExperimentStatus.FAILED for r in runs)


def test_global_json_flag_works_before_the_command(invoke: Invoke, recorded: Recorded) -> None:
    """`quantrack --json runs list` is the same as `runs list --json`."""
    result = invoke(["--json", "runs", "list", "--strategy", "sma"])
    assert result.exit_code == 0, result.stderr
    assert {r.name for r in _runs(result.stdout)} == {
        "sma-fast",
        "sma-mid",
        "sma-slow",
        "sma-broken",
    }


def test_list_where_and_sort(invoke: Invoke, recorded: Recorded) -> None:
    """`--where` filters on metrics and params; `--sort -sharpe` orders descending."""
    result = invoke(
        ["runs", "list", "--json", "--where", "sharpe > 0.5 and fast < 30", "--sort", "-sharpe"]
    )
    assert result.exit_code == 0, result.stderr
    assert [r.name for r in _runs(result.stdout)] == ["sma-fast", "sma-mid"]
    ascending = invoke(["runs", "list", "--json", "--strategy", "sma", "--sort", "sharpe"])
    assert [r.name for r in _runs(ascending.stdout)][:3] == ["sma-slow", "sma-mid", "sma-fast"]


def test_list_filters_by_tag_engine_batch_and_limit(invoke: Invoke, recorded: Recorded) -> None:
    """Tag, engine, batch (by prefix) and limit filters each narrow the list."""
    tagged = invoke(["runs", "list", "--json", "--tag", "cli-test"])
    assert len(_runs(tagged.stdout)) == 3
    engine = invoke(["runs", "list", "--json", "--engine", "vectorbt", "--limit", "5"])
    assert len(_runs(engine.stdout)) == 5
    batch = invoke(["runs", "list", "--json", "--batch", recorded.batch_id[:24], "--limit", "99"])
    assert {r.id for r in _runs(batch.stdout)} == set(recorded.batch_runs)


def test_list_since_until(invoke: Invoke, recorded: Recorded) -> None:
    """`--since` and `--until` take ISO dates; a plain --until date covers that whole day."""
    everything = invoke(["runs", "list", "--json", "--since", "2000-01-01", "--limit", "99"])
    assert len(_runs(everything.stdout)) == 16
    nothing = invoke(["runs", "list", "--json", "--until", "2000-01-01"])
    assert _runs(nothing.stdout) == []
    bad = invoke(["runs", "list", "--since", "yesterday"])
    assert bad.exit_code == EXIT_BAD_INPUT
    assert "--since 'yesterday' is not an ISO date" in bad.stderr


def test_malformed_where_points_at_the_column(invoke: Invoke, recorded: Recorded) -> None:
    """A syntax error in --where is one error line plus a caret under the bad column."""
    result = invoke(["runs", "list", "--where", "sharpe > 1 and and"])
    assert result.exit_code == EXIT_BAD_INPUT
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: --where: bad where expression at column 16")
    assert lines[1] == "  sharpe > 1 and and"
    assert lines[2].index("^") == lines[1].index("and and") + 4
    assert "Traceback" not in result.output


def test_bad_status_and_sort_are_explained(invoke: Invoke, recorded: Recorded) -> None:
    """An unknown --status lists the valid ones; a bad --sort says how to write it."""
    status = invoke(["runs", "list", "--status", "done"])
    assert status.exit_code == EXIT_BAD_INPUT
    assert "use one of pending, running, completed, failed, cancelled" in status.stderr
    sort = invoke(["runs", "list", "--sort", "-1x"])
    assert sort.exit_code == EXIT_BAD_INPUT
    assert "--sort '-1x' is not a metric name" in sort.stderr


def test_sort_by_unknown_metric_fails_cleanly(invoke: Invoke, recorded: Recorded) -> None:
    """Sorting by a metric no run has is a one-line error, not a traceback."""
    result = invoke(["runs", "list", "--sort", "-nope"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.startswith("error: cannot order by 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1


# -- runs show / compare / diff ----------------------------------------------------------


def test_show_by_prefix(invoke: Invoke, recorded: Recorded) -> None:
    """`runs show` accepts a unique prefix and prints params, metrics and artifacts."""
    full = recorded.runs["sma-fast"]
    prefix = full[:20]
    result = invoke(["runs", "show", full if prefix in recorded.batch_runs else prefix])
    assert result.exit_code == 0, result.stderr
    _lines_fit(result.stdout)
    for text in (full, "sma-fast", "params:", "metrics:", "equity_curve", "code_manifest"):
        assert text in result.stdout


def test_show_json_has_lineage(invoke: Invoke, recorded: Recorded) -> None:
    """`runs show --json` is the experiment's model dump plus duration and lineage."""
    result = invoke(["runs", "show", recorded.runs["sma-broken"], "--json"])
    data = json.loads(result.stdout)
    assert data.pop("lineage") == []
    duration = data.pop("duration_seconds")
    experiment = Experiment.model_validate(data)
    assert experiment.error == "ValueError: fast must be positive"
    assert duration == experiment.duration_seconds


def test_unknown_and_ambiguous_ids(invoke: Invoke, recorded: Recorded) -> None:
    """An unknown id exits 3, an ambiguous prefix exits 2 naming candidates."""
    unknown = invoke(["runs", "show", "ffffffff"])
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert unknown.stderr == (
        "error: no experiment id starts with 'ffffffff'; list them with `quantrack runs list`\n"
    )
    ambiguous = invoke(["runs", "show", recorded.runs["sma-fast"][:4]])
    assert ambiguous.exit_code == EXIT_BAD_INPUT
    assert "is ambiguous" in ambiguous.stderr


def test_compare_marks_differences(invoke: Invoke, recorded: Recorded) -> None:
    """`runs compare` lines up params and metrics and marks the differing ones."""
    ids = [recorded.runs[n] for n in ("sma-fast", "sma-mid", "sma-slow")]
    result = invoke(["runs", "compare", *ids])
    assert result.exit_code == 0, result.stderr
    _lines_fit(result.stdout)
    rows = {
        line.lstrip("* ").split()[0]: line
        for line in result.stdout.splitlines()
        if " param " in line
    }
    assert rows["fast"].startswith("*")
    assert not rows["slow"].startswith("*")
    data = json.loads(invoke(["runs", "compare", *ids, "--json"]).stdout)
    assert data["params"]["fast"] == [10, 11, 30]
    assert data["differs"] == {"params": ["fast"], "metrics": ["max_drawdown", "sharpe"]}


def test_compare_needs_two(invoke: Invoke, recorded: Recorded) -> None:
    """Comparing a single run is refused with a clear message."""
    result = invoke(["runs", "compare", recorded.runs["sma-fast"]])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "at least two" in result.stderr


def test_diff_shows_params_metrics_inputs_and_code(invoke: Invoke, recorded: Recorded) -> None:
    """`runs diff` reports params, metrics, input data and a unified diff of the code."""
    a, b = recorded.runs["sma-mid"], recorded.runs["sma-slow"]
    data = json.loads(invoke(["runs", "diff", a, b, "--json"]).stdout)
    assert data["params"] == [{"name": "fast", "a": 11, "b": 30}]
    assert {row["name"] for row in data["metrics"]} == {"sharpe", "max_drawdown"}
    assert data["inputs"] == [{"name": "AAA.csv", "a": recorded.input_id, "b": None}]
    [code] = data["code"]
    assert code["path"] == "strategy.py"
    assert "-    return fast >= slow\n+    return fast > slow" in code["diff"]
    text = invoke(["runs", "diff", a, b])
    assert text.exit_code == 0
    assert "+    return fast > slow" in text.stdout
    same = invoke(["runs", "diff", a, a])
    assert "no differences" in same.stdout


# -- best / find-hash / similar / inputs -------------------------------------------------


def test_best_ranks_completed_runs(invoke: Invoke, recorded: Recorded) -> None:
    """`runs best` ranks completed runs by the metric, highest first unless --lowest."""
    data = _runs(invoke(["runs", "best", "--metric", "sharpe", "-n", "3", "--json"]).stdout)
    assert [r.metrics["sharpe"] for r in data] == [1.5, 1.3, 1.1]
    lowest = _runs(invoke(["runs", "best", "--metric", "sharpe", "--lowest", "--json"]).stdout)
    assert lowest[0].metrics["sharpe"] == -0.3
    scoped = _runs(invoke(["runs", "best", "--strategy", "sma", "--json"]).stdout)
    assert [r.name for r in scoped] == ["sma-fast", "sma-mid", "sma-slow"]
    table = invoke(["runs", "best", "-n", "3"])
    _lines_fit(table.stdout)
    assert recorded.runs["sma-fast"] in table.stdout


def test_find_hash_full_and_prefix(
    invoke: Invoke, recorded: Recorded, memory_workspace: Workspace
) -> None:
    """`runs find-hash` finds runs by config hash, also from a shortened hash."""
    target = memory_workspace.tracker.get_experiment(recorded.runs["sma-mid"])
    for text in (target.config_hash, target.config_hash[:12]):
        found = _runs(invoke(["runs", "find-hash", text, "--json"]).stdout)
        assert [r.id for r in found] == [target.id]
    bad = invoke(["runs", "find-hash", "xyz"])
    assert bad.exit_code == EXIT_BAD_INPUT


def test_similar_within_tolerance(invoke: Invoke, recorded: Recorded) -> None:
    """`runs similar` finds runs whose numeric params are within the relative tolerance."""
    base = recorded.runs["sma-fast"]
    near = json.loads(invoke(["runs", "similar", base, "--tolerance", "0.1", "--json"]).stdout)
    assert [r["id"] for r in near] == [recorded.runs["sma-mid"]]
    assert near[0]["distance"] == pytest.approx(1 / 11)
    tight = json.loads(invoke(["runs", "similar", base, "--tolerance", "0.05", "--json"]).stdout)
    assert tight == []


def test_inputs_finds_runs_using_data(invoke: Invoke, recorded: Recorded) -> None:
    """`runs inputs` lists the runs that used an input artifact; a bad id is refused."""
    found = _runs(invoke(["runs", "inputs", recorded.input_id, "--json"]).stdout)
    assert {r.name for r in found} == {"sma-fast", "sma-mid"}
    bad = invoke(["runs", "inputs", "../etc/passwd"])
    assert bad.exit_code == EXIT_BAD_INPUT
    assert "64 lowercase hexadecimal" in bad.stderr


# -- delete ------------------------------------------------------------------------------


def test_delete_asks_unless_yes(
    invoke: Invoke, recorded: Recorded, memory_workspace: Workspace
) -> None:
    """`runs delete` asks first: 'n' keeps the run, --yes deletes it."""
    target = recorded.runs["sma-slow"]
    kept = invoke(["runs", "delete", target], input="n\n")
    assert kept.exit_code == 1
    assert memory_workspace.tracker.get_experiment(target).id == target
    gone = invoke(["runs", "delete", target], input="y\n")
    assert gone.exit_code == 0, gone.stderr
    with pytest.raises(KeyError):
        memory_workspace.tracker.get_experiment(target)
    again = invoke(["runs", "delete", target, "--yes"])
    assert again.exit_code == EXIT_NOT_FOUND


# -- batches -----------------------------------------------------------------------------


def test_batches_list_show_failed_stats(invoke: Invoke, recorded: Recorded) -> None:
    """The batches commands show the sweep, its failed item and totals."""
    listed = [
        Batch.model_validate(b) for b in json.loads(invoke(["batches", "list", "--json"]).stdout)
    ]
    assert [(b.id, b.status.value) for b in listed] == [(recorded.batch_id, "partial")]
    show = json.loads(invoke(["batches", "show", recorded.batch_id[:24], "--json"]).stdout)
    assert len(show["items"]) == 12
    assert show["failed"] == 1
    failed = json.loads(invoke(["batches", "failed", recorded.batch_id, "--json"]).stdout)
    [item] = [BatchItemResult.model_validate(i) for i in failed]
    assert (item.index, item.error_category) == (11, "data_error")
    stats = json.loads(invoke(["batches", "stats", "--json"]).stdout)
    assert stats["items"] == 12
    assert stats["errors_by_category"] == {"data_error": 1}
    assert stats["success_rate"] == pytest.approx(11 / 12)
    for args in (["batches", "list"], ["batches", "show", recorded.batch_id], ["batches", "stats"]):
        result = invoke(args)
        assert result.exit_code == 0, result.stderr
        _lines_fit(result.stdout)


def test_batches_bad_input(invoke: Invoke, recorded: Recorded) -> None:
    """Unknown batch ids, bad statuses and a batch run_batch did not start are refused."""
    assert invoke(["batches", "show", "nope"]).exit_code == EXIT_NOT_FOUND
    assert invoke(["batches", "list", "--status", "odd"]).exit_code == EXIT_BAD_INPUT
    retry = invoke(["batches", "retry", recorded.batch_id])
    assert retry.exit_code == EXIT_BAD_INPUT
    assert "was not started by run_batch" in retry.stderr
    fn = invoke(["batches", "resume", recorded.batch_id, "--fn", "no_such_module:f"])
    assert fn.exit_code == EXIT_BAD_INPUT
    assert "cannot import module 'no_such_module'" in fn.stderr


# -- artifacts ---------------------------------------------------------------------------


def test_verify_reports_damage(
    invoke: Invoke, recorded: Recorded, memory_workspace: Workspace
) -> None:
    """`artifacts verify --all` passes on intact content and exits 5 on damage."""
    ok = json.loads(invoke(["artifacts", "verify", "--all", "--json"]).stdout)
    assert ok["problems"] == []
    assert ok["checked"] >= 8
    store = memory_workspace.artifacts
    store.corrupt(recorded.input_id, b"tampered")  # type: ignore[attr-defined]
    damaged = invoke(["artifacts", "verify", recorded.input_id])
    assert damaged.exit_code == EXIT_DAMAGED
    assert "damaged" in damaged.stdout
    assert invoke(["artifacts", "verify"]).exit_code == EXIT_BAD_INPUT


def test_gc_is_a_dry_run_by_default(
    invoke: Invoke, recorded: Recorded, memory_workspace: Workspace
) -> None:
    """`artifacts gc` only reports; `--apply` removes what no run refers to."""
    orphan = memory_workspace.artifacts.put(b"nobody uses me")
    dry = json.loads(invoke(["artifacts", "gc", "--json"]).stdout)
    assert dry["removed"] == [orphan.id]
    assert dry["dry_run"] is True
    assert memory_workspace.artifacts.exists(orphan.id)
    applied = json.loads(invoke(["artifacts", "gc", "--apply", "--json"]).stdout)
    assert applied["removed"] == [orphan.id]
    assert not memory_workspace.artifacts.exists(orphan.id)
    assert memory_workspace.artifacts.exists(recorded.input_id)


# -- sql, errors, debug ------------------------------------------------------------------


def test_sql_needs_a_database(invoke: Invoke, recorded: Recorded) -> None:
    """`sql` on an in-memory workspace says only DuckDB workspaces run SQL."""
    result = invoke(["sql", "select 1"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "only DuckDB workspaces" in result.stderr
    assert invoke(["sql", "  "]).exit_code == EXIT_BAD_INPUT


def test_internal_errors_hide_the_traceback_unless_debug(
    invoke: Invoke, recorded: Recorded, memory_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is one line and exit 70; --debug adds the traceback."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(memory_workspace.tracker, "list_experiments", broken)
    quiet = invoke(["runs", "list"])
    assert quiet.exit_code == EXIT_INTERNAL
    assert quiet.stderr.splitlines() == [
        "error: internal error: RuntimeError: boom (rerun with --debug for the traceback, "
        "and please report it)"
    ]
    loud = invoke(["--debug", "runs", "list"])
    assert loud.exit_code == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in loud.stderr


def test_help_and_version(invoke: Invoke) -> None:
    """`--help` lists the commands and `--version` prints the version."""
    result = invoke(["--help"])
    assert result.exit_code == 0
    for command in ("runs", "batches", "artifacts", "report", "sql", "ops", "demo"):
        assert command in result.stdout
    assert invoke(["--version"]).stdout.startswith("quantrack ")


def test_show_flattens_nested_params() -> None:
    """Nested params are shown as dotted keys; lists and scalars are kept as they are."""
    from quantrack.cli.runs import flatten

    nested = {"broker": {"cash": 1000, "fees": {"rate": 0.1}}, "feeds": [1, 2], "n": 3}
    assert flatten(nested) == {
        "broker.cash": 1000,
        "broker.fees.rate": 0.1,
        "feeds": [1, 2],
        "n": 3,
    }


def test_numbers_are_compact() -> None:
    """Table numbers are short: 4 significant digits, thousands separators, tiny as 1e-05."""
    from quantrack.cli._output import fmt_number

    assert [fmt_number(v) for v in (1.0, 129.0, 0.95214)] == ["1.000", "129.0", "0.9521"]
    assert [fmt_number(v) for v in (1.23456, 12345.6, 0.00001234, 7, 25_000, None)] == [
        "1.235",
        "12,346",
        "1.23e-05",
        "7",
        "25,000",
        "",
    ]
