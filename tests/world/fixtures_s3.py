"""pytest fixtures for the world's S3: one moto server per session, one fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.world.s3 import S3Server, S3World


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_world(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3World:
    """A fresh bucket; boto3 clients made during the test reach it through the environment (`s3_world.env`)."""
    world = S3World(s3_server)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    return world
