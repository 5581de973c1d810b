"""The lowest versions pyproject.toml allows, as a pip constraints file.

`make test-lowest` installs the project with these constraints into a venv of its own and runs
the unit tests there, so a floor (``>=``) that is lower than what the code needs fails the build
instead of a user's install. Every direct requirement of the base install and of every extra is
pinned to its floor (``==``); a package named twice gets the higher of its floors. A requirement
without a floor is left to the resolver (and reported on stderr: it should get one).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def floors(requirements: Iterable[str], own_name: str) -> tuple[dict[str, Version], list[str]]:
    """The floor of each requirement (the highest when a name repeats), and the names without one."""
    found: dict[str, Version] = {}
    unfloored: list[str] = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == own_name:  # an extra that pulls in another extra of this project
            continue
        lows = [Version(spec.version) for spec in req.specifier if spec.operator in (">=", "==", "~=")]
        if not lows:
            if name not in found:
                unfloored.append(name)
            continue
        low = max(lows)
        found[name] = max(low, found.get(name, low))
        if name in unfloored:
            unfloored.remove(name)
    return found, unfloored


def project_requirements(pyproject: dict[str, object]) -> tuple[str, list[str]]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return canonicalize_name(project["name"]), requirements


def constraints(pyproject_path: Path) -> tuple[str, list[str]]:
    name, requirements = project_requirements(tomllib.loads(pyproject_path.read_text()))
    found, unfloored = floors(requirements, name)
    lines = [f"{pkg}=={version}" for pkg, version in sorted(found.items())]
    return "\n".join(lines) + "\n", unfloored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    text, unfloored = constraints(args.pyproject)
    args.output.write_text(text)
    if unfloored:
        print(f"no floor (left to the resolver): {', '.join(unfloored)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
