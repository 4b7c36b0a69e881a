"""Print pip constraints that pin every dependency of pyproject.toml to its declared lower bound.

``scripts/test-lowest.sh`` installs the project with these constraints into a separate venv and
runs part of the suite there, so a ``>=`` bound that is too low (an API the code uses that the
oldest allowed release lacks) fails CI instead of a user's install. The bounds are read from
pyproject.toml itself each time, so the two cannot drift apart; a dependency with no ``>=``
bound, or a bound of another form, is an error rather than silently left unpinned.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*>=\s*([^\s,;]+)\s*$")


def lowest_pins(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        m = _REQUIREMENT.match(requirement)
        if m is None:
            raise SystemExit(
                f"{pyproject}: {requirement!r} needs a plain '>=' lower bound to be tested"
            )
        pins.append(f"{m.group(1)}=={m.group(3)}")
    return pins


def main(argv: list[str]) -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    print("\n".join(lowest_pins(pyproject, argv or ["test"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
