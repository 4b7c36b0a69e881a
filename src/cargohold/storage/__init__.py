"""Storage drivers and the on-disk layout shared with registry:2."""
