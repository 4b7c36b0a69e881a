"""The registry's domain logic: blobs, uploads, manifests, tags, referrers and the catalog.

This layer speaks in digests and repository names and raises
:class:`cargohold.errors.RegistryError`; it knows nothing of HTTP and reaches storage only
through a :class:`cargohold.storage.driver.StorageDriver`.
"""
