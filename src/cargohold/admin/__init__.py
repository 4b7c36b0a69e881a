"""Operating a registry for years: GC, disk usage, retention, metrics and the admin listener."""
