"""Post-deploy verification: prove that the deployed Dask cluster answers an LSDB cone query end to end.

One check, three entry points:

* `check.verify_catalog_query(address, VerificationQuery(...), where=ClusterRef(...))`, for tests and notebooks;
* the command line, `python -m components.verification --scheduler ADDR --catalog PATH --ra .. --dec ..
  --radius-arcsec ..` (cli.py);
* the Pulumi dynamic resource `LsdbVerification(name, VerificationArgs(...), opts)` (resource.py), which runs the
  check during `pulumi up` and fails the update with the same stage-named message when the cluster does not work.

Modules: query.py (the query, its bounds, the connect modes and output keys: one definition each),
check.py (the stages), diagnostics.py (the fixes), port_forward.py (kr8s), cli.py, resource.py.

Importing this package (which `pulumi up` does) stays light: no lsdb, dask, distributed, pandas, pyarrow or kr8s.
"""

from components.verification.query import (
    CONNECT_MODES,
    DEC_RANGE,
    MIN_RADIUS_ARCSEC,
    MIN_ROWS,
    MIN_TIMEOUT,
    MIN_WORKERS,
    OUTPUT_KEYS,
    RA_RANGE,
    ClusterRef,
    VerificationQuery,
    query_problems,
)
from components.verification.resource import LsdbVerification, LsdbVerificationProvider, VerificationArgs

__all__ = [
    "CONNECT_MODES",
    "DEC_RANGE",
    "MIN_RADIUS_ARCSEC",
    "MIN_ROWS",
    "MIN_TIMEOUT",
    "MIN_WORKERS",
    "OUTPUT_KEYS",
    "RA_RANGE",
    "ClusterRef",
    "LsdbVerification",
    "LsdbVerificationProvider",
    "VerificationArgs",
    "VerificationQuery",
    "query_problems",
]
