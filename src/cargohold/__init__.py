"""cargohold: a self-hosted container image registry, a drop-in for registry:2."""

__version__ = "0.1.0"
