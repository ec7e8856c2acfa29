"""Catalog provisioning: the copy engine the Job runs (`catalog_copy`, standard library and the lock only)."""
