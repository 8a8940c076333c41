"""The real lorabot bot (discord.py) against the fake Discord and the lorabot world (emulator, moto, real pods).

    async def test_x(bot_world: BotWorld):
        plan = await bot_world.train(dataset_zip(20), name="kana", epochs=2)   # /train → the plan message
        thread = await bot_world.confirm(plan)                                   # Confirm → the job's thread
        await bot_world.wait_for_job_end()

`make_bot_world(**orchestrator_config)` builds one with other OrchestratorConfig values (as make_lorabot_world).
`await bot_world.restart()` closes the bot and its runtime and starts fresh ones over the same DB, store and cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.app import CloudParts, Runtime, build_runtime
from bot.client import LorabotBot
from jobs.config import Settings, load_settings
from jobs.queue import JobPlan, ModelFileRef
from jobs.states import JobStatus
from storage.db import session_scope
from storage.models import Job
from tests.world.fake_discord import FakeDiscord, MessageRecord, patch_discord_py
from tests.world.fake_discord.models import ChannelRecord, InteractionRecord
from tests.world.lorabot_world import MODEL_BYTES, LorabotWorld, dataset_zip

TICK_SECONDS = 0.3
NOTIFIER_POLL_S = 0.2


def bot_settings(fake: FakeDiscord, data_dir: Path, **env: str) -> Settings:
    """Settings exactly as an operator's environment would give them (nothing read from the real environment)."""
    base = {
        "DISCORD_TOKEN": fake.bot_token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LORABOT_DATA_DIR": str(data_dir),
        "LORABOT_HTTP_PORT": "0",
        "LORABOT_TICK_SECONDS": str(TICK_SECONDS),
        "LORABOT_CLOUD": "sandbox",
    }
    return load_settings(env={**base, **env})


def world_model_source(world: LorabotWorld) -> Callable[[JobPlan], JobPlan]:
    """The catalog's model URL is unreachable here: serve the world's stand-in model from the bucket."""

    def rewrite(plan: JobPlan) -> JobPlan:
        model = ModelFileRef(
            url=world.store.presign_get("models/test-base.safetensors", 7 * 24 * 3600),
            filename=plan.model.filename,
            size=len(MODEL_BYTES),
            sha256=hashlib.sha256(MODEL_BYTES).hexdigest(),
            token_env=None,
        )
        return dataclasses.replace(plan, model=model)

    return rewrite


@dataclasses.dataclass
class BotWorld:
    fake: FakeDiscord
    world: LorabotWorld
    settings: Settings
    runtime: Runtime
    bot: LorabotBot
    _task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    async def start(cls, fake: FakeDiscord, world: LorabotWorld, settings: Settings) -> BotWorld:
        runtime, bot = await cls._boot(fake, world, settings, world.orchestrator)
        self = cls(fake, world, settings, runtime, bot)
        await self._connect()
        return self

    @staticmethod
    async def _boot(
        fake: FakeDiscord, world: LorabotWorld, settings: Settings, orchestrator: Any
    ) -> tuple[Runtime, LorabotBot]:
        cloud = CloudParts(
            cloud=world.orchestrator.cloud,
            env_recipe=world.orchestrator.env_recipe,
            kind="sandbox",
            pod_env=world.orchestrator.config.pod_env,
            clock=world.emulator.clock.utcnow,
            model_source=world_model_source(world),
        )
        runtime = await build_runtime(
            settings, cloud=cloud, sessions=world.sessions, store=world.store, orchestrator=orchestrator
        )
        await runtime.start()
        return runtime, LorabotBot(runtime, notifier_poll_s=NOTIFIER_POLL_S)

    async def _connect(self) -> None:
        self._task = asyncio.create_task(self.bot.start(self.fake.bot_token), name="lorabot-under-test")
        waiter = asyncio.create_task(self.fake.wait_until_connected(15))
        done, _ = await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()
            raise RuntimeError("the bot stopped before it connected")
        waiter.result()

    async def stop(self) -> None:
        await self.bot.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
            self._task = None
        await self.runtime.stop()

    async def restart(self, while_down: Callable[[], None] | None = None) -> None:
        """The bot process dies and starts again: new client, runtime and orchestrator; same DB, store, cloud.

        ``while_down`` runs between the two, e.g. to undo a write the dead process would not have made.
        """
        await self.stop()
        if while_down is not None:
            while_down()
        self.runtime, self.bot = await self._boot(self.fake, self.world, self.settings, self.world.with_orchestrator())
        await self._connect()

    # -- playing the user ------------------------------------------------------------------------------------

    async def train(
        self, dataset: bytes | Path | None = None, *, name: str = "kana", timeout: float = 30.0, **options: Any
    ) -> MessageRecord:
        """Run /train and return the bot's answer (the plan with its buttons, or a refusal)."""
        interaction = await self.send_train(dataset, name=name, **options)
        return await self.fake.wait_for_reply(interaction, timeout=timeout)

    async def send_train(
        self, dataset: bytes | Path | None = None, *, name: str = "kana", **options: Any
    ) -> InteractionRecord:
        args: dict[str, Any] = {"name": name, **options}
        if dataset is not None:
            args["dataset"] = ("dataset.zip", dataset) if isinstance(dataset, bytes) else dataset
        return await self.fake.send_slash("train", args)

    async def confirm(self, plan: MessageRecord, *, timeout: float = 30.0) -> ChannelRecord:
        """Click Confirm on a plan; returns the job's thread once the bot names it in the edited plan message."""
        confirm_id = next(c for c in plan.custom_ids() if c.endswith(":confirm"))
        click = await self.fake.click(plan, confirm_id)
        await self.fake.wait_for_response(click)
        await self.fake.wait_for(lambda: "Queued as" in plan.content, timeout=timeout, what="the job to be queued")
        return await self.fake.wait_for(lambda: self.thread_of(self.latest_job_id()), timeout=timeout, what="thread")

    def latest_job_id(self) -> int:
        with session_scope(self.world.sessions) as s:
            job = s.query(Job).order_by(Job.id.desc()).first()
            assert job is not None, "no job was queued"
            return job.id

    def thread_of(self, job_id: int) -> ChannelRecord | None:
        thread_id = self.world.job(job_id).thread_id
        return self.fake.world.channels.get(thread_id) if thread_id else None

    async def wait_for_status(self, job_id: int, done: Callable[[JobStatus], bool], timeout: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.world.status(job_id)):
            if loop.time() > deadline:
                raise AssertionError(f"timed out; job is {self.world.status(job_id)}\n{self.world.describe()}")
            await asyncio.sleep(0.1)

    async def wait_for_thread_message(
        self, thread: ChannelRecord, predicate: Callable[[MessageRecord], bool], timeout: float = 60.0
    ) -> MessageRecord:
        return await self.fake.wait_for_message(predicate, channel=thread, timeout=timeout)

    async def job_past_its_first_epoch(self, *, name: str, images: int, epochs: int) -> tuple[ChannelRecord, int]:
        """/train, Confirm, and wait until the thread shows epoch 1: a job in the middle of its training."""
        plan = await self.train(
            dataset_zip(images, size=512), name=name, epochs=epochs, repeats=1, trigger="kana", class_word="1girl"
        )
        thread = await self.confirm(plan)
        job_id = self.latest_job_id()
        await self.wait_for_thread_message(thread, lambda m: epoch_of(m.text()) == "1")
        return thread, job_id


def epoch_of(text: str) -> str | None:
    """The epoch a thread message announces ("epoch 3/10" → "3"), if any."""
    found = re.search(r"epoch (\d+)/\d+", text)
    return found.group(1) if found else None


MakeBotWorld = Callable[..., contextlib.AbstractAsyncContextManager[BotWorld]]


@pytest.fixture
def make_bot_world(
    fake_discord: FakeDiscord, make_lorabot_world: Callable[..., LorabotWorld], tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[BotWorld]]:
    """`async with make_bot_world(time_scale=60, env={...}, **orchestrator_config) as bw:`"""

    @contextlib.asynccontextmanager
    async def make(*, env: dict[str, str] | None = None, **config: Any) -> AsyncIterator[BotWorld]:
        world = make_lorabot_world(**config)
        settings = bot_settings(fake_discord, tmp_path / "botdata", **(env or {}))
        with patch_discord_py(fake_discord):  # for the bot's whole life: REST calls read Route.BASE each time
            bot_world = await BotWorld.start(fake_discord, world, settings)
            try:
                yield bot_world
            finally:
                await bot_world.stop()

    return make


@pytest_asyncio.fixture
async def bot_world(
    make_bot_world: Callable[..., contextlib.AbstractAsyncContextManager[BotWorld]],
) -> AsyncIterator[BotWorld]:
    async with make_bot_world() as world:
        yield world
