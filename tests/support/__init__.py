"""Shared test helpers: registry servers, deterministic images, real clients.

- :mod:`support.servers`: ``RegistryProcess`` (cargohold or the reference registry),
  ``free_port``, ``unique_repo``, ``deep_merge``.
- :mod:`support.images`: reproducible OCI layouts (``build_image``) and plain
  HTTP push helpers (``push_blob``, ``push_manifest``, ``push_image``).
- :mod:`support.clients`: ``run`` with readable failures, ``Skopeo``,
  ``DockerDaemon``, ``Containerd``.
"""
