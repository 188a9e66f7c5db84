"""A broken plugin: ``tick_statistics`` lacks ``@hookimpl``, so pluggy would silently never call it."""


def tick_statistics(context):
    return {"Undecorated/value": 1.0}
