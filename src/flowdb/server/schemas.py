"""The API's request and response bodies (pydantic), and the checks bad input must pass.

Every value that reaches the database has been checked here, so a bad request is a
422 naming the field, never a driver error: strings fit their columns and hold no NUL
(PostgreSQL rejects it) nor lone surrogates (not encodable as UTF-8), JSON documents
hold only finite numbers and such strings, integers fit their column types.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from flowdb.database.column_types import StateType


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _storable_document(value: Any) -> Any:
    """Walk a JSON document, rejecting what PostgreSQL's JSONB or SQLite's JSON cannot keep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _storable_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 10**100:
            raise ValueError("integers must have fewer than 100 digits")
        elif isinstance(item, dict):
            for key, child in item.items():
                _storable_text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _without_negative_zero(value: Any) -> Any:
    """``value`` with each ``-0.0`` made ``0.0``: PostgreSQL's JSONB has no negative zero,
    so every dialect stores a plain zero and returns the same document."""
    if isinstance(value, float) and value == 0:
        return 0.0
    if isinstance(value, dict):
        return {key: _without_negative_zero(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_without_negative_zero(child) for child in value]
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    """Timestamps without a zone are read as UTC, the API's documented default."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_storable_text)]
Text = Annotated[str, Field(max_length=100_000), AfterValidator(_storable_text)]
Tag = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_storable_text)]
Tags = Annotated[list[Tag], Field(max_length=100)]
Document = Annotated[
    dict[str, Any], AfterValidator(_storable_document), AfterValidator(_without_negative_zero)
]
AnyDocument = Annotated[
    Any, AfterValidator(_storable_document), AfterValidator(_without_negative_zero)
]
Timestamp = Annotated[
    dt.datetime,
    Field(ge=dt.datetime(1970, 1, 1, tzinfo=dt.UTC), le=dt.datetime(9000, 1, 1, tzinfo=dt.UTC)),
    AfterValidator(_aware),
]
SearchText = Annotated[str, Field(max_length=255), AfterValidator(_storable_text)]
LogLevel = Annotated[int, Field(ge=0, le=100)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created: dt.datetime
    updated: dt.datetime


# --- flows -------------------------------------------------------------------------------


class FlowCreate(_Input):
    """A new flow; its name is unique."""

    name: Name
    tags: Tags = []


class Flow(_Output):
    """A workflow definition."""

    name: str
    tags: list[str]


# --- states ------------------------------------------------------------------------------


class StateCreate(_Input):
    """A state to put a run in; ``name`` defaults to the type's capitalised name."""

    type: StateType
    name: Name | None = None
    message: Text | None = None
    data: AnyDocument | None = None
    timestamp: Timestamp | None = Field(
        default=None,
        deprecated=True,
        description="Ignored: the server stamps each state with its own time, never earlier "
        "than the run's current state, so the history's order is the order of the changes.",
    )


class StateChange(StateCreate):
    """A state to move an existing run to, by the transition rules unless ``force``."""

    force: StrictBool = Field(
        default=False,
        description="Skip the transition rules (for operators); counters and times are "
        "kept right all the same.",
    )


class State(_Output):
    """One entry of a run's state history."""

    type: StateType
    name: str
    timestamp: dt.datetime
    message: str | None
    data: Any | None


# --- flow runs ---------------------------------------------------------------------------


class FlowRunCreate(_Input):
    """A new run of a flow. With an ``idempotency_key`` already used for this flow, the
    existing run is returned instead (status 200)."""

    flow_id: uuid.UUID
    name: Name | None = None
    parameters: Document = {}
    tags: Tags = []
    idempotency_key: Name | None = None
    expected_start_time: Timestamp | None = None
    state: StateCreate | None = None


class FlowRun(_Output):
    """One execution of a flow, with its current state."""

    flow_id: uuid.UUID
    deployment_id: uuid.UUID | None
    work_queue_id: uuid.UUID | None
    name: str
    idempotency_key: str | None
    parameters: dict[str, Any]
    tags: list[str]
    state_id: uuid.UUID | None
    state_type: StateType | None
    state_name: str | None
    state_timestamp: dt.datetime | None
    run_count: int
    expected_start_time: dt.datetime
    start_time: dt.datetime | None
    end_time: dt.datetime | None


# --- task runs ---------------------------------------------------------------------------


class TaskRunCreate(_Input):
    """A new task run inside a flow run; (flow run, task key, dynamic key) is unique."""

    flow_run_id: uuid.UUID
    task_key: Name
    dynamic_key: Name = "0"
    name: Name
    tags: Tags = []


class TaskRun(_Output):
    """One execution of a task, with its current state."""

    flow_run_id: uuid.UUID
    task_key: str
    dynamic_key: str
    name: str
    state_id: uuid.UUID | None
    state_type: StateType | None
    state_name: str | None
    run_count: int
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    tags: list[str]


# --- logs --------------------------------------------------------------------------------


class LogCreate(_Input):
    """One log line of a flow run and, optionally, one of its task runs."""

    name: Name
    level: LogLevel
    message: Text
    timestamp: Timestamp
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None


class Log(_Output):
    """A stored log line."""

    name: str
    level: int
    message: str
    timestamp: dt.datetime
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None


class LogsCreated(BaseModel):
    """How many log lines a batch stored."""

    count: int


# --- service -----------------------------------------------------------------------------


class Health(BaseModel):
    """The process answers."""

    status: str


class Readiness(BaseModel):
    """The database is reachable and its schema at the revision this server needs."""

    status: str
    schema_revision: str | None
    head: str | None


class VersionInfo(BaseModel):
    """What is running: flowdb's version and the database's schema revision."""

    version: str
    schema_revision: str | None
    head: str | None
    dialect: str


class AdminResult(BaseModel):
    """What an admin database route did."""

    action: str
    schema_revision: str | None


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx the API itself raises: one sentence."""

    detail: str
