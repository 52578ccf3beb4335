"""The Kubernetes example names only what exists, and keeps a waiting replica alive.

Every manifest in ``deploy/kubernetes`` is parsed (PyYAML, present through the test
extra), every container's command is parsed by flowdb's own CLI, every ``FLOWDB_*``
variable is one flowdb reads and its value one it accepts, and the probes, ports and
rollout settings fit how a replica behaves while a migration job runs.
``test_rehearsal.py`` then runs the same commands and probes against real processes.
"""

from __future__ import annotations

from typing import Any

from tests.deploy import recipe


def workloads() -> list[dict[str, Any]]:
    return [d for d in recipe.documents() if d["kind"] in {"Job", "Deployment"}]


def api_container() -> dict[str, Any]:
    (container,) = recipe.containers(recipe.one("Deployment"))
    return container


def test_every_document_is_a_named_kubernetes_object() -> None:
    found = recipe.documents()
    assert {d["kind"] for d in found} == {"ConfigMap", "Secret", "Job", "Deployment", "Service"}
    for document in found:
        assert document["apiVersion"] in {"v1", "apps/v1", "batch/v1"}
        assert document["metadata"]["name"]


def test_every_container_runs_a_real_flowdb_command_with_real_valid_settings() -> None:
    for workload in workloads():
        for container in recipe.containers(workload):
            recipe.flowdb_command(recipe.container_command(container))
            env = recipe.container_env(container)
            assert recipe.unknown_settings(env) == [], container["name"]
            settings = recipe.settings_from(env)
            assert settings.database_url, "the Secret names the database"
            assert settings.api_credentials() is not None, "the API is not left open"


def test_the_job_upgrades_and_the_replicas_never_migrate() -> None:
    job = recipe.one("Job")
    (migrate,) = recipe.containers(job)
    path, options = recipe.flowdb_command(recipe.container_command(migrate))
    assert path == ["database", "upgrade"]
    assert options["yes"] and options["revision"] == "head" and not options["contract_now"]
    assert recipe.pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
    assert recipe.settings_from(recipe.container_env(migrate)).migrate_on_start is False

    replicas = recipe.settings_from(recipe.container_env(api_container()))
    assert replicas.migrate_on_start is False
    assert replicas.schema_wait_timeout > 0, "0 would fail before listening, not wait"
    # The Job migrates to the head of the code the replicas run: the same image.
    assert migrate["image"] == api_container()["image"]


def test_the_rollout_keeps_every_replica_until_its_successor_is_ready() -> None:
    spec = recipe.one("Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1


def test_liveness_asks_health_and_readiness_asks_ready_on_the_served_port() -> None:
    from flowdb.server.edges import OPEN_PATHS

    container = api_container()
    command = recipe.container_command(container)
    _, options = recipe.flowdb_command(command)
    live = [container["livenessProbe"], container["startupProbe"]]
    for probe in live:
        # /api/ready would restart a replica that waits for a long migration.
        assert probe["httpGet"]["path"] == "/api/health"
    ready = container["readinessProbe"]
    assert ready["httpGet"]["path"] == "/api/ready"
    for probe in [*live, ready]:
        assert recipe.probe_port(container, probe) == options["port"]
        # The Secret sets API credentials; probes send none, so they must be open paths.
        assert probe["httpGet"]["path"] in OPEN_PATHS
        assert probe["timeoutSeconds"] >= 1
    # A waiting replica answers /api/ready 503 for as long as the job runs; it must
    # only leave the endpoints, so readiness never doubles as a restart.
    assert ready["httpGet"]["path"] != container["livenessProbe"]["httpGet"]["path"]


def test_the_service_reaches_the_pods_and_the_home_folder_is_writable() -> None:
    deployment = recipe.one("Deployment")
    service = recipe.one("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in api_container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports

    user = recipe.only(recipe.containerfile(), "USER").text.partition(":")[0]
    for workload in workloads():
        pod = recipe.pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in recipe.containers(workload):
            home = str(recipe.settings_from(recipe.container_env(container)).home)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            # The root filesystem is read-only: FLOWDB_HOME must be a mounted volume.
            assert home in mounts and mounts[home] in volumes
