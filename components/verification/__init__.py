"""Post-deploy verification: prove that the deployed Dask cluster answers an LSDB cone query end to end.

One check (check.py), three entry points: `check.verify_catalog_query`, the command line (cli.py) and the dynamic
resource `LsdbVerification` (resource.py). Importing query.py and resource.py (which `pulumi up` does) stays light:
no lsdb, dask, distributed, pandas, pyarrow or kr8s.
"""
