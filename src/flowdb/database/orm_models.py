"""The schema of the orchestration API's database, as SQLAlchemy 2.x models.

These models describe the schema at the head of the migration history; the
migrations in ``flowdb/database/migrations/versions`` build it step by step, and a
test proves (with Alembic's autogenerate comparison) that the two agree on SQLite
and PostgreSQL.

Conventions:
* every table has a UUID ``id`` and timezone-aware ``created`` / ``updated``;
* documents (parameters, tags, schedules, block data) are JSON columns;
* ON DELETE is deliberate: children that make no sense alone (runs of a flow, states
  of a run, logs of a run) CASCADE; optional links (a run's deployment or queue,
  an artifact's run) SET NULL;
* constraint and index names come from ``NAMING_CONVENTION`` so that migrations can
  name them identically on every dialect.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flowdb.database.column_types import (
    JSONDocument,
    StateType,
    Timestamp,
    state_type_column_type,
    utcnow,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s__%(column_0_N_name)s",
    "uq": "uq_%(table_name)s__%(column_0_N_name)s",
    "ck": "ck_%(table_name)s__%(constraint_name)s",
    "fk": "fk_%(table_name)s__%(column_0_name)s__%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Server-side default for timestamps, valid on both dialects.
NOW = sa.text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    """Declarative base: shared metadata with the naming convention, and the common columns."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    created: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, server_default=NOW)
    updated: Mapped[dt.datetime] = mapped_column(
        Timestamp, default=utcnow, onupdate=utcnow, server_default=NOW
    )


def _fk(target: str, ondelete: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete=ondelete)


def _json_default(value: str) -> Any:
    return sa.text(f"'{value}'")


class Flow(Base):
    """A workflow definition, identified by name."""

    __tablename__ = "flow"
    __table_args__ = (sa.UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    tags: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )


class WorkPool(Base):
    """A pool of infrastructure that workers poll for flow runs."""

    __tablename__ = "work_pool"
    __table_args__ = (sa.UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    is_paused: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    base_job_template: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, default=dict, server_default=_json_default("{}")
    )


class WorkQueue(Base):
    """A queue of flow runs inside a work pool, with its own priority and limit."""

    __tablename__ = "work_queue"
    __table_args__ = (sa.UniqueConstraint("work_pool_id", "name"),)

    work_pool_id: Mapped[uuid.UUID] = mapped_column(_fk("work_pool.id", "CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    is_paused: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    priority: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")


class Worker(Base):
    """A process that polls a work pool; known by its heartbeats."""

    __tablename__ = "worker"
    __table_args__ = (sa.UniqueConstraint("work_pool_id", "name"),)

    work_pool_id: Mapped[uuid.UUID] = mapped_column(_fk("work_pool.id", "CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    last_heartbeat_time: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class Deployment(Base):
    """A flow packaged to run on a work queue, on demand or on schedules."""

    __tablename__ = "deployment"
    __table_args__ = (sa.UniqueConstraint("flow_id", "name"),)

    flow_id: Mapped[uuid.UUID] = mapped_column(_fk("flow.id", "CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    version: Mapped[str | None] = mapped_column(sa.String(255))
    parameters: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, default=dict, server_default=_json_default("{}")
    )
    tags: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )
    paused: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    work_queue_id: Mapped[uuid.UUID | None] = mapped_column(
        _fk("work_queue.id", "SET NULL"), index=True
    )


class DeploymentSchedule(Base):
    """One schedule of a deployment (a deployment may have several)."""

    __tablename__ = "deployment_schedule"

    deployment_id: Mapped[uuid.UUID] = mapped_column(_fk("deployment.id", "CASCADE"), index=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    max_scheduled_runs: Mapped[int | None] = mapped_column(sa.Integer)


class FlowRun(Base):
    """One execution of a flow; its current state is denormalised for fast filtering."""

    __tablename__ = "flow_run"
    __table_args__ = (
        sa.UniqueConstraint("flow_id", "idempotency_key"),
        sa.Index("ix_flow_run__state_type_start_time", "state_type", "start_time"),
        sa.Index("ix_flow_run__flow_id_start_time", "flow_id", "start_time"),
    )

    flow_id: Mapped[uuid.UUID] = mapped_column(_fk("flow.id", "CASCADE"))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        _fk("deployment.id", "SET NULL"), index=True
    )
    work_queue_id: Mapped[uuid.UUID | None] = mapped_column(
        _fk("work_queue.id", "SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    state_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("flow_run_state.id", ondelete="SET NULL", use_alter=True), index=True
    )
    state_type: Mapped[StateType | None] = mapped_column(state_type_column_type())
    state_name: Mapped[str | None] = mapped_column(sa.String(255))
    state_timestamp: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    parameters: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, default=dict, server_default=_json_default("{}")
    )
    tags: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )
    run_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    expected_start_time: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    start_time: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # Stored as ended_at since 8d2e4f6a1c35/9e3f5a7b2d46 (the API field stays end_time).
    # This code writes ended_at only: from the expand revision on it exists, and its
    # triggers copy it into end_time for the previous release until the contract.
    # Indexed for retention: ``flowdb database clean`` walks expired runs by end time.
    end_time: Mapped[dt.datetime | None] = mapped_column("ended_at", Timestamp, index=True)


class StateEntry:
    """The columns of one entry in a run's state history (flow runs' and task runs')."""

    type: Mapped[StateType] = mapped_column(state_type_column_type())
    name: Mapped[str] = mapped_column(sa.String(255))
    timestamp: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, server_default=NOW)
    message: Mapped[str | None] = mapped_column(sa.Text)
    data: Mapped[Any | None] = mapped_column(JSONDocument)


class FlowRunState(StateEntry, Base):
    """One entry in a flow run's state history."""

    __tablename__ = "flow_run_state"
    __table_args__ = (
        sa.Index("ix_flow_run_state__flow_run_id_timestamp", "flow_run_id", "timestamp"),
    )

    flow_run_id: Mapped[uuid.UUID] = mapped_column(_fk("flow_run.id", "CASCADE"))


class TaskRun(Base):
    """One execution of a task inside a flow run; ``dynamic_key`` tells repeated calls apart."""

    __tablename__ = "task_run"
    __table_args__ = (
        sa.UniqueConstraint("flow_run_id", "task_key", "dynamic_key"),
        sa.Index("ix_task_run__state_type_start_time", "state_type", "start_time"),
    )

    flow_run_id: Mapped[uuid.UUID] = mapped_column(_fk("flow_run.id", "CASCADE"))
    task_key: Mapped[str] = mapped_column(sa.String(255))
    dynamic_key: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(255))
    state_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("task_run_state.id", ondelete="SET NULL", use_alter=True), index=True
    )
    state_type: Mapped[StateType | None] = mapped_column(state_type_column_type())
    state_name: Mapped[str | None] = mapped_column(sa.String(255))
    run_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    start_time: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    end_time: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    tags: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )


class TaskRunState(StateEntry, Base):
    """One entry in a task run's state history."""

    __tablename__ = "task_run_state"
    __table_args__ = (
        sa.Index("ix_task_run_state__task_run_id_timestamp", "task_run_id", "timestamp"),
    )

    task_run_id: Mapped[uuid.UUID] = mapped_column(_fk("task_run.id", "CASCADE"))


class Log(Base):
    """A log line emitted by a flow run or task run; deleted with its run."""

    __tablename__ = "log"
    __table_args__ = (
        sa.Index("ix_log__flow_run_id_timestamp", "flow_run_id", "timestamp"),
        sa.Index("ix_log__task_run_id_timestamp", "task_run_id", "timestamp"),
    )

    name: Mapped[str] = mapped_column(sa.String(255))
    level: Mapped[int] = mapped_column(sa.SmallInteger)
    # NOT NULL since a1f5c7e9b3d2/b2a6d8f0c4e3: a line of a task run names its flow run too
    # (the server fills it from the task run).
    flow_run_id: Mapped[uuid.UUID] = mapped_column(_fk("flow_run.id", "CASCADE"))
    task_run_id: Mapped[uuid.UUID | None] = mapped_column(_fk("task_run.id", "CASCADE"))
    message: Mapped[str] = mapped_column(sa.Text)
    timestamp: Mapped[dt.datetime] = mapped_column(Timestamp)


class BlockType(Base):
    """A kind of configuration block (credentials, storage, ...)."""

    __tablename__ = "block_type"
    __table_args__ = (sa.UniqueConstraint("slug"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    slug: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    logo_url: Mapped[str | None] = mapped_column(sa.String(2048))


class BlockDocument(Base):
    """A stored configuration block of some block type."""

    __tablename__ = "block_document"
    __table_args__ = (sa.UniqueConstraint("block_type_id", "name"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    block_type_id: Mapped[uuid.UUID] = mapped_column(_fk("block_type.id", "CASCADE"))
    data: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, default=dict, server_default=_json_default("{}")
    )
    is_anonymous: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class ConcurrencyLimit(Base):
    """A limit on how many task runs with a given tag may run at once."""

    __tablename__ = "concurrency_limit"
    __table_args__ = (sa.UniqueConstraint("tag"),)

    tag: Mapped[str] = mapped_column(sa.String(255))
    concurrency_limit: Mapped[int] = mapped_column(sa.Integer)
    active_slots: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )


class Variable(Base):
    """A named value that flows can read at run time."""

    __tablename__ = "variable"
    __table_args__ = (sa.UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    value: Mapped[Any | None] = mapped_column(JSONDocument)
    tags: Mapped[list[str]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )


class Artifact(Base):
    """A result (table, link, markdown) published by a run; kept when the run is deleted."""

    __tablename__ = "artifact"

    key: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    type: Mapped[str | None] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    data: Mapped[Any | None] = mapped_column(JSONDocument)
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(
        _fk("flow_run.id", "SET NULL"), index=True
    )
    task_run_id: Mapped[uuid.UUID | None] = mapped_column(
        _fk("task_run.id", "SET NULL"), index=True
    )


class SavedSearch(Base):
    """A named set of UI filters."""

    __tablename__ = "saved_search"
    __table_args__ = (sa.UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(sa.String(255))
    filters: Mapped[list[Any]] = mapped_column(
        JSONDocument, default=list, server_default=_json_default("[]")
    )
