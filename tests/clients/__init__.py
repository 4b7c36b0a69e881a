"""Tests that drive real container clients (skopeo, docker, ctr, podman, oras)."""
