"""Post-deploy verification: prove that the deployed Dask cluster answers an LSDB cone query end to end.

One check (check.py), three entry points: `check.verify_catalog_query`, the command line (cli.py) and the dynamic
resource `LsdbVerification` (resource.py). Importing this package (which `pulumi up` does) stays light: no lsdb,
dask, distributed, pandas, pyarrow or kr8s.
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
