"""lsdb-k8s: Pulumi components that deploy LSDB on Kubernetes with the Dask Operator."""
