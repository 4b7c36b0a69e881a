"""HTTP API tests: every endpoint and error path of the OCI Distribution Spec 1.1."""
