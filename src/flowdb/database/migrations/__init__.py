"""flowdb's one migration history, shared by SQLite and PostgreSQL.

Revision files live in ``versions/``. They never import the ORM models: a migration
is frozen at the moment it was written, so each one spells out its tables itself
(with helpers from ``helpers``, which only ever grows).
"""
