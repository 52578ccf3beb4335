"""The API's routes, one module per resource; shared helpers in ``common``."""
