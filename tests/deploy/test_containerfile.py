"""The Containerfile names only what exists: flowdb's commands, settings, extras and routes.

No container engine runs here, so the file is read as data and every name in it is
checked against the package it builds; a renamed command, setting or route fails
this test instead of an image at deploy time. ``test_rehearsal.py`` runs its health
check against a real server.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from urllib.parse import urlsplit

import pytest

from tests.deploy import recipe

#: Programs a RUN may call: Debian's base tools in python:*-slim, and pip.
BASE_IMAGE_PROGRAMS = frozenset({"groupadd", "useradd", "pip", "rm"})


def pyproject() -> dict[str, object]:
    with (recipe.ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def healthcheck_url(instruction: recipe.Instruction) -> str:
    """The URL the HEALTHCHECK's command asks (its one ``http://`` literal)."""
    command = instruction.text.partition("CMD ")[2]
    urls = re.findall(r"http://[^'\" ]+", command)
    assert len(urls) == 1, f"expected one URL in the health check, found {urls}"
    return urls[0]


def test_the_image_is_a_slim_python_the_package_supports() -> None:
    base = recipe.only(recipe.containerfile(), "FROM").words()[0]
    found = re.fullmatch(r"python:3\.(\d+)-slim", base)
    assert found, f"the base image is {base}, not a slim Python"
    project = pyproject()["project"]
    assert isinstance(project, dict)
    needed = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert needed is not None
    assert int(found[1]) >= int(needed[1])


def test_every_program_it_runs_is_there_and_pip_installs_the_server_extra() -> None:
    instructions = recipe.containerfile()
    installed: list[str] = []
    for run in (i for i in instructions if i.keyword == "RUN"):
        for command in run.text.split("&&"):
            words = shlex.split(command)
            assert words[0] in BASE_IMAGE_PROGRAMS, f"RUN calls {words[0]}"
            if words[:2] == ["pip", "install"]:
                installed += words[2:]
    assert installed == [".[server]"]
    extras = pyproject()["project"]
    assert isinstance(extras, dict)
    assert "server" in extras["optional-dependencies"]
    copied = [source for i in instructions if i.keyword == "COPY" for source in i.words()[:-1]]
    assert "src" in copied and "pyproject.toml" in copied
    readme = extras["readme"]
    assert readme in copied, "the package's readme must be in the build context"
    for source in copied:
        assert (recipe.ROOT / source).exists(), f"COPY {source}: no such file"


def test_it_runs_as_a_non_root_user_it_creates() -> None:
    instructions = recipe.containerfile()
    user, _, group = recipe.only(instructions, "USER").text.partition(":")
    assert user.isdigit() and int(user) != 0, "a numeric uid lets runAsNonRoot check it"
    created = " ".join(i.text for i in instructions if i.keyword == "RUN")
    assert f"useradd --system --uid {user} " in created
    assert not group or f"--gid {group} " in created


def test_every_setting_it_names_is_real_and_flowdb_home_is_a_volume() -> None:
    instructions = recipe.containerfile()
    env = recipe.image_env(instructions)
    assert recipe.unknown_settings(env) == []
    settings = recipe.settings_from(env)  # each value valid for its setting
    volumes = recipe.only(instructions, "VOLUME").words()
    assert str(settings.home) in volumes


def test_the_checks_refuse_what_flowdb_does_not_have() -> None:
    """The checks above can fail: a made-up setting, command or option is found out."""
    assert recipe.unknown_settings({"FLOWDB_SCHEMA_WAIT": "60", "PATH": "/bin"}) == [
        "FLOWDB_SCHEMA_WAIT"
    ]
    with pytest.raises(ValueError, match="no command 'serve'"):
        recipe.flowdb_command(["flowdb", "server", "serve"])
    with pytest.raises(Exception, match="--listen"):
        recipe.flowdb_command(["flowdb", "server", "start", "--listen", "0.0.0.0"])
    with pytest.raises(Exception, match="greater than or equal to 1"):
        recipe.flowdb_command(["flowdb", "server", "start", "--port", "0"])


def test_the_entrypoint_and_default_command_are_flowdb_serving_on_the_exposed_port() -> None:
    instructions = recipe.containerfile()
    entrypoint = recipe.only(instructions, "ENTRYPOINT").words()
    scripts = pyproject()["project"]
    assert isinstance(scripts, dict)
    assert entrypoint == ["flowdb"] and "flowdb" in scripts["scripts"]
    command = entrypoint + recipe.only(instructions, "CMD").words()
    path, options = recipe.flowdb_command(command)
    assert path == ["server", "start"]
    assert options["host"] == "0.0.0.0"  # reachable from outside the container
    exposed = recipe.only(instructions, "EXPOSE").words()
    assert exposed == [str(options["port"])]


def test_the_health_check_asks_the_open_liveness_route_on_the_served_port() -> None:
    from flowdb.server.app import create_app
    from flowdb.server.edges import OPEN_PATHS

    instructions = recipe.containerfile()
    url = urlsplit(healthcheck_url(recipe.only(instructions, "HEALTHCHECK")))
    assert url.hostname == "127.0.0.1"
    assert [str(url.port)] == recipe.only(instructions, "EXPOSE").words()
    assert url.path == "/api/health"
    assert url.path in create_app().openapi()["paths"]
    assert url.path in OPEN_PATHS, "a health check sends no credentials"
