"""The JSON-lines ops interface: requests in, one response per line out, never a crash."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from quantrack.cli.ops import Failure, Request, Success, error_code, schema
from quantrack.domain import ArtifactRef, Experiment, ExperimentNotFound, ExperimentStatus
from tests.cli.conftest import Invoke
from tests.cli.helpers import Recorded

REPO = Path(__file__).resolve().parents[2]


def _serve(invoke: Invoke, *requests: object) -> list[dict[str, Any]]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in requests]
    # In-process, the library's unconfigured structlog would print to stdout; the real
    # `quantrack` process logs to stderr.
    with capture_logs():
        result = invoke(["ops"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    responses = [json.loads(line) for line in result.stdout.splitlines()]
    for response in responses:
        TypeAdapter(Success | Failure).validate_python(response)
    return responses


def test_full_lifecycle_over_json(invoke: Invoke) -> None:
    """create, run, store results, complete and read back an experiment through ops."""
    [created] = _serve(
        invoke,
        {"id": 1, "op": "create_experiment", "definition": {"name": "from-r", "params": {"n": 3}}},
    )
    experiment = Experiment.model_validate(created["result"])
    assert (created["id"], experiment.status) == (1, ExperimentStatus.PENDING)
    data = base64.b64encode(b"curve").decode()
    responses = _serve(
        invoke,
        {"id": 2, "op": "update_status", "experiment_id": experiment.id, "status": "running"},
        {"id": 3, "op": "put_artifact", "data_base64": data, "kind": "equity_curve"},
    )
    ref = ArtifactRef.model_validate(responses[1]["result"])
    responses = _serve(
        invoke,
        {
            "id": 4,
            "op": "store_results",
            "experiment_id": experiment.id,
            "results": {"metrics": {"sharpe": 1.25}, "artifacts": [ref.model_dump()]},
        },
        {"id": 5, "op": "update_status", "experiment_id": experiment.id, "status": "completed"},
        {"id": "six", "op": "get_experiment", "experiment_id": experiment.id},
        {"id": 7, "op": "get_artifact", "artifact_id": ref.id, "verify": True},
        {"id": 8, "op": "list_experiments", "filter": {"where": "sharpe > 1"}},
    )
    assert [r["ok"] for r in responses] == [True] * 5
    final = Experiment.model_validate(responses[2]["result"])
    assert responses[2]["id"] == "six"
    assert final.status is ExperimentStatus.COMPLETED
    assert final.metrics == {"sharpe": 1.25}
    assert base64.b64decode(responses[3]["result"]["data_base64"]) == b"curve"
    assert [e["id"] for e in responses[4]["result"]] == [experiment.id]


def test_bad_lines_get_error_objects_and_the_loop_goes_on(
    invoke: Invoke, recorded: Recorded
) -> None:
    """Bad JSON, unknown ops, missing fields and lifecycle errors are answered, in order."""
    completed = recorded.runs["sma-fast"]
    responses = _serve(
        invoke,
        "{not json",
        {"id": 1, "op": "launch_rockets"},
        {"id": 2, "op": "get_experiment"},
        {"id": 3, "op": "get_experiment", "experiment_id": "nope"},
        {"id": 4, "op": "update_status", "experiment_id": completed, "status": "running"},
        [1, 2, 3],
        {"id": 5, "op": "put_artifact", "data_base64": "***"},
        {"id": 6, "op": "list_experiments", "filter": {"where": "sharpe >"}},
        {"id": 7, "op": "get_experiment", "experiment_id": completed},
    )
    codes = [(r["id"], r["error"]["code"] if not r["ok"] else "ok") for r in responses]
    assert codes == [
        (None, "invalid_json"),
        (1, "unknown_op"),
        (2, "invalid_request"),
        (3, "experiment_not_found"),
        (4, "invalid_transition"),
        (None, "invalid_request"),
        (5, "invalid_request"),
        (6, "invalid_request"),
        (7, "ok"),
    ]
    assert "experiment_id: Field required" in responses[2]["error"]["message"]
    assert "column 9" in responses[7]["error"]["message"]


def test_batch_queries(invoke: Invoke, recorded: Recorded) -> None:
    """get_batch, list_batches and batch_items answer from the observer."""
    responses = _serve(
        invoke,
        {"op": "list_batches", "status": "partial"},
        {"op": "get_batch", "batch_id": recorded.batch_id},
        {"op": "batch_items", "batch_id": recorded.batch_id},
        {"op": "find_by_input_artifacts", "artifact_ids": [recorded.input_id]},
        {"op": "get_batch", "batch_id": "missing"},
    )
    assert [b["id"] for b in responses[0]["result"]] == [recorded.batch_id]
    assert responses[1]["result"]["total"] == 12
    assert len(responses[2]["result"]) == 12
    assert len(responses[3]["result"]) == 2
    assert responses[4]["error"]["code"] == "batch_not_found"


def test_schema_describes_every_operation(invoke: Invoke) -> None:
    """`ops --schema` prints request, response and per-operation result schemas."""
    result = invoke(["ops", "--schema"])
    published = json.loads(result.stdout)
    assert published == json.loads(json.dumps(schema()))
    mapping = published["request"]["discriminator"]["mapping"]
    assert set(mapping) == set(published["results"])
    assert "create_experiment" in mapping
    request = TypeAdapter(Request).validate_python({"op": "heartbeat", "experiment_id": "x"})
    assert request.op == "heartbeat"


def test_error_codes_are_snake_case_names() -> None:
    """A quantrack error's code is its class name in snake_case; others are internal."""
    assert error_code(ExperimentNotFound("x")) == "experiment_not_found"
    assert error_code(RuntimeError("x")) == "internal_error"


@pytest.mark.skipif(pytest.importorskip("quantrack.adapters.duckdb") is None, reason="needs DuckDB")
def test_ops_in_a_subprocess_creates_the_workspace(tmp_path: Path) -> None:
    """A real `quantrack ops` process serves a new workspace line by line."""
    workspace = tmp_path / "ws"
    requests = [
        {"id": 1, "op": "create_experiment", "definition": {"name": "go-client"}},
        "garbage",
        {"id": 3, "op": "list_experiments"},
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("QUANTRACK_HOME", None)
    process = subprocess.run(
        [sys.executable, "-m", "quantrack", "ops", "--workspace", str(workspace)],
        input="\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    responses = [json.loads(line) for line in process.stdout.splitlines()]
    assert [r["ok"] for r in responses] == [True, False, True]
    assert responses[2]["result"][0]["definition"]["name"] == "go-client"
    assert (workspace / "runs.duckdb").is_file()
