"""Pull-through mirrors (registry:2's ``proxy`` and cargohold's ``mirrors``): the upstream client
(upstream.py), one fetch per blob per host (fetch.py) and per cluster through Redis
(replicas.py), the serving of mirrored repositories (service.py) and their upkeep: hit rates,
maxsize/ttl eviction, prefetch (upkeep.py)."""
