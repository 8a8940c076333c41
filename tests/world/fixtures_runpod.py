"""pytest fixtures for the world's RunPod: a started emulator that the real `runpod` SDK talks to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import requests
import runpod

from jobs.sandbox.emulator import RunpodEmulator
from jobs.sandbox.emulator.rest import REST_FAILURE

EmulatorFactory = Callable[..., RunpodEmulator]


@pytest.fixture
def make_runpod_emulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorFactory]:
    """Factory: `make_runpod_emulator(time_scale=600, kill_grace_s=5, ...)` → a started emulator that the SDK
    reaches (RUNPOD_API_BASE_URL, `runpod.api_key`, HOME in a temp dir so ~/.runpod is never read).
    Every emulator made is stopped at teardown, which kills every pod process. A REST answer that broke
    RunPod's contract (or a REST call the emulator could not model) fails the test at teardown; a test that
    provokes one on purpose takes it with `clear_failures()`."""
    made: list[RunpodEmulator] = []
    home = tmp_path_factory.mktemp("home")

    def make(**kwargs: Any) -> RunpodEmulator:
        emulator = RunpodEmulator(**kwargs).start()
        made.append(emulator)
        monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setattr(runpod, "api_key", emulator.api_key)
        return emulator

    yield make
    broken: list[str] = []
    for emulator in made:
        emulator.stop()
        broken += [failure for failure in emulator.failures if failure.startswith(REST_FAILURE)]
    if broken:
        pytest.fail("RunPod emulator REST failures:\n" + "\n".join(broken), pytrace=False)


@pytest.fixture
async def runpod_emulator(make_runpod_emulator: EmulatorFactory) -> AsyncIterator[RunpodEmulator]:
    """A started emulator at 60 sim seconds per real second (GPU start-up 120 s = 2 real s; use
    `advance()` to jump). The SDK is pointed at it; `emulator.sdk_env()` gives the same for subprocesses."""
    yield make_runpod_emulator(time_scale=60.0)


def runpod_graphql(
    emulator: RunpodEmulator, query: str, variables: dict[str, Any] | None = None, *, api_key: str | None = None
) -> requests.Response:
    """A raw GraphQL POST the way our own wrapper sends mutations with variables (Bearer key)."""
    key = emulator.api_key if api_key is None else api_key
    return requests.post(
        emulator.graphql_url,
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=10,
    )
