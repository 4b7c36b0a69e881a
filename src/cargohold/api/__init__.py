"""The HTTP API: OCI Distribution Spec 1.1 and Docker Registry HTTP API v2 on aiohttp."""
