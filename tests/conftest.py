from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory):
    """One corpus cache for the whole session, never the user's ~/.cache (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("sweeper-cache")
    previous = os.environ.get("SWEEPER_CACHE")
    os.environ["SWEEPER_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("SWEEPER_CACHE", None)
    else:
        os.environ["SWEEPER_CACHE"] = previous
