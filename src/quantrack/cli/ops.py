"""``quantrack ops``: the workspace over JSON lines, for programs in any language.

Each line on stdin is one request, a JSON object with an ``op`` naming the operation, an
optional ``id`` echoed back, and the operation's arguments; each request gets exactly one
line on stdout::

    {"id": 1, "op": "get_experiment", "experiment_id": "0193..."}
    {"id": 1, "ok": true, "result": {...the experiment...}}
    {"id": 2, "ok": false, "error": {"code": "experiment_not_found", "message": "..."}}

Requests and results are the pydantic models' JSON schemas, printed by
``quantrack ops --schema``. Error codes are ``invalid_json``, ``invalid_request``,
``internal_error``, or the snake_case name of the quantrack error
(``experiment_not_found``, ``invalid_transition``, ``workspace_busy``, ...). A bad line
never stops the loop.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._state import open_for
from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentResults,
    ExperimentStatus,
    QuantrackError,
)
from quantrack.workspace import Workspace

__all__ = [
    "ErrorInfo",
    "Failure",
    "Request",
    "Success",
    "error_code",
    "handle_line",
    "ops_command",
    "schema",
]

RequestId = str | int | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: RequestId = Field(default=None, description="Echoed back in the response.")


class CreateExperiment(_Request):
    """Store a new pending experiment; the result is the :class:`Experiment`."""

    op: Literal["create_experiment"]
    definition: ExperimentDefinition
    experiment_id: str | None = None


class GetExperiment(_Request):
    """The result is the :class:`Experiment`."""

    op: Literal["get_experiment"]
    experiment_id: str


class ListExperiments(_Request):
    """The result is a list of :class:`Experiment`; ``filter.where`` may be text."""

    op: Literal["list_experiments"]
    filter: ExperimentFilter | None = None


class UpdateStatus(_Request):
    """Move an experiment along its lifecycle; the result is the :class:`Experiment`."""

    op: Literal["update_status"]
    experiment_id: str
    status: ExperimentStatus
    error: str | None = None
    error_category: ErrorCategory | None = None


class StoreResults(_Request):
    """Merge metrics and artifacts into a running experiment; the result is it."""

    op: Literal["store_results"]
    experiment_id: str
    results: ExperimentResults


class Heartbeat(_Request):
    """Stamp a running experiment as alive; the result is the :class:`Experiment`."""

    op: Literal["heartbeat"]
    experiment_id: str


class FindByInputArtifacts(_Request):
    """The result is a list of :class:`Experiment` that used any of these inputs."""

    op: Literal["find_by_input_artifacts"]
    artifact_ids: list[str]


class DeleteExperiment(_Request):
    """Remove an experiment's record; the result is null."""

    op: Literal["delete_experiment"]
    experiment_id: str


class PutArtifact(_Request):
    """Store bytes (base64); the result is the :class:`ArtifactRef`."""

    op: Literal["put_artifact"]
    data_base64: str
    kind: str = "file"
    media_type: str = "application/octet-stream"
    name: str | None = None


class GetArtifact(_Request):
    """The result is ``{"data_base64": ...}``."""

    op: Literal["get_artifact"]
    artifact_id: str
    verify: bool = False


class GetBatch(_Request):
    """The result is the :class:`Batch`."""

    op: Literal["get_batch"]
    batch_id: str


class ListBatches(_Request):
    """The result is a list of :class:`Batch`, newest first."""

    op: Literal["list_batches"]
    status: BatchStatus | None = None
    limit: int | None = Field(default=None, gt=0)


class BatchItems(_Request):
    """The result is a list of :class:`BatchItemResult`."""

    op: Literal["batch_items"]
    batch_id: str


Request = Annotated[
    CreateExperiment
    | GetExperiment
    | ListExperiments
    | UpdateStatus
    | StoreResults
    | Heartbeat
    | FindByInputArtifacts
    | DeleteExperiment
    | PutArtifact
    | GetArtifact
    | GetBatch
    | ListBatches
    | BatchItems,
    Field(discriminator="op"),
]


class ErrorInfo(BaseModel):
    """Why a request failed: a stable ``code`` and a sentence for people."""

    model_config = ConfigDict(defer_build=True)

    code: str
    message: str


class Success(BaseModel):
    """The response to a request that succeeded."""

    model_config = ConfigDict(defer_build=True)

    id: RequestId = None
    ok: Literal[True] = True
    result: Any = None


class Failure(BaseModel):
    """The response to a request that failed."""

    model_config = ConfigDict(defer_build=True)

    id: RequestId = None
    ok: Literal[False] = False
    error: ErrorInfo


Response = Success | Failure


@functools.cache
def _requests() -> TypeAdapter[Any]:
    # Built on first use: validating the schema of every request costs startup time that
    # commands other than `ops` should not pay.
    return TypeAdapter(Request)


_RESULTS: dict[str, Any] = {
    "create_experiment": Experiment,
    "get_experiment": Experiment,
    "list_experiments": list[Experiment],
    "update_status": Experiment,
    "store_results": Experiment,
    "heartbeat": Experiment,
    "find_by_input_artifacts": list[Experiment],
    "delete_experiment": None,
    "put_artifact": ArtifactRef,
    "get_artifact": dict[str, str],
    "get_batch": Batch,
    "list_batches": list[Batch],
    "batch_items": list[BatchItemResult],
}


def schema() -> dict[str, Any]:
    """The JSON schemas of requests, responses and each operation's result."""
    return {
        "request": _requests().json_schema(),
        "response": TypeAdapter(Response).json_schema(),
        "results": {
            op: (TypeAdapter(kind).json_schema() if kind is not None else {"type": "null"})
            for op, kind in _RESULTS.items()
        },
    }


def error_code(exc: BaseException) -> str:
    """``ExperimentNotFound`` → ``experiment_not_found``; other exceptions are internal."""
    if not isinstance(exc, QuantrackError):
        return "internal_error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _execute(ws: Workspace, request: Any) -> Any:
    tracker = ws.tracker
    match request:
        case CreateExperiment():
            return tracker.create_experiment(
                request.definition, experiment_id=request.experiment_id
            )
        case GetExperiment():
            return tracker.get_experiment(request.experiment_id)
        case ListExperiments():
            return tracker.list_experiments(request.filter)
        case UpdateStatus():
            return tracker.update_status(
                request.experiment_id,
                request.status,
                error=request.error,
                error_category=request.error_category,
            )
        case StoreResults():
            return tracker.store_results(request.experiment_id, request.results)
        case Heartbeat():
            return tracker.heartbeat(request.experiment_id)
        case FindByInputArtifacts():
            return tracker.find_by_input_artifacts(request.artifact_ids)
        case DeleteExperiment():
            tracker.delete_experiment(request.experiment_id)
            return None
        case PutArtifact():
            try:
                data = base64.b64decode(request.data_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _BadRequest(f"data_base64 is not valid base64 ({exc})") from exc
            return ws.artifacts.put(
                data, kind=request.kind, media_type=request.media_type, name=request.name
            )
        case GetArtifact():
            data = ws.artifacts.get(request.artifact_id, verify=request.verify)
            return {"data_base64": base64.b64encode(data).decode("ascii")}
        case GetBatch():
            return ws.observer.get_batch(request.batch_id)
        case ListBatches():
            return ws.observer.list_batches(status=request.status, limit=request.limit)
        case BatchItems():
            return ws.observer.batch_items(request.batch_id)
    raise _BadRequest(f"unknown operation {request!r}")  # pragma: no cover - union is closed


class _BadRequest(Exception):
    """A request that parsed but whose arguments cannot be used."""


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def handle_line(line: str, workspace: Callable[[], Workspace]) -> dict[str, Any]:
    """The response to one request line (never raises for a bad request)."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        return _failure(None, "invalid_json", f"the line is not JSON: {exc}")
    request_id = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = None
    if not isinstance(raw, dict) or "op" not in raw:
        known = ", ".join(_RESULTS)
        return _failure(
            request_id, "invalid_request", f"a request is an object with an 'op' ({known})"
        )
    if raw["op"] not in _RESULTS:
        known = ", ".join(_RESULTS)
        return _failure(
            request_id, "unknown_op", f"unknown op {raw['op']!r}; the operations are {known}"
        )
    try:
        request = _requests().validate_python(raw)
    except ValidationError as exc:
        return _failure(request_id, "invalid_request", _validation_message(exc))
    try:
        result = _execute(workspace(), request)
    except _BadRequest as exc:
        return _failure(request_id, "invalid_request", str(exc))
    except ValidationError as exc:
        return _failure(request_id, "invalid_request", _validation_message(exc))
    except Exception as exc:
        return _failure(request_id, error_code(exc), str(exc) or type(exc).__name__)
    return Success(id=request_id, result=_dump(result)).model_dump(mode="json")


def _failure(request_id: RequestId, code: str, message: str) -> dict[str, Any]:
    return Failure(id=request_id, error=ErrorInfo(code=code, message=message)).model_dump(
        mode="json"
    )


def ops_command(
    ctx: typer.Context,
    show_schema: Annotated[
        bool, typer.Option("--schema", help="Print the request/response JSON schemas and exit.")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Serve JSON requests from stdin, one per line, answering one JSON line each."""
    del as_json  # the protocol is always JSON
    if show_schema:
        sys.stdout.write(json.dumps(schema(), indent=2) + "\n")
        return

    def open_workspace() -> Workspace:
        return open_for(ctx, workspace, create=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        response = handle_line(line, open_workspace)
        try:
            text = json.dumps(response, allow_nan=False)
        except (TypeError, ValueError) as exc:
            text = json.dumps(
                _failure(response.get("id"), "internal_error", f"unserializable result: {exc}")
            )
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
