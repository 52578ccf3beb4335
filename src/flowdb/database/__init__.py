"""The database: models, migrations, the commands that run them, locking and engines."""
