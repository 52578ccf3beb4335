"""The fast path: ``database upgrade`` and ``database current`` run without Typer.

Building the Typer app and letting it coerce option values (through pydantic
TypeAdapters in Typer 0.29) costs more than an upgrade at head or a read of the
revision on SQLite. The commands scripts and deployments run on every start are
recognised here from argv alone and run through the same bodies
(``cli.migrating.upgrade``, ``cli.current_view.current``) and the same edge
(``cli.edge``). Anything else, or anything this parser is not sure of (``--help``, an
unknown or repeated option, ``--opt=value`` of a flag, ``-yr``, ``--``), goes to the
Typer app, so help and usage errors stay Typer's. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Callable

#: Per command: its flags (option -> parameter) and its options that take a value.
_FLAGS: dict[str, dict[str, str]] = {
    "upgrade": {
        "-y": "yes",
        "--yes": "yes",
        "--json": "as_json",
        "--contract-now": "contract_now",
        "--accept-changed-revisions": "accept_changed",
    },
    "current": {"--json": "as_json"},
}
_VALUED: dict[str, dict[str, str]] = {
    "upgrade": {"-r": "revision", "--revision": "revision"},
    "current": {},
}


def parse(argv: list[str]) -> tuple[str, dict[str, object]] | None:
    """``(command, options given)`` when ``argv`` is a fast-path command, else ``None``."""
    if len(argv) < 2 or argv[0] != "database" or argv[1] not in _FLAGS:
        return None
    command = argv[1]
    flags, valued = _FLAGS[command], _VALUED[command]
    given: dict[str, object] = {}
    rest = argv[2:]
    index = 0
    while index < len(rest):
        word = rest[index]
        name, equals, value = word.partition("=")
        answer: object
        if word in flags:
            parameter, answer = flags[word], True
        elif name in valued and name.startswith("--") and equals:
            parameter, answer = valued[name], value
        elif word in valued and index + 1 < len(rest):
            parameter, answer = valued[word], rest[index + 1]
            index += 1
        else:
            return None  # help, an unknown option, an argument: Typer says what it is
        if parameter in given:
            return None  # repeated: Typer's rules decide which one counts
        given[parameter] = answer
        index += 1
    return command, given


def command_for(argv: list[str]) -> Callable[[], object] | None:
    """What running ``flowdb ARGV`` does, when the fast path can run it; else ``None``."""
    parsed = parse(argv)
    if parsed is None:
        return None
    command, given = parsed
    if command == "current":
        as_json = bool(given.get("as_json", False))

        def current() -> None:
            from flowdb.cli.current_view import current

            current(as_json)

        return current

    def upgrade() -> None:
        from flowdb.cli.migrating import upgrade

        upgrade(
            revision=str(given.get("revision", "head")),
            yes=bool(given.get("yes", False)),
            dry_run=False,
            accept_changed=bool(given.get("accept_changed", False)),
            contract_now=bool(given.get("contract_now", False)),
            as_json=bool(given.get("as_json", False)),
        )

    return upgrade
