"""Which configuration file a command reads, and where the no-file registry keeps its data.

``cargohold serve``, the admin commands (garbage-collect, du, retention...) and the offline
image commands (import/export) all ask the same two questions; the answers live here so that
they cannot drift apart: an explicit ``--config`` wins, else ``$REGISTRY_CONFIGURATION_PATH``
(the variable registry:2's image sets), else the embedded default, whose data goes to an
explicit ``--root`` or the per-user ``$XDG_DATA_HOME/cargohold`` (``~/.local/share/cargohold``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cargohold.config.loader import CONFIGURATION_PATH_VARIABLE, load_config
from cargohold.config.model import Config


@dataclass(frozen=True)
class ConfigLocation:
    """Where a command's configuration comes from.

    ``path`` is the YAML file, or None for the embedded default; ``default_root`` is the
    filesystem root the embedded default gets (unused when a file is read).
    """

    path: str | None
    default_root: str

    def load(self, environ: Mapping[str, str] | None = None) -> Config:
        """The configuration, with REGISTRY_* overrides from `environ` (default: the process's)."""
        return load_config(
            self.path, os.environ if environ is None else environ, default_root=self.default_root
        )


def locate_config(
    explicit: str | None = None,
    *,
    root: str | None = None,
    environ: Mapping[str, str] | None = None,
    from_environment: bool = True,
) -> ConfigLocation:
    """Answer "which config file" and "which default data directory" for a command.

    `explicit` is the command's --config, `root` its --root. `from_environment=False` ignores
    $REGISTRY_CONFIGURATION_PATH (the image commands do when --root names the storage itself).
    """
    env = os.environ if environ is None else environ
    path = explicit or (env.get(CONFIGURATION_PATH_VARIABLE) if from_environment else None)
    return ConfigLocation(path or None, root or default_data_dir(env))


def default_data_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where the no-config registry keeps images: a per-user directory, printed at start."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "cargohold")
