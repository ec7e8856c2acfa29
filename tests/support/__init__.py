"""Helpers shared by tests: real Dask processes on 127.0.0.1 (`dask_processes`)."""
