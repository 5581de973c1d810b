"""Which livekit-agents releases this runtime supports, checked before anything of it is imported.

The runtime builds livekit-agents' ``JobContext`` itself and drives the steps its job process
takes around the entrypoint, some of them private to the framework: that is only sound for
releases it was built and tested against.
"""

from __future__ import annotations

import re
from importlib import metadata

from agent_jobrunner.job import EntrypointError

DISTRIBUTION = "livekit-agents"
# keep in step with the livekit-agents extra in pyproject.toml
SUPPORTED_MIN = (1, 8)
SUPPORTED_BELOW = (1, 9)
SUPPORTED = ">=1.8,<1.9"
EXTRA = "livekit-agent-operator[livekit-agents]"


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string, None if it has none."""
    found = re.match(r"^(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def version_problem(version: str | None) -> str:
    """Why ``version`` (None: not installed) cannot run here; empty when it can."""
    if version is None:
        return f"{DISTRIBUTION} is not installed: runtime livekit-agents needs {EXTRA} in the image"
    found = release(version)
    if found is None or not SUPPORTED_MIN <= found < SUPPORTED_BELOW:
        return (
            f"{DISTRIBUTION} {version} is installed, but this runner supports {DISTRIBUTION}{SUPPORTED}; "
            f"install {EXTRA} (or a {DISTRIBUTION} release in that range) in the image"
        )
    return ""


def installed_version() -> str | None:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def check_supported() -> str:
    """The installed version; raises :class:`EntrypointError` saying why it cannot run here."""
    version = installed_version()
    problem = version_problem(version)
    if problem:
        raise EntrypointError(problem)
    assert version is not None
    return version
