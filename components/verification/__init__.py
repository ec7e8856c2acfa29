"""Post-deploy verification: prove that the deployed Dask cluster answers an LSDB cone query end to end.

One check, three entry points:

* `check.verify_catalog_query(address, VerificationQuery(...), where=ClusterRef(...))`, for tests and notebooks;
* the command line, `python -m components.verification --scheduler ADDR --catalog PATH --ra .. --dec ..
  --radius-arcsec ..` (cli.py);
* the Pulumi dynamic resource `LsdbVerification(name, VerificationArgs(...), opts)` (resource.py), which runs the
  check during `pulumi up` and fails the update with the same stage-named message when the cluster does not work.

Modules: query.py (the query and the result: one model each), check.py (the stages), diagnostics.py (the fixes),
pods.py (stuck pods), port_forward.py (kr8s), cli.py, resource.py.

Importing this package (which `pulumi up` does) stays light: no lsdb, dask, distributed, pandas, pyarrow or kr8s.
"""

from components.verification.query import (
    CONNECT_MODES,
    OUTPUT_KEYS,
    ClusterRef,
    ConeConfig,
    VerificationQuery,
    VerificationResult,
    VerifyConfig,
)
from components.verification.resource import LsdbVerification, LsdbVerificationProvider, VerificationArgs

__all__ = [
    "CONNECT_MODES",
    "OUTPUT_KEYS",
    "ClusterRef",
    "ConeConfig",
    "LsdbVerification",
    "LsdbVerificationProvider",
    "VerificationArgs",
    "VerificationQuery",
    "VerificationResult",
    "VerifyConfig",
]
