"""The Python API's implementation; programs use `cove` and `cove.aio`."""
