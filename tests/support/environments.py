"""Test environments started by a test module of its own (beside the session's), so the session
end keeps their logs on failure and removes their work folders like the session's."""

from __future__ import annotations

from devenv.environment import TestEnvironment

EXTRA: list[TestEnvironment] = []


def register(env: TestEnvironment) -> TestEnvironment:
    EXTRA.append(env)
    return env
