"""The orchestration REST API served on top of flowdb's database (FastAPI + uvicorn).

Import ``flowdb.server.app`` only where the server is wanted: it pulls in FastAPI,
pydantic models and the async drivers, which the migration CLI never needs.
"""
