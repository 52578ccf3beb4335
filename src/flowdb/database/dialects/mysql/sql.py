"""The SQL MySQL writes its own way, for migration helpers and commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class MysqlSql:
    """MySQL's spelling of the SQL that ``base.Dialect`` writes in standard SQL (a mixin)."""

    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """``DROP TABLE IF EXISTS`` each table; enums live in columns.

        Foreign key checks are off for the drops: flow_run and flow_run_state refer to
        each other, and MySQL has no ``CASCADE`` for ``DROP TABLE``.
        """
        drops = [f"DROP TABLE IF EXISTS `{name}`" for name in tables]
        return ["SET FOREIGN_KEY_CHECKS = 0", *drops, "SET FOREIGN_KEY_CHECKS = 1"]

    def clear_statements(self, tables: list[str]) -> list[str]:
        """``DELETE`` every row of each table, children first (foreign keys stay checked)."""
        return [f"DELETE FROM `{name}`" for name in tables]

    def count_rows(self, connection: Connection, table: str, column: str | None = None) -> int:
        """Rows of ``table`` (with a non-null ``column`` when given), backtick-quoted."""
        import sqlalchemy as sa

        where = f" WHERE `{column}` IS NOT NULL" if column else ""
        value = connection.execute(sa.text(f"SELECT count(*) FROM `{table}`{where}")).scalar()
        return int(value or 0)

    @staticmethod
    def text_position(needle: str, column: str) -> str:
        """``LOCATE``."""
        return f"LOCATE('{needle}', {column})"

    @staticmethod
    def timestamp_type() -> Any:
        """``DATETIME(6)``: microseconds, like the other dialects (plain DATETIME has none)."""
        from sqlalchemy.dialects import mysql

        return mysql.DATETIME(fsp=6)

    @staticmethod
    def as_text(expression: str) -> str:
        """``CAST(... AS CHAR)``: MySQL casts to CHAR, not TEXT."""
        return f"CAST({expression} AS CHAR)"

    @staticmethod
    def upsert_update(key: str, columns: list[str]) -> str:
        """``ON DUPLICATE KEY UPDATE c = VALUES(c)``."""
        updates = ", ".join(f"{column} = VALUES({column})" for column in columns)
        return f"ON DUPLICATE KEY UPDATE {updates}"

    @staticmethod
    def drop_index_if_exists(name: str) -> str:
        """``DROP INDEX IF EXISTS name ON table``: the table from flowdb's ``ix_<table>__``."""
        table = name.removeprefix("ix_").split("__", 1)[0]
        return f"DROP INDEX IF EXISTS {name} ON {table}"

    @classmethod
    def set_not_null(cls, connection: Connection, table: str, column: str) -> str:
        """``MODIFY`` the column with its current type, NOT NULL (MySQL has no SET NOT NULL)."""
        import sqlalchemy as sa

        column_type = connection.execute(
            sa.text(
                "SELECT column_type FROM information_schema.columns WHERE table_schema = "
                "DATABASE() AND table_name = :table AND column_name = :column"
            ),
            {"table": table, "column": column},
        ).scalar()
        return f"ALTER TABLE {table} MODIFY {column} {column_type} NOT NULL"

    @classmethod
    def has_constraint(cls, connection: Connection, table: str, name: str) -> bool:
        """From ``information_schema.table_constraints`` of the current database."""
        import sqlalchemy as sa

        found = connection.execute(
            sa.text(
                "SELECT 1 FROM information_schema.table_constraints WHERE constraint_schema = "
                "DATABASE() AND table_name = :table AND constraint_name = :name"
            ),
            {"table": table, "name": name},
        ).first()
        return found is not None
