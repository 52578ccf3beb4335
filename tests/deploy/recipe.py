"""Reading the deployment recipe (``Containerfile``, ``deploy/kubernetes/*.yaml``) as data.

The tests of ``tests/deploy`` check what these files name against flowdb itself (its
CLI, its settings, its routes) and rehearse the commands and probes they describe, so
the helpers here parse the files the way a container engine and Kubernetes read them;
they never carry a copy of a value the files hold.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"


@dataclass(frozen=True)
class Instruction:
    """One instruction of a Containerfile: its keyword (upper case) and its text."""

    keyword: str
    text: str

    def words(self) -> list[str]:
        """The arguments: the JSON array form as it is, the shell form split as a shell would."""
        if self.text.startswith("["):
            words = json.loads(self.text)
            assert isinstance(words, list) and all(isinstance(w, str) for w in words)
            return words
        return shlex.split(self.text)


def containerfile() -> list[Instruction]:
    """The Containerfile's instructions in order (comments dropped, continued lines joined)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, text = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), text.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return instructions


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    """The one instruction of this keyword that takes effect (the last one, as engines read)."""
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"the Containerfile has no {keyword}"
    return found[-1]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """Every variable the ``ENV`` instructions set (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for word in instruction.words():
                name, equals, value = word.partition("=")
                assert equals, f"ENV {word!r} is not NAME=value"
                env[name] = value
    return env


def documents() -> list[dict[str, Any]]:
    """Every Kubernetes object in ``deploy/kubernetes/*.yaml``, each file read strictly."""
    found: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
                found.append(document)
    return found


def one(kind: str) -> dict[str, Any]:
    """The one object of ``kind`` in the recipe."""
    found = [d for d in documents() if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Job or a Deployment."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a workload, init containers first (the order a pod runs them)."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_command(container: dict[str, Any]) -> list[str]:
    """What the container runs: its ``command`` or the image's ENTRYPOINT, then its args."""
    entrypoint = container.get("command") or only(containerfile(), "ENTRYPOINT").words()
    args = container.get("args")
    if args is None and "command" not in container:
        args = only(containerfile(), "CMD").words()
    return [*entrypoint, *(args or [])]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: the image's, then ``envFrom`` sources, then ``env``."""
    env = image_env(containerfile())
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents()}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
        elif "secretRef" in source:
            env.update(objects["Secret", source["secretRef"]["name"]]["stringData"])
        else:
            raise AssertionError(f"an envFrom source this helper cannot read: {source}")
    for entry in container.get("env", []):
        assert "value" in entry, f"{entry['name']}: only literal values are read here"
        env[entry["name"]] = entry["value"]
    return env


def option(command: list[str], name: str) -> str:
    """The value given to ``name`` (``--port 4200`` form) in a command line."""
    assert command.count(name) == 1, f"{name} is not given once in {command}"
    return command[command.index(name) + 1]


def with_option(command: list[str], name: str, value: str) -> list[str]:
    """The command line with ``name``'s value replaced (a free port for a local rehearsal)."""
    changed = list(command)
    changed[changed.index(name) + 1] = value
    return changed


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    """The container port a probe's ``httpGet`` asks, resolving a named port."""
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"the probe names port {port!r}, which the container does not declare"
    return int(named[port])


def flowdb_command(command: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse ``flowdb ...`` with flowdb's own CLI, as a run would, without running it.

    Returns the subcommand path (``["database", "upgrade"]``) and the parsed options;
    raises the CLI's usage error for an unknown command, an unknown option or a value
    it refuses (``--port 0``), so a recipe naming what flowdb does not take fails here.
    """
    import typer
    from typer.core import TyperGroup

    from flowdb.cli.root import app

    assert command[:1] == ["flowdb"], f"not a flowdb command: {command}"
    group = typer.main.get_command(app)
    remaining = command[1:]
    path: list[str] = []
    context = None
    current: Any = group
    while isinstance(current, TyperGroup):
        assert remaining, f"{' '.join(command)} names no subcommand"
        name = remaining.pop(0)
        context = current.make_context(path[-1] if path else "flowdb", [name], parent=context)
        found = current.get_command(context, name)
        if found is None:
            raise ValueError(f"flowdb {' '.join(path)} has no command {name!r}")
        path.append(name)
        current = found
    leaf = current.make_context(path[-1], list(remaining), parent=context)
    return path, dict(leaf.params)


def unknown_settings(env: dict[str, str]) -> list[str]:
    """The ``FLOWDB_*`` names in ``env`` that flowdb's settings do not read."""
    from dataclasses import fields as dataclass_fields

    from flowdb.settings import ENV_PREFIX, Settings

    fields = {item.name for item in dataclass_fields(Settings)}
    return sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in fields
    )


def settings_from(env: dict[str, str]) -> Any:
    """flowdb's ``Settings`` built from the ``FLOWDB_*`` values of ``env`` (validated)."""
    from flowdb.settings import ENV_PREFIX, Settings

    return Settings(
        **{
            name[len(ENV_PREFIX) :].lower(): value
            for name, value in env.items()
            if name.startswith(ENV_PREFIX)
        }
    )
