"""Fixtures for the results-store tests: a throwaway PostgreSQL cluster (tests/store/pgserver.py) per session, and
the synthetic-but-scored runs of tests/unit/helpers_results.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # helpers_results

from pgserver import TempCluster, bindir  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster():
    if bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run installs them)")
    pytest.importorskip("psycopg", reason="the store extra (psycopg 3) is not installed")
    with TempCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_uri(pg_cluster):
    """A fresh, empty database on the session's cluster for each test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.uri, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.uri.rsplit("/", 1)[0] + f"/{name}"
