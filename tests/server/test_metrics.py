"""``/metrics``: Prometheus' text format from the real app on every dialect.

The exposition parses with prometheus_client's own parser; request counts and latency
histograms move with requests, under the route's template; the pools and the migration
state are there; a migration job running part way shows its rows, its lock and the
revision it started from; the route follows the credentials and can be turned off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flowdb.database.history import load_history

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    """Every sample of ``/metrics``, parsed, keyed by name and labels."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_requests_are_counted_and_timed_by_route_template(api: TestClient) -> None:
    before = scrape(api)
    created = api.post("/api/flows", json={"name": f"metrics-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201
    flow_id = created.json()["id"]
    for _ in range(3):
        assert api.get(f"/api/flows/{flow_id}").status_code == 200
    assert api.get(f"/api/flows/{uuid.uuid4()}").status_code == 404
    assert api.get("/no/such/path").status_code == 404
    after = scrape(api)

    template = "/api/flows/{flow_id}"
    ok = {"method": "GET", "route": template, "status": "200"}
    assert (value(before, "flowdb_http_requests_total", **ok) or 0) == 0
    assert value(after, "flowdb_http_requests_total", **ok) == 3
    assert value(after, "flowdb_http_request_duration_seconds_count", **ok) == 3
    assert (value(after, "flowdb_http_request_duration_seconds_sum", **ok) or 0) > 0
    inf = value(after, "flowdb_http_request_duration_seconds_bucket", **ok, le="+Inf")
    assert inf == 3
    missing = {"method": "GET", "route": template, "status": "404"}
    assert value(after, "flowdb_http_requests_total", **missing) == 1
    posted = {"method": "POST", "route": "/api/flows", "status": "201"}
    assert value(after, "flowdb_http_requests_total", **posted) == 1
    # No raw path is ever a label: unknown paths share one series.
    stray = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "flowdb_http_requests_total", **stray) == 1
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert not any(route and flow_id in route for route in routes)
    # The first scrape is counted by the second.
    scraped = {"method": "GET", "route": "/metrics", "status": "200"}
    assert (value(after, "flowdb_http_requests_total", **scraped) or 0) >= 1


def test_pools_and_migration_state_are_exposed(api: TestClient) -> None:
    head = load_history().head
    assert api.get("/api/flows").status_code == 200  # the read engine's pool exists
    samples = scrape(api)

    assert value(samples, "flowdb_migration_state_up") == 1
    assert value(samples, "flowdb_schema_revision_info", revision=str(head)) == 1
    assert value(samples, "flowdb_schema_head_info", revision=str(head)) == 1
    assert value(samples, "flowdb_schema_at_head") == 1
    assert value(samples, "flowdb_migration_lock_held") == 0
    assert value(samples, "flowdb_migration_pending_contract_revisions") == 0
    from flowdb import __version__

    assert (value(samples, "flowdb_replicas_alive", release=__version__) or 0) >= 1
    size = value(samples, "flowdb_database_pool_size", engine="write")
    assert size is not None and size >= 1
    checked_out = value(samples, "flowdb_database_pool_checked_out", engine="write")
    assert checked_out is not None and 0 <= checked_out <= size
    assert value(samples, "flowdb_database_pool_overflow", engine="write") is not None
    assert not [key for key in samples if key[0] == "flowdb_migration_rows_done"]


@contextmanager
def slow_job(url: str, seconds: float, total: int) -> Iterator[subprocess.Popen[str]]:
    """``tests.server.slow_migration``: holds the lock and records a backfill's progress.

    At the end of the block the job is told to finish (it records head and releases the
    lock then, rather than at the end of ``seconds``) and must exit 0.
    """
    job = subprocess.Popen(
        [sys.executable, "-m", "tests.server.slow_migration", str(seconds), str(total)],
        env={**os.environ, "FLOWDB_DATABASE_URL": url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert job.stdin is not None and job.stdout is not None
        assert job.stdout.readline().strip() == "locked"
        yield job
        job.stdin.write("finish\n")
        job.stdin.flush()
        assert job.wait(timeout=120) == 0
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_a_migration_part_way_shows_its_rows_and_lock(
    api: TestClient, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server import metrics
    from tests.dbtools import set_revision

    monkeypatch.setattr(metrics, "STATE_EVERY_SECONDS", 0.0)  # read the state at each scrape
    history = load_history()
    previous = history.revisions[-2].id
    set_revision(configured, previous)  # the job's last migration runs
    with slow_job(configured, seconds=20, total=5000) as job:
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(api)
            labels = {"revision": str(history.head), "phase": "backfill"}
            done = value(samples, "flowdb_migration_rows_done", **labels)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before a scrape saw it"
        assert value(samples, "flowdb_migration_state_up") == 1
        assert done is not None and 0 < done < 5000
        assert value(samples, "flowdb_migration_rows_total", **labels) == 5000
        assert value(samples, "flowdb_migration_part_way", **labels) == 1
        assert value(samples, "flowdb_migration_lock_held") == 1
        assert value(samples, "flowdb_schema_revision_info", revision=previous) == 1
        assert value(samples, "flowdb_schema_at_head") == 0
    finished = scrape(api)
    assert value(finished, "flowdb_migration_lock_held") == 0
    assert value(finished, "flowdb_schema_at_head") == 1
    assert not [key for key in finished if key[0] == "flowdb_migration_rows_done"]


def test_metrics_need_the_credentials_and_can_be_turned_off(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", "bearer:tok_metrics")
    with TestClient(create_app()) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert "www-authenticate" in refused.headers
        samples = scrape(client, Authorization="Bearer tok_metrics")
        # The refusal was counted too, under its route.
        assert value(
            samples, "flowdb_http_requests_total", method="GET", route="/metrics", status="401"
        )
    monkeypatch.delenv("FLOWDB_SERVER_API_AUTH")
    monkeypatch.setenv("FLOWDB_SERVER_METRICS", "false")
    with TestClient(create_app()) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/api/health").status_code == 200


def test_each_response_carries_a_request_id(api: TestClient) -> None:
    chosen = api.get("/api/health", headers={"X-Request-ID": "trace-42.abc"})
    assert chosen.headers["x-request-id"] == "trace-42.abc"
    first = api.get("/api/health").headers["x-request-id"]
    second = api.get("/api/health").headers["x-request-id"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second
    # An id with spaces or too long is not echoed (log injection): a new one is made.
    odd = api.get("/api/health", headers={"X-Request-ID": "a b"}).headers["x-request-id"]
    assert odd != "a b" and len(odd) == 32
    refused = api.get("/api/flows/not-a-uuid", headers={"X-Request-ID": "r-1"})
    assert refused.status_code == 422
    assert refused.headers["x-request-id"] == "r-1"
