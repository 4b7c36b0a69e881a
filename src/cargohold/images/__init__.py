"""Images as files: ``cargohold import`` and ``cargohold export``.

Moves images between files (``docker save`` archives, OCI image layouts as directories or tars)
and a registry, either a local storage root driven through the domain layer
(:class:`cargohold.registry.core.Registry`, no server needed) or any registry reached over
the distribution HTTP API. The arrows point one way: this package uses the registry domain layer
and HTTP, never :mod:`cargohold.api`, so the server never depends on it.

Modules:

- :mod:`.names` parses references (``repo:tag``, ``repo@digest``, docker ``RepoTags``) and
  platforms (``os/arch/variant``);
- :mod:`.files` gives random access to the files of a directory, a tar or a gzip'd tar, and
  refuses truncated archives before anything else reads them;
- :mod:`.archive` reads docker-save archives and OCI layouts into verified, publishable images;
- :mod:`.writers` writes ``docker load`` archives and OCI layouts;
- :mod:`.client` is a small registry HTTP client with Basic and Bearer-token auth;
- :mod:`.target` gives the local root and the remote registry one interface;
- :mod:`.importer` / :mod:`.exporter` orchestrate; :mod:`.progress` shows it; :mod:`.commands`
  is the command line.
"""
