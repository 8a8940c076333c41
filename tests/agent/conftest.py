"""Fixtures of the agent's world: a presigned-URL bucket, a volume folder and the agent zipapp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .bucket import Bucket, BucketServer
from .world import Agent, write_pyz


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    with BucketServer() as served:
        yield served


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pyz(tmp_path_factory.mktemp("agent") / "lorabot-agent.pyz")


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "volume"
    path.mkdir()
    return path


@pytest.fixture
def agent(agent_pyz: Path, volume: Path, tmp_path: Path) -> Iterator[Agent]:
    workdir = tmp_path / "pod"
    workdir.mkdir()
    pod = Agent(agent_pyz, volume, workdir)
    yield pod
    # A GPU pod that reached anything but the bucket (the Hub above all) fails the test that let it.
    assert not pod.violations(), f"a GPU pod reached the network beyond the bucket:\n{pod.violations()}"
