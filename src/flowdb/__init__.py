"""flowdb: the database layer of a workflow-orchestration REST API.

Importing this package is cheap on purpose: SQLAlchemy, Alembic and the server stack
are imported by the modules that need them, when they need them.
"""

__version__ = "0.1.0"
