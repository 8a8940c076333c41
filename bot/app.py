"""The bot's back end, assembled from the settings: DB sessions, artifact store, cloud, orchestrator, scheduler and
the aiohttp server. Discord-free, so the launcher and the tests build the same `Runtime`.

    runtime = build_runtime(settings)                      # RunPod with a key, else the sandbox
    runtime = build_runtime(settings, cloud=CloudParts(...))  # tests: the lorabot world's emulator and bucket
    async with runtime: ...                                # scheduler + web server running
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.orm import Session, sessionmaker

from bot.caption_editor import CaptionEditorHub, install_caption_editor
from bot.ingest import Planner
from bot.uploads import UploadHub, install_upload_page
from jobs.agent_bundle import build_agent
from jobs.catalog import load_catalog
from jobs.cloud import AsyncCloud, connect
from jobs.config import Settings
from jobs.dataset import IngestLimits
from jobs.leadership import Leadership
from jobs.orchestrator import Orchestrator, OrchestratorConfig
from jobs.pick import pinned_by_picks
from jobs.presets import load_presets
from jobs.prices import RUNPOD_ORIGIN, SANDBOX_ORIGIN, LivePriceProvider
from jobs.queue import JobPlan
from jobs.recipe import runpod_recipe
from storage.artifacts import ArtifactStore
from storage.artifacts_factory import open_artifact_store, retention_policy
from storage.artifacts_local import LocalArtifactStore
from storage.db import make_engine, make_session_factory
from storage.http import add_artifact_routes

log = logging.getLogger(__name__)
# APScheduler logs every run at INFO: with a tick every few seconds that drowns everything else.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

Clock = Callable[[], dt.datetime]
# Rewrites a confirmed job's model source (the sandbox and the test world serve a stand-in model).
ModelSource = Callable[[JobPlan], JobPlan]
REAPER_INTERVAL_S = 300
RETENTION_INTERVAL_S = 24 * 3600
URL_SECRET_FILE = "url_secret"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class CloudParts:
    """The cloud side of the runtime: RunPod for real, the sandbox, or a test world's emulator."""

    cloud: AsyncCloud
    env_recipe: dict[str, Any]
    kind: str  # "runpod" or "sandbox": every plan and /status says which
    pod_env: tuple[tuple[str, str], ...] = ()
    clock: Clock = utc_now
    model_source: ModelSource | None = None
    # Anything the cloud needs to shut down (the sandbox's emulator).
    close: Callable[[], Awaitable[None]] | None = None
    # Where CPU stages fetch tokenizers when not from huggingface.co (the sandbox's stand-in Hub).
    hub_endpoint: str | None = None


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ArtifactStore
    orchestrator: Orchestrator
    planner: Planner
    cloud_kind: str
    clock: Clock
    model_source: ModelSource | None
    workdir: Path
    web_app: web.Application
    scheduler: AsyncIOScheduler = field(init=False)
    # Called after every orchestrator tick (the bot wakes its notifier here).
    after_tick: list[Callable[[], None]] = field(default_factory=list)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _executor: ThreadPoolExecutor | None = None
    # The browser upload page, when a public URL is configured (bot/uploads.py).
    uploads: UploadHub | None = None
    # The caption editor, on the same server and under the same condition (bot/caption_editor.py).
    caption_editor: CaptionEditorHub | None = None
    http_port: int = 0

    @property
    def sandbox(self) -> bool:
        return self.cloud_kind == "sandbox"

    async def start(self, *, scheduler: bool = True) -> None:
        # Pods retry their uploads, so stopping need not wait aiohttp's default minute for open connections.
        self._runner = web.AppRunner(self.web_app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http_port
        self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
        if scheduler:
            self._schedule()
            self.scheduler.start()

    def _schedule(self) -> None:
        tick = self.settings.tick_seconds
        self.scheduler.add_job(
            self.tick,
            "interval",
            seconds=tick,
            max_instances=1,
            coalesce=True,
            jitter=tick / 10,
            id="tick",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self.scheduler.add_job(
            self.reap,
            "interval",
            seconds=REAPER_INTERVAL_S,
            max_instances=1,
            coalesce=True,
            id="reap",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self.scheduler.add_job(
            self.retention, "interval", seconds=RETENTION_INTERVAL_S, max_instances=1, coalesce=True, id="retention"
        )

    async def tick(self) -> None:
        report = await self.orchestrator.tick()
        for error in report.errors:
            log.warning("tick: %s", error)
        for callback in self.after_tick:
            callback()

    async def reap(self) -> None:
        try:
            reaped = await self.orchestrator.reap()
        except Exception:  # the reaper runs again in five minutes
            log.exception("reaper failed")
            return
        if reaped:
            log.warning("reaper terminated %s", ", ".join(reaped))
        for callback in self.after_tick:
            callback()

    async def retention(self) -> None:
        try:
            # A picked epoch is its job's result: its checkpoint stays however old it is.
            policy = retention_policy(self.settings, await asyncio.to_thread(pinned_by_picks, self.sessions))
            report = await asyncio.to_thread(self.store.cleanup_expired, self.clock(), policy)
        except Exception:
            log.exception("retention clean-up failed")
            return
        log.info("retention: %s", report)

    async def stop(self) -> None:
        if getattr(self, "scheduler", None) is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # After the scheduler: no new tick starts, the one in flight finishes, then a standby may take over at once.
        await self.orchestrator.step_down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def url_secret(settings: Settings) -> bytes:
    """The configured secret, else one generated once into the data folder (mode 0600) and kept across restarts."""
    if settings.url_secret is not None:
        return settings.url_secret.get_secret_value().encode()
    path = settings.data_dir / URL_SECRET_FILE
    if path.exists():
        return path.read_bytes().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


def runpod_cloud(settings: Settings) -> CloudParts:
    if settings.runpod.api_key is None:
        raise ValueError("the RunPod cloud needs RUNPOD_API_KEY")
    cloud = connect(settings.runpod.api, settings.runpod.api_key.get_secret_value(), settings.runpod.api_url)
    return CloudParts(cloud=cloud, env_recipe=runpod_recipe(), kind="runpod", close=cloud.close)


def sandbox_cloud(settings: Settings, store: ArtifactStore) -> CloudParts:
    """The $0 simulated cloud (`jobs.sandbox.cloud`): the RunPod emulator on this machine, a stand-in model."""
    from jobs.sandbox.cloud import start_sandbox

    sandbox = start_sandbox(settings, store)

    async def close() -> None:
        await sandbox.cloud.close()
        await asyncio.to_thread(sandbox.close)

    return CloudParts(
        cloud=sandbox.cloud,
        env_recipe=sandbox.env_recipe,
        kind="sandbox",
        pod_env=sandbox.pod_env,
        clock=sandbox.clock,
        model_source=sandbox.rewrite_plan_model,
        close=close,
        hub_endpoint=sandbox.hub.url,
    )


async def build_runtime(
    settings: Settings,
    *,
    cloud: CloudParts | None = None,
    sessions: sessionmaker[Session] | None = None,
    store: ArtifactStore | None = None,
    orchestrator: Orchestrator | None = None,
) -> Runtime:
    """Everything but Discord. `cloud`, `sessions` and `store` default to what the settings say; tests pass the
    lorabot world's. Migrations are the launcher's job (run before this)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if sessions is None:
        sessions = make_session_factory(make_engine(settings.effective_database_url))
    secret = url_secret(settings)
    if store is None:
        store = open_artifact_store(settings, secret)
    if cloud is None:
        cloud = runpod_cloud(settings) if settings.effective_cloud == "runpod" else sandbox_cloud(settings, store)
    if orchestrator is None:
        orchestrator = _orchestrator(settings, sessions, store, cloud)
    # Two ingest threads: enough to overlap one upload's unzip with another's planning on a small host, while
    # the default executor stays free for the RunPod SDK and the store.
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lorabot-ingest")
    planner = Planner(
        presets=load_presets(),
        catalog=load_catalog(),
        # RunPod's live prices through the same cloud the orchestrator rents from (the sandbox's: its emulator).
        prices=LivePriceProvider(
            cloud.cloud,
            data_center_id=settings.runpod.data_centers[0],
            origin=RUNPOD_ORIGIN if settings.effective_cloud == "runpod" else SANDBOX_ORIGIN,
        ),
        limits=IngestLimits(max_zip_bytes=settings.limits.max_dataset_mb * 1024 * 1024),
        executor=executor,
    )
    app = web.Application(client_max_size=1024**2)
    app.router.add_get("/healthz", _healthz)
    if isinstance(store, LocalArtifactStore):
        add_artifact_routes(app, store)
    runtime = Runtime(
        settings=settings,
        sessions=sessions,
        store=store,
        orchestrator=orchestrator,
        planner=planner,
        cloud_kind=cloud.kind,
        clock=cloud.clock,
        model_source=cloud.model_source,
        workdir=settings.data_dir / "uploads",
        web_app=app,
    )
    runtime._executor = executor
    runtime.uploads = install_upload_page(runtime, secret)
    runtime.caption_editor = install_caption_editor(runtime, secret)
    if cloud.close is not None:
        runtime._closers.append(cloud.close)
    return runtime


def _orchestrator(
    settings: Settings, sessions: sessionmaker[Session], store: ArtifactStore, cloud: CloudParts
) -> Orchestrator:
    config = OrchestratorConfig.from_settings(settings)
    config = dataclasses.replace(config, pod_env=tuple(config.pod_env) + tuple(cloud.pod_env))
    if cloud.hub_endpoint is not None:
        config = dataclasses.replace(config, hub_endpoint=cloud.hub_endpoint)
    model_tokens = {
        name: secret.get_secret_value()
        for name, secret in (("HF_TOKEN", settings.tokens.hf_token), ("CIVITAI_TOKEN", settings.tokens.civitai_token))
        if secret is not None
    }
    return Orchestrator(
        sessions=sessions,
        cloud=cloud.cloud,
        store=store,
        config=config,
        env_recipe=cloud.env_recipe,
        agent_bundle=build_agent(),
        clock=cloud.clock,
        model_token_env=model_tokens,
        # Renewed every tick, so it must outlast a few of them whatever the operator set.
        leadership=Leadership(sessions, lease_s=max(settings.lease_seconds, 3 * settings.tick_seconds)),
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", content_type="text/plain")
