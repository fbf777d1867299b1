"""Shared fixtures: isolated homes, SQLite and PostgreSQL databases, tiny local models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.models import build_static_crosslingual, build_tiny_bert

POSTGRES_ENV = "BITEXTDB_TEST_POSTGRES_URL"
REQUIRE_ENV = "BITEXTDB_TEST_REQUIRE_POSTGRES"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches a real home or inherits the caller's BITEXTDB_* settings."""
    for name in list(os.environ):
        if name.startswith("BITEXTDB_") and name not in (POSTGRES_ENV, REQUIRE_ENV):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("BITEXTDB_HOME", str(home))
    monkeypatch.setenv("BITEXTDB_QDRANT_RETRY_SECONDS", "2")
    return home


@pytest.fixture
def home(isolated_env: Path) -> Path:
    return isolated_env


def _postgres_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{POSTGRES_ENV} is not set but PostgreSQL tests are required here")
        pytest.skip(f"set {POSTGRES_ENV} to run the PostgreSQL tests")
    return url


@pytest.fixture
def postgres_base() -> str:
    """The test PostgreSQL database's URL (for tests that make schemas of their own)."""
    base = _postgres_url()
    assert base is not None
    return base


@pytest.fixture
def postgres_url(postgres_base: str) -> Iterator[str]:
    """A fresh schema in the test PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    base = postgres_base
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"PostgreSQL at {base} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, home: Path) -> str:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{home / 'bitextdb.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 32-dimensional BERT sentence model, built once per session."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static-embedding model whose en/de/es translation equivalents share vectors."""
    return build_static_crosslingual(tmp_path_factory.mktemp("models") / "static-xling")
