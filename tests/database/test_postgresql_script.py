"""pg_dump's script is cut and unqualified on its tokens, so data and names survive (issue 19).

The snapshot dump once removed ``<schema>.`` by text replacement over the whole dump and
cut it with a regular expression: a row or a name holding ``public.`` or ``;`` and a
line break came out changed. These dump a real schema whose rows and names hold
exactly that, install the statements in another schema and compare.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flowdb.database.dialects.postgresql import catalogue, script

TRICKY = [
    "tenant.flow_run; DROP TABLE x;\n\nSELECT 1",
    "it''s $$ not $body$ a /* comment */ -- nor this\n;",
    "tenant.",
]


def test_tokens_give_back_the_script_exactly() -> None:
    text = (
        "CREATE TABLE tenant.\"we;ird\" (a text DEFAULT 'x;\n y' /* c; /* nested */ */);\n"
        "-- a comment; with tenant.t\n\\restrict abc\n"
        "SELECT E'back\\'slash;', $f$ body; tenant.t $f$, 'it''s';"
    )
    assert script.text(script.tokens(text)) == text
    found = [script.text(s) for s in script.statements(text)]
    # Comments and meta-commands are left out of the statements.
    assert found == [
        "CREATE TABLE tenant.\"we;ird\" (a text DEFAULT 'x;\n y' )",
        "SELECT E'back\\'slash;', $f$ body; tenant.t $f$, 'it''s'",
    ]


def test_only_qualifiers_lose_the_schema() -> None:
    statement = script.statements(
        "ALTER TABLE ONLY tenant.t ADD CONSTRAINT c FOREIGN KEY (a) REFERENCES "
        "\"tenant\".u(b) DEFAULT nextval('tenant.t_id_seq'::regclass) "
        "CHECK (note <> 'tenant.t') AND tenanted.x = 1"
    )[0]
    assert script.text(script.unqualified(statement, "tenant")) == (
        "ALTER TABLE ONLY t ADD CONSTRAINT c FOREIGN KEY (a) REFERENCES "
        "u(b) DEFAULT nextval('t_id_seq'::regclass) "
        "CHECK (note <> 'tenant.t') AND tenanted.x = 1"
    )
    setval = script.statements("SELECT pg_catalog.setval('tenant.t_id_seq', 3, true);")[0]
    assert script.text(script.unqualified(setval, "tenant")) == (
        "SELECT pg_catalog.setval('t_id_seq', 3, true)"
    )


@pytest.mark.parametrize(
    "broken", ["SELECT 'open", 'SELECT "open', "SELECT $x$ open", "/* open /* */"]
)
def test_an_unterminated_token_is_refused(broken: str) -> None:
    with pytest.raises(script.ScriptError):
        script.tokens(broken)


def test_a_dump_with_tricky_rows_and_names_installs_the_same_rows(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA tenant"))
            connection.execute(
                sa.text(
                    'CREATE TABLE tenant."tenant.notes; x" '
                    "(id serial PRIMARY KEY, body text NOT NULL DEFAULT 'tenant.none')"
                )
            )
            for body in TRICKY:
                connection.execute(
                    sa.text('INSERT INTO tenant."tenant.notes; x" (body) VALUES (:body)'),
                    {"body": body.replace("''", "'")},
                )
        statements = catalogue.dump(engine.url, "tenant", frozenset())
        assert not any(s.upper().startswith(("SET ", "CREATE SCHEMA")) for s in statements)
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA copy"))
            connection.execute(sa.text("SET LOCAL search_path TO copy"))
            for statement in statements:
                connection.exec_driver_sql(statement)
        with engine.connect() as connection:
            rows = {
                schema: connection.execute(
                    sa.text(f'SELECT id, body FROM {schema}."tenant.notes; x" ORDER BY id')
                ).all()
                for schema in ("tenant", "copy")
            }
            default = connection.execute(
                sa.text(
                    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
                    "JOIN pg_class c ON c.oid = d.adrelid JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'copy' ORDER BY d.adnum"
                )
            ).scalars()
            defaults = list(default)
        assert rows["copy"] == rows["tenant"]
        assert [body for _, body in rows["copy"]] == [b.replace("''", "'") for b in TRICKY]
        # The serial's sequence is the copy's own, and the text default kept its 'tenant.'.
        assert defaults == [
            "nextval('copy.\"tenant.notes; x_id_seq\"'::regclass)",
            "'tenant.none'::text",
        ]
    finally:
        engine.dispose()
