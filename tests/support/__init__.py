"""Test-only helpers (certificates, NetworkPolicy evaluation, object servers, fault injection); what benches and
scripts also use (the pod emulator, a local Dask cluster, the operator's objects) lives in tools/."""
