"""The API's request and response bodies (pydantic), and the checks bad input must pass.

Every value that reaches the database has been checked here, so a bad request is a
422 naming the field, never a driver error: strings fit their columns and hold no NUL
(PostgreSQL rejects it) nor lone surrogates (not encodable as UTF-8), JSON documents
hold only finite numbers and such strings, integers fit their column types.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)
from typing_extensions import TypeAliasType

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


#: Text without NUL (PostgreSQL cannot store it), as the schema says it.
NUL_FREE = r"^[^\x00]*$"
#: An RFC 3339 date-time with its zone, in the years the API accepts (1970 to 8999).
DATE_TIME = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_DATE_TIME = re.compile(DATE_TIME)


def _date_time_text(value: Any) -> Any:
    """Only what the schema allows: a string in ``DATE_TIME``'s form, never a number."""
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError(
            "must be an RFC 3339 date-time with a time zone (YYYY-MM-DDTHH:MM:SS[.ffffff]Z "
            "or +HH:MM), in the years 1970 to 8999"
        )
    return value


Name = Annotated[
    str, Field(min_length=1, max_length=255, pattern=NUL_FREE), AfterValidator(_storable_text)
]
Text = Annotated[str, Field(max_length=100_000, pattern=NUL_FREE), AfterValidator(_storable_text)]
Tag = Name
Tags = Annotated[list[Tag], Field(max_length=100)]
_Key = Annotated[str, Field(pattern=NUL_FREE)]
#: Any JSON value the database stores and returns unchanged: strings without NUL,
#: finite numbers, integers of fewer than 100 digits.
if TYPE_CHECKING:
    JsonValue = Any
else:
    JsonValue = TypeAliasType(
        "JsonValue",
        Union[  # noqa: UP007  (a recursive alias needs the Union form)
            StrictBool,
            Annotated[StrictInt, Field(gt=-(10**100), lt=10**100)],
            Annotated[StrictFloat, Field(allow_inf_nan=False)],
            Annotated[str, Field(pattern=NUL_FREE)],
            list["JsonValue"],
            Annotated[
                dict[_Key, "JsonValue"], Field(json_schema_extra={"additionalProperties": False})
            ],
            None,
        ],
    )
Document = Annotated[
    dict[_Key, JsonValue],
    Field(json_schema_extra={"additionalProperties": False}),
    AfterValidator(_storable_document),
    AfterValidator(_without_negative_zero),
]
AnyDocument = Annotated[
    JsonValue, AfterValidator(_storable_document), AfterValidator(_without_negative_zero)
]
Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_date_time_text),
    Field(json_schema_extra={"pattern": DATE_TIME}),
]
SearchText = Annotated[str, Field(max_length=255, pattern=NUL_FREE), AfterValidator(_storable_text)]


def _json_integer(value: Any) -> Any:
    """What JSON Schema calls an integer: a number without a fraction (``20`` or ``20.0``),
    never a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be a JSON integer (no fraction)")
    return int(value)


#: A log level in a body: an integer, never a boolean or a string.
LogLevel = Annotated[int, BeforeValidator(_json_integer), Field(ge=0, le=100)]
#: A log level in a query string (where every value is text).
LogLevelQuery = Annotated[int, Field(ge=0, le=100)]


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

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "nightly-etl", "tags": ["etl"]}]}
    )

    name: Name
    tags: Tags = []


class Flow(_Output):
    """A workflow definition."""

    name: str
    tags: list[str]


# --- states ------------------------------------------------------------------------------


class StateCreate(_Input):
    """A state to put a run in; ``name`` defaults to the type's capitalised name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"type": "RUNNING", "message": "Started by worker-1"}]},
    )

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"type": "COMPLETED", "data": {"rows": 1200}}]},
    )

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "flow_id": "0b8e4f5e-3c1a-4d2b-9f6e-1a2b3c4d5e6f",
                    "parameters": {"day": "2026-03-01", "retries": 3},
                    "idempotency_key": "nightly-2026-03-01",
                    "state": {"type": "SCHEDULED"},
                }
            ]
        },
    )

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "flow_run_id": "0b8e4f5e-3c1a-4d2b-9f6e-1a2b3c4d5e6f",
                    "task_key": "extract",
                    "name": "extract",
                }
            ]
        },
    )

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "prefect.flow_runs",
                    "level": 20,
                    "message": "Extracted 1200 rows",
                    "timestamp": "2026-03-01T06:00:00Z",
                    "flow_run_id": "0b8e4f5e-3c1a-4d2b-9f6e-1a2b3c4d5e6f",
                }
            ]
        },
    )

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
    # Never empty at head (b2a6d8f0c4e3), but this release also serves a database whose
    # expand a1f5c7e9b3d2 waits behind an older contract (a rolling upgrade from before
    # 9e3f5a7b2d46), where lines of the previous release's may still lack it.
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
    #: Why a database not at head is still served (a migration is running), else empty.
    detail: str = ""


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
