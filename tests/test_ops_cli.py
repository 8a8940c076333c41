"""`lorabot doctor`, `lorabot pods` and `lorabot reap` against the RunPod emulator (the transport the test world
speaks: REST v2 unless LORABOT_TEST_RUNPOD_API=graphql), moto's S3 and the fake Discord."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.cli import main
from jobs.cloud import AsyncCloud, PodInfo, PodRequest
from jobs.sandbox.emulator import RunpodEmulator
from jobs.states import CacheKind, PodRole
from jobs.volumes import confirm_pruned
from storage.db import make_engine, make_session_factory, migrate, session_scope
from storage.queries import mark_cache_ready, record_volume
from storage.transitions import record_pod_intent, set_pod_created
from tests.world.fake_discord import FakeDiscord
from tests.world.fixtures_db import new_job
from tests.world.fixtures_runpod import EmulatorFactory
from tests.world.lorabot_world import RUNPOD_API_ENV, world_cloud_client
from tests.world.s3 import S3World

RTX_4090 = "NVIDIA GeForce RTX 4090"
FALLBACK = (RTX_4090, "NVIDIA GeForce RTX 3090", "NVIDIA RTX A5000")
# Everything lorabot reads from the environment that a developer's shell might have set.
_SETTINGS_ENV = (
    "LORABOT_CONFIG",
    "LORABOT_CLOUD",
    "LORABOT_PUBLIC_URL",
    "DATABASE_URL",
    "DISCORD_TOKEN",
    "DISCORD_API_BASE",
    "RUNPOD_API_KEY",
    "RUNPOD_API",
    "RUNPOD_API_URL",
    "RUNPOD_DATA_CENTERS",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)


@pytest.fixture
def emulator(make_runpod_emulator: EmulatorFactory) -> RunpodEmulator:
    return make_runpod_emulator(time_scale=60.0)


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emulator: RunpodEmulator) -> Path:
    """The environment of a real deployment whose RunPod is the emulator; returns its data folder."""
    for name in _SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("LORABOT_DATA_DIR", str(data))
    monkeypatch.setenv("LORABOT_HTTP_PORT", "0")
    monkeypatch.setenv("RUNPOD_API", os.environ.get(RUNPOD_API_ENV, "rest"))
    monkeypatch.setenv("RUNPOD_API_URL", emulator.base_url)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    return data


@pytest.fixture
def bucket(deployment: Path, s3_world: S3World, monkeypatch: pytest.MonkeyPatch) -> S3World:
    monkeypatch.setenv("S3_BUCKET", s3_world.bucket)
    monkeypatch.setenv("S3_REGION", "us-east-1")
    return s3_world


@pytest.fixture
def discord(deployment: Path, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    monkeypatch.setenv("DISCORD_TOKEN", fake_discord.bot_token)
    monkeypatch.setenv("DISCORD_API_BASE", fake_discord.api_base)
    return fake_discord


async def lorabot(*argv: str) -> int:
    """The CLI in a thread: it runs its own event loop while the fake Discord keeps serving on the test's."""
    return await asyncio.to_thread(main, list(argv))


# --- doctor ---------------------------------------------------------------------------------------------------------


async def test_doctor_is_all_green_on_a_ready_deployment(
    emulator: RunpodEmulator, bucket: S3World, discord: FakeDiscord, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = emulator.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")

    code = await lorabot("doctor")

    out = capsys.readouterr().out
    assert code == 0, out
    assert all(line.startswith("✓ ") for line in out.splitlines()), out
    assert "✓ RunPod API key: accepted" in out
    assert f"✓ Network Volume in EU-RO-1: lorabot-eu-ro-1 ({volume.id}), 30 GB" in out
    assert f"✓ GPU {RTX_4090} in EU-RO-1: RTX 4090 secure $0.69/h, stock Medium" in out
    assert f"✓ artifact store: bucket {bucket.bucket}: wrote, read back through a presigned GET, deleted" in out
    assert "✓ Discord token: accepted" in out
    assert bucket.keys() == []  # the probe object was deleted


async def test_doctor_says_the_volume_is_made_on_the_first_job_and_no_stock_is_only_a_warning(
    emulator: RunpodEmulator, bucket: S3World, discord: FakeDiscord, capsys: pytest.CaptureFixture[str]
) -> None:
    for gpu in FALLBACK:
        emulator.set_stock(gpu, "SECURE", 0)

    code = await lorabot("doctor")

    out = capsys.readouterr().out
    assert code == 0, out
    assert "✓ Network Volume in EU-RO-1: none yet: lorabot creates lorabot-eu-ro-1 on the first job" in out
    assert f"! GPU {RTX_4090} in EU-RO-1: RTX 4090 secure: no stock now" in out
    assert "! GPU stock: no fallback GPU has stock" in out


async def test_doctor_names_a_refused_discord_token_without_showing_it(
    discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = discord.bot_token[::-1]
    monkeypatch.setenv("DISCORD_TOKEN", wrong)

    code = await lorabot("doctor")

    out = capsys.readouterr().out
    assert code == 1
    assert "✗ Discord token: Discord refused the token (401): check DISCORD_TOKEN" in out
    assert wrong not in out


def test_doctor_names_a_refused_key_without_a_traceback_or_the_key(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "rpa_WRONG0123456789ABCDEFGHIJKLMNOP"
    monkeypatch.setenv("RUNPOD_API_KEY", wrong)

    code = main(["doctor"])

    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code != 0
    assert "✗ RunPod API key: RunPod refused the API key (401)" in captured.out
    assert "RUNPOD_API_KEY" in captured.out
    assert "Traceback" not in text
    assert wrong not in text and wrong[4:] not in text


async def test_doctor_names_a_key_that_lacks_permission(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The emulator accepts or refuses a key as a whole; a RunPod that answers 403 to reads stands in here."""

    async def forbidden(request: web.Request) -> web.Response:
        return web.json_response({"title": "Forbidden", "status": 403, "detail": "insufficient scope"}, status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("RUNPOD_API", "rest")
    monkeypatch.setenv("RUNPOD_API_URL", f"http://127.0.0.1:{port}")
    try:
        code = await lorabot("doctor")
    finally:
        await runner.cleanup()

    out = capsys.readouterr().out
    assert code == 1
    assert "✗ RunPod API key: the key lacks permission (403)" in out


def test_doctor_checks_a_local_store_by_serving_it_when_the_bot_is_stopped(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("LORABOT_HTTP_PORT", str(port))
    monkeypatch.setenv("LORABOT_PUBLIC_URL", f"http://127.0.0.1:{port}")

    main(["doctor"])

    out = capsys.readouterr().out
    assert (
        f"✓ artifact store: local folder served at http://127.0.0.1:{port}: wrote, read back through a presigned "
        f"GET, deleted (served by this check on 127.0.0.1:{port})"
    ) in out
    assert not list((deployment / "artifacts").rglob("*.txt"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_doctor_says_what_to_set_when_nothing_is(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY")

    code = main(["doctor"])

    out = capsys.readouterr().out
    assert code == 1
    assert "✗ RunPod API key: not set: set RUNPOD_API_KEY" in out
    assert "✗ artifact store: pods cannot reach one: set S3_BUCKET" in out
    assert "✗ Discord token: not set: set DISCORD_TOKEN" in out


# --- pods and reap --------------------------------------------------------------------------------------------------


class RunPodAccount:
    """Pods at the emulator made the way anyone with the key could make them, and the bot's job store."""

    def __init__(self, emulator: RunpodEmulator, data_dir: Path) -> None:
        self.emulator = emulator
        self.volume = emulator.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
        url = f"sqlite:///{(data_dir / 'lorabot.db').resolve()}"
        data_dir.mkdir(parents=True, exist_ok=True)
        migrate(url)
        self.sessions = make_session_factory(make_engine(url))

    def create_pod(self, name: str) -> PodInfo:
        request = PodRequest(
            name=name,
            image="runpod/base",
            args="sleep 600",
            env={},
            network_volume_id=self.volume.id,
            data_center_id="EU-RO-1",
            gpu_type_id=RTX_4090,
        )

        async def create() -> PodInfo:
            cloud = AsyncCloud(world_cloud_client(self.emulator))
            try:
                return await cloud.create_pod(request)
            finally:
                await cloud.close()

        return asyncio.run(create())

    def live_job_with_gpu_pod(self) -> PodInfo:
        """A job that is still running and the GPU pod it rented (its row written before the create, as always)."""
        now = dt.datetime.now(dt.UTC)
        with session_scope(self.sessions) as s:
            job_id = new_job(s, now=now)
            row = record_pod_intent(s, job_id=job_id, role=PodRole.GPU, attempt=1, now=now, gpu_type_id=RTX_4090)
            row_id, name = row.id, row.name
        pod = self.create_pod(name)
        with session_scope(self.sessions) as s:
            set_pod_created(s, row_id, runpod_pod_id=pod.id, cost_per_hr_micros=pod.cost_per_hr_micros, now=now)
        return pod

    def state(self, pod: PodInfo) -> str:
        return self.emulator.pod(pod.id).state


@pytest.fixture
def account(emulator: RunpodEmulator, deployment: Path) -> Iterator[RunPodAccount]:
    account = RunPodAccount(emulator, deployment)
    yield account
    account.sessions.kw["bind"].dispose()


def test_pods_lists_lorabots_pods_with_their_job_and_owner_and_not_anyone_elses(
    account: RunPodAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    owned = account.live_job_with_gpu_pod()
    orphan = account.create_pod("lorabot-j99-gpu-2")
    account.create_pod("someone-elses-pod")

    code = main(["pods"])

    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {owned.name, orphan.name}
    assert owned.id in lines[owned.name] and "live job j1" in lines[owned.name]
    assert " 0.69 " in lines[owned.name]
    assert " j99 " in lines[orphan.name] and "no live job: reap terminates it" in lines[orphan.name]
    assert "someone-elses-pod" not in out


def test_reap_yes_terminates_the_orphan_and_leaves_foreign_and_owned_pods(
    account: RunPodAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    owned = account.live_job_with_gpu_pod()
    orphan = account.create_pod("lorabot-j99-gpu-2")
    foreign = account.create_pod("someone-elses-pod")
    # Starts like ours but is not a name lorabot gives (first attempts have no suffix): never lorabot's to end.
    lookalike = account.create_pod("lorabot-j99-gpu-1")

    code = main(["reap", "--yes"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert f"terminated {orphan.name}" in out
    assert account.state(orphan) == "TERMINATED"
    assert account.state(foreign) != "TERMINATED"
    assert account.state(owned) != "TERMINATED"
    assert account.state(lookalike) != "TERMINATED"


def test_reap_without_yes_and_without_a_terminal_refuses_and_terminates_nothing(
    account: RunPodAccount, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan = account.create_pod("lorabot-j99-gpu-2")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    code = main(["reap"])

    err = capsys.readouterr().err
    assert code == 2
    assert "refused: no terminal to confirm on" in err and "--yes" in err
    assert account.state(orphan) != "TERMINATED"


class Terminal(io.StringIO):
    """An operator at a terminal who will type `answer`."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "terminated"), [("n\n", False), ("y\n", True)])
def test_reap_asks_at_a_terminal_and_terminates_only_after_a_yes(
    account: RunPodAccount,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    terminated: bool,
) -> None:
    orphan = account.create_pod("lorabot-j99-gpu-2")
    monkeypatch.setattr("sys.stdin", Terminal(answer))

    code = main(["reap"])

    out = capsys.readouterr().out
    assert "Terminate these 1 pod(s)? [y/N]" in out and orphan.name in out
    assert (account.state(orphan) == "TERMINATED") is terminated
    assert code == (0 if terminated else 1)


def test_volumes_lists_each_data_centers_volume_and_prune_needs_a_terminal_or_yes(
    account: RunPodAccount, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["volumes"]) == 0
    assert "no Network Volumes yet" in capsys.readouterr().out
    now = dt.datetime.now(dt.UTC)
    with session_scope(account.sessions) as s:
        volume = record_volume(s, data_center_id="US-KS-2", size_gb=40, now=now, runpod_volume_id="vol-ks")
        mark_cache_ready(s, volume.id, CacheKind.ENV, "an-old-recipe", now=now)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["volumes", "prune"]) == 2
    assert "no terminal to confirm on" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal("n"))
    assert main(["volumes", "prune"]) == 1
    out = capsys.readouterr().out
    assert "Mark these 1 stale cache entry for deletion? [y/N]" in out and "nothing marked" in out

    assert main(["volumes", "prune", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "US-KS-2  vol-ks  40 GB provisioned" in out and "an-old-recipe" in out and ": stale\n" in out
    assert "the next CPU stage on that volume deletes their files" in out and "the bill does not go down" in out
    assert "marked 1 stale cache entry for deletion: the next CPU stage on each volume deletes them first" in out
    # Pending until a CPU stage deleted it; prune again marks nothing more.
    assert main(["volumes"]) == 0
    assert re.search(
        r"an-old-recipe  ready \S+, no job recorded: stale, pending deletion \(marked \S+ \S+ UTC\)",
        capsys.readouterr().out,
    )
    assert main(["volumes", "prune", "--yes"]) == 0
    assert "nothing stale to prune (1 already pending deletion)" in capsys.readouterr().out

    # The next CPU stage on the volume deleted it: the entry is gone and the listing says what was freed.
    with session_scope(account.sessions) as s:
        job_id = new_job(s)
        deleted = {
            "kind": "env",
            "key": "an-old-recipe",
            "freed_bytes": 5_123_000_000,
            "deleted": ["env/an-old-recipe"],
        }
        confirm_pruned(s, volume.id, job_id=job_id, pod_name=f"lorabot-j{job_id}-cpu", pruned=[deleted], now=now)
    assert main(["volumes"]) == 0
    out = capsys.readouterr().out
    assert "(no cache yet)" in out
    assert f"j{job_id}'s CPU stage: env an-old-recipe deleted, 5.1 GB freed" in out
