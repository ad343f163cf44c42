"""Shared test setup: verify the graph after every pass in every test."""

from __future__ import annotations

import os

# Set before any pipeline runs: the pass manager reads it on each run.
os.environ.setdefault("ACEKIT_VERIFY_PASSES", "1")
