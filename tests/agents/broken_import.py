"""A native agent whose module raises at import, as one whose model file is missing: its pods'
prewarm fails (tests/e2e/test_prewarm_failures.py)."""

from __future__ import annotations

raise RuntimeError("the model file is missing")
