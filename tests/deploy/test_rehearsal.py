"""The Kubernetes recipe rehearsed with local processes on PostgreSQL.

The commands, the environment and the probes are read from ``deploy/kubernetes`` and
the ``Containerfile`` (``recipe``), then run as a cluster would run them: the
migration Job is ``flowdb database upgrade -y`` in a subprocess, each replica is the
Deployment's ``flowdb server start`` on a free loopback port, and the probes ask the
paths the manifests name, as the kubelet does. A manifest that drifts from what
flowdb does (a command, a setting, a probe path) breaks this test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flowdb.database.history import load_history
from tests import web
from tests.deploy import recipe
from tests.server.test_start import free_port


def executable(command: list[str]) -> list[str]:
    """The command with ``flowdb`` (the image's entrypoint) as this environment's script."""
    assert command[0] == "flowdb"
    script = shutil.which("flowdb", path=str(Path(sys.executable).parent))
    return [script, *command[1:]] if script else [sys.executable, "-m", "flowdb", *command[1:]]


def environment(container: dict[str, Any], url: str, home: Path) -> dict[str, str]:
    """The container's variables from the manifests, pointed at the test's database.

    The Secret's URL keeps its scheme (dialect and driver); only where it points
    changes. ``FLOWDB_HOME`` becomes a temporary folder (the image's volume).
    """
    env = recipe.container_env(container)
    scheme = env["FLOWDB_DATABASE_URL"].split("://", 1)[0]
    local = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    return {
        **local,
        **env,
        "FLOWDB_DATABASE_URL": f"{scheme}://{url.split('://', 1)[1]}",
        "FLOWDB_HOME": str(home),
    }


@dataclass
class Pod:
    """One replica of the Deployment, as a local process; probed as the kubelet probes."""

    container: dict[str, Any]
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    def start(self) -> Pod:
        command = recipe.container_command(self.container)
        command = recipe.with_option(command, "--host", "127.0.0.1")
        command = recipe.with_option(command, "--port", str(self.port))
        self.process = subprocess.Popen(
            executable(command),
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def probe(self, name: str) -> int | None:
        """The status the named probe gets now (None: connection refused or timed out)."""
        assert self.process is not None and self.process.poll() is None, self.exited()
        spec = self.container[name]
        assert (
            recipe.probe_port(self.container, spec)
            == recipe.flowdb_command(recipe.container_command(self.container))[1]["port"]
        )
        try:
            answer = web.get(
                f"http://127.0.0.1:{self.port}{spec['httpGet']['path']}",
                timeout=spec["timeoutSeconds"],
            )
        except httpx.TransportError:
            return None
        return answer.status_code

    def started(self) -> None:
        """Wait as the startup probe does: liveness 200 within its failure budget."""
        spec = self.container["startupProbe"]
        budget = spec["periodSeconds"] * spec["failureThreshold"]
        until(lambda: self.probe("startupProbe") == 200, within=budget)

    def ready(self, within: float = 60) -> None:
        until(lambda: self.probe("readinessProbe") == 200, within=within)

    def stop(self) -> str:
        """SIGTERM, as the kubelet ends a pod; returns its stderr."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr

    def exited(self) -> str:
        assert self.process is not None
        _, stderr = self.process.communicate(timeout=10)
        return f"the replica exited with {self.process.returncode}: {stderr[-2000:]}"


def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {within} s"
        time.sleep(0.2)


@contextmanager
def pods(container: dict[str, Any], env: dict[str, str]) -> Iterator[Callable[[], Pod]]:
    """Start pods with ``start()``; every one still running is stopped afterwards."""
    started: list[Pod] = []

    def start() -> Pod:
        pod = Pod(container, env).start()
        started.append(pod)
        return pod

    try:
        yield start
    finally:
        for pod in started:
            assert "Traceback" not in pod.stop()


def run_job(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The migration Job's container, run to its end."""
    (container,) = recipe.containers(recipe.one("Job"))
    return subprocess.run(
        executable(recipe.container_command(container)),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def current(env: dict[str, str]) -> dict[str, Any]:
    """``flowdb database current --json`` with the Job's settings."""
    done = subprocess.run(
        executable(["flowdb", "database", "current", "--json"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def api_container() -> dict[str, Any]:
    (container,) = recipe.containers(recipe.one("Deployment"))
    return container


def job_container() -> dict[str, Any]:
    (container,) = recipe.containers(recipe.one("Job"))
    return container


def test_a_fresh_install_and_a_rolling_restart_as_kubernetes_runs_them(
    postgres_url: str, tmp_path: Path
) -> None:
    head = load_history().head
    replica_env = environment(api_container(), postgres_url, tmp_path / "replica")
    job_env = environment(job_container(), postgres_url, tmp_path / "job")
    token = recipe.settings_from(replica_env).api_credentials()
    assert token is not None and token.scheme == "bearer"
    auth = {"Authorization": f"Bearer {token.secret}"}

    with pods(api_container(), replica_env) as start:
        # The Deployment before its Job (no init container): the pod listens and waits.
        early = start()
        early.started()
        assert early.probe("readinessProbe") == 503
        assert early.probe("livenessProbe") == 200
        waiting = web.get(f"http://127.0.0.1:{early.port}/api/ready", timeout=5).json()
        assert waiting["waiting"]["head"] == head
        refused = web.get(f"http://127.0.0.1:{early.port}/api/flows", headers=auth, timeout=5)
        assert refused.status_code == 503

        # The Job, with a second pod starting meanwhile (pods and Job start in any order).
        second = start()
        job = run_job(job_env)
        assert job.returncode == 0, job.stderr
        assert f"is at {head}" in job.stdout + job.stderr
        early.ready()
        assert early.probe("livenessProbe") == 200
        second.started()
        second.ready()

        # The Secret's credentials guard the API; the probes' paths stay open.
        base = f"http://127.0.0.1:{second.port}"
        assert web.get(f"{base}/api/flows", timeout=5).status_code == 401
        made = web.post(f"{base}/api/flows", json={"name": "etl"}, headers=auth, timeout=5)
        assert made.status_code == 201, made.text

        # The image's HEALTHCHECK command, as the engine runs it, on this port.
        check = recipe.only(recipe.containerfile(), "HEALTHCHECK").text.partition("CMD ")[2]
        words = json.loads(check)
        exposed = recipe.only(recipe.containerfile(), "EXPOSE").text
        words = [sys.executable if w == "python" else w for w in words]
        words = [w.replace(f":{exposed}/", f":{second.port}/") for w in words]
        assert subprocess.run(words, timeout=30).returncode == 0

        # A rolling restart (maxSurge 1, maxUnavailable 0): a new pod first, ready,
        # then the old one ends; the other replica answers ready at every probe.
        surge = start()
        surge.started()
        surge.ready()
        assert early.process is not None
        early.process.send_signal(signal.SIGTERM)
        probes = 0
        while early.process.poll() is None:
            assert second.probe("readinessProbe") == 200
            probes += 1
            time.sleep(0.1)
        assert probes >= 1
        stderr = early.stop()
        assert early.process.returncode == 128 + signal.SIGTERM, stderr
        assert "Traceback" not in stderr
        assert second.probe("readinessProbe") == 200
        assert surge.probe("readinessProbe") == 200
        served = web.get(f"http://127.0.0.1:{surge.port}/api/flows", headers=auth, timeout=5)
        assert [flow["name"] for flow in served.json()] == ["etl"]

        # The fleet as the next Job sees it: at head, the two pods serving, nothing held.
        state = current(job_env)
        assert state["revision"] == head and state["at_head"] is True
        assert state["pending_contract"] is None
        assert sorted(r["pid"] for r in state["replicas"]) == sorted(
            [p.process.pid for p in (second, surge) if p.process is not None]
        )


def test_an_upgrade_past_an_older_release_stops_before_the_contract_until_the_job_reruns(
    postgres_url: str, tmp_path: Path
) -> None:
    """README's sequence: the Job expands while the old pods serve, the rerun contracts.

    The previous release's pod is its heartbeat row (``fleet.beat``, what its server
    writes) at the revision before the last expand and contract pair; its clean stop
    is ``fleet.leave``, what its server does on SIGTERM.
    """
    import dataclasses

    from flowdb.database import fleet
    from flowdb.database.target import Database

    history = load_history()
    contract = history.revisions[-1]
    expand = history.revisions[-2]
    previous = history.revisions[-3].id
    assert (expand.phase, contract.phase) == ("expand", "contract")
    job_env = environment(job_container(), postgres_url, tmp_path / "job")
    replica_env = environment(api_container(), postgres_url, tmp_path / "replica")
    before = subprocess.run(
        executable(["flowdb", "database", "upgrade", "-r", previous, "-y"]),
        env=job_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert before.returncode == 0, before.stderr
    database = Database.from_url(job_env["FLOWDB_DATABASE_URL"])
    old_pod = dataclasses.replace(fleet.new_replica(previous), host="flowdb-old-pod", pid=7)
    fleet.beat(database, old_pod)

    with pods(api_container(), replica_env) as start:
        # The new release's pod starts with its Job (no init container): behind by an
        # expand revision, it listens and waits.
        new = start()
        new.started()
        assert new.probe("readinessProbe") == 503

        first = run_job(job_env)
        assert first.returncode == 0, first.stderr
        assert f"is at {expand.id}" in first.stdout + first.stderr
        assert f"Stopped before contract {contract.id}" in first.stderr
        assert "flowdb-old-pod:7" in first.stderr
        # Behind by the contract only, the new release serves beside the old pod: the
        # rollout can go on (maxUnavailable 0 keeps the old pod until this one is ready).
        new.ready()
        assert new.probe("livenessProbe") == 200
        fleet.leave(database, old_pod)  # the rollout ended the old pod

        second = run_job(job_env)  # the Job applied again after the rollout
        assert second.returncode == 0, second.stderr
        assert "Stopped before contract" not in second.stderr
        state = current(job_env)
        assert state["revision"] == history.head and state["pending_contract"] is None
        assert new.probe("readinessProbe") == 200
        assert new.probe("livenessProbe") == 200
