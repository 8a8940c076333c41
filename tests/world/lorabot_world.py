"""The whole back end in the test world: the orchestrator with its DB, the RunPod emulator (real SDK), moto S3
(real boto3), and pods that run the real agent against the stand-in sd-scripts.

    world = LorabotWorld.start(...)       # via the `lorabot_world` fixture
    job_id = world.submit(images=4, epochs=3)
    await world.run_until(lambda: world.status(job_id).is_terminal())
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from jobs.agent_bundle import build_agent
from jobs.catalog import load_catalog
from jobs.cloud import CloudApi
from jobs.dataset import ingest_zip, pack_dataset
from jobs.orchestrator import GpuChoice, Orchestrator, OrchestratorConfig
from jobs.planning import make_plan
from jobs.presets import load_presets
from jobs.prices import StaticPriceProvider
from jobs.queue import JobPlan, submit
from jobs.sandbox.emulator import RunpodEmulator
from jobs.sandbox.emulator.state import NETWORK_VOLUME_SECURE_ONLY
from jobs.sandbox.recipe import sandbox_recipe
from jobs.spec import UserOptions
from jobs.states import JobStatus, NoticeKind
from storage.artifacts_s3 import S3ArtifactStore
from storage.db import session_scope
from storage.models import Job, Notice, Pod
from tests.agent.world import NETGUARD, standin_hub
from tests.world.s3 import S3World
from tests.world.timed_cloud import CallLog, TimedCloud

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "jobs" / "sandbox" / "sdscripts"
RTX_4090 = "NVIDIA GeForce RTX 4090"
RTX_3090 = "NVIDIA GeForce RTX 3090"
# Which RunPod API the test world's bot speaks: REST v2 (what lorabot uses) unless a run asks for the GraphQL fallback.
RUNPOD_API_ENV = "LORABOT_TEST_RUNPOD_API"


def world_cloud_client(emulator: RunpodEmulator) -> CloudApi:
    if os.environ.get(RUNPOD_API_ENV, "rest") == "graphql":
        from jobs.runpod_graphql import GraphqlClient

        return GraphqlClient(emulator.api_key, emulator.base_url)
    from jobs.runpod_rest import RestClient

    return RestClient(emulator.api_key, emulator.base_url)


MODEL_BYTES = hashlib.sha256(b"lorabot test base model").digest() * 2048  # 64 KiB stands in for 6.9 GB


def dataset_zip(images: int, size: int = 1024) -> bytes:
    """A small valid dataset: square PNGs with `TRIGGER, CLASS, …` captions in a `10_kana` folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (size, size), (index * 9 % 256, 90, 160)).save(png, "PNG")
            zf.writestr(f"10_kana/{index:03d}.png", png.getvalue())
            zf.writestr(f"10_kana/{index:03d}.txt", f"kana, 1girl, pose {index}")
    return buffer.getvalue()


def padded_dataset_zip(path: Path, index: int, size_mib: int, *, images: int = 20, blob_mib: int = 45) -> Path:
    """A valid dataset (PNGs + captions in `10_kana/`) padded to `size_mib` with random STORED blobs: every byte
    really travels and is really read, as with a big upload. Written under a temporary name, then renamed."""
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:
        for image in range(images):
            png = io.BytesIO()
            Image.new("RGB", (256, 256), (index * 20 % 256, image * 12 % 256, 90)).save(png, "PNG")
            zf.writestr(f"10_kana/{image:03d}.png", png.getvalue())
            zf.writestr(f"10_kana/{image:03d}.txt", f"kana, 1girl, pose {image}")
        written = blob = 0
        while written < size_mib:
            chunk_mib = min(blob_mib, size_mib - written)
            with zf.open(f"extras/blob{blob:02d}.bin", "w") as out:
                for _ in range(chunk_mib):
                    out.write(os.urandom(1024 * 1024))
            written += chunk_mib
            blob += 1
    partial.rename(path)
    return path


def with_standin_model(plan_json: dict[str, Any], store: S3ArtifactStore) -> dict[str, Any]:
    """The catalog's Hugging Face URL is unreachable here: the job downloads a stand-in model from the bucket."""
    job_plan = JobPlan.from_json(plan_json)
    model = dataclasses.replace(
        job_plan.model,
        url=store.presign_get("models/test-base.safetensors", 7 * 24 * 3600),
        size=len(MODEL_BYTES),
        sha256=hashlib.sha256(MODEL_BYTES).hexdigest(),
        token_env=None,
    )
    return dataclasses.replace(job_plan, model=model).to_json()


@dataclasses.dataclass
class LorabotWorld:
    emulator: RunpodEmulator
    s3: S3World
    store: S3ArtifactStore
    sessions: sessionmaker[Session]
    orchestrator: Orchestrator
    workdir: Path

    @classmethod
    def create(
        cls,
        emulator: RunpodEmulator,
        s3: S3World,
        sessions: sessionmaker[Session],
        workdir: Path,
        env_recipe: dict[str, Any] | None = None,
        **config: Any,
    ) -> LorabotWorld:
        store = S3ArtifactStore(bucket=s3.bucket, region="us-east-1")
        store.put_bytes("models/test-base.safetensors", MODEL_BYTES)
        defaults: dict[str, Any] = {
            "data_center_id": "EU-RO-1",
            "gpu_fallback": (GpuChoice(RTX_4090, "SECURE"), GpuChoice(RTX_3090, "SECURE")),
            "status_interval_s": 2.0,
            "reserve_margin_s": 30,
            "status_stale_s": 600,
            "pod_env": (("LORABOT_STANDIN_STEPS_PER_SECOND", "2"),),
            # The CPU stages fetch the trainer's tokenizers from a stand-in Hub, never huggingface.co.
            "hub_endpoint": standin_hub().url,
        }
        defaults.update(config)
        client = world_cloud_client(emulator)
        orchestrator = Orchestrator(
            sessions=sessions,
            cloud=TimedCloud(client, clock=emulator.clock.utcnow, calls=CallLog()),
            store=store,
            config=OrchestratorConfig(**defaults),
            env_recipe=env_recipe or sandbox_recipe(STANDIN),
            agent_bundle=build_agent(),
            clock=emulator.clock.utcnow,
        )
        world = cls(emulator, s3, store, sessions, orchestrator, workdir)
        world.guard_gpu_network()
        return world

    def guard_gpu_network(self) -> None:
        """Every GPU pod's processes (agent and trainer) may reach the bucket and nothing else; a lookup or connect
        to anything else (the Hub, the stand-in Hub) is refused and logged, and the world's teardown fails the test.
        Nothing may be fetched on GPU time: the CPU stage put everything the trainer needs on the volume."""
        bucket = urlsplit(self.s3.endpoint_url)
        self.emulator.set_gpu_process_env(
            {
                "PYTHONPATH": str(NETGUARD),
                "LORABOT_NET_ALLOW": f"{bucket.hostname}:{bucket.port}",
                "LORABOT_NET_VIOLATIONS": str(self.gpu_network_violations_log),
            }
        )

    @property
    def gpu_network_violations_log(self) -> Path:
        return self.workdir / f"gpu-net-violations-{id(self)}.log"

    def gpu_network_violations(self) -> str:
        log = self.gpu_network_violations_log
        return log.read_text() if log.exists() else ""

    @property
    def cloud_calls(self) -> CallLog:
        """When each create and terminate went out and came back (see ``tests/world/timed_cloud.py``)."""
        cloud = self.orchestrator.cloud
        assert isinstance(cloud, TimedCloud)
        return cloud.call_log

    def with_orchestrator(self, **config: Any) -> Orchestrator:
        """A second orchestrator over the same DB, store and cloud: the bot process after a restart."""
        base = dataclasses.replace(self.orchestrator.config, **config)
        return Orchestrator(
            sessions=self.sessions,
            cloud=self.orchestrator.cloud,
            store=self.store,
            config=base,
            env_recipe=self.orchestrator.env_recipe,
            agent_bundle=build_agent(),
            clock=self.emulator.clock.utcnow,
        )

    # -- jobs ------------------------------------------------------------------------------------------------

    def submit(
        self,
        *,
        images: int = 4,
        epochs: int = 3,
        user_id: int = 1001,
        name: str = "kana",
        image_size: int = 1024,
        **options: Any,
    ) -> int:
        """Ingest, plan and queue a job exactly as /train would, with the base model served from the bucket.
        ``options`` are /train's (``repeats`` defaults to 1)."""
        root = Path(tempfile.mkdtemp(dir=self.workdir))
        zip_path = root / "upload.zip"
        zip_path.write_bytes(dataset_zip(images, size=image_size))
        dataset = ingest_zip(zip_path, root / "dataset", trigger="kana", class_word="1girl")
        opts = UserOptions(trigger="kana", class_word="1girl", epochs=epochs, **{"repeats": 1, **options})
        plan = make_plan(dataset, opts, presets=load_presets(), catalog=load_catalog(), prices=StaticPriceProvider())
        packed = root / "dataset.zip"
        sha, size = pack_dataset(dataset.root, packed)
        now = self.now()
        with session_scope(self.sessions) as s:
            job = submit(
                s,
                self.store,
                plan=plan,
                dataset_zip=packed,
                dataset_sha256=sha,
                dataset_size=size,
                image_count=dataset.report.image_count,
                report={},
                user_id=user_id,
                name=name,
                now=now,
                wall_time=dt.timedelta(hours=6),
            )
            job.plan_json = with_standin_model(job.plan_json, self.store)
            return job.id

    def now(self) -> dt.datetime:
        return self.emulator.clock.utcnow()

    def job(self, job_id: int) -> Job:
        with session_scope(self.sessions) as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job

    def status(self, job_id: int) -> JobStatus:
        return self.job(job_id).status

    def pods(self, job_id: int) -> list[Pod]:
        with session_scope(self.sessions) as s:
            return list(s.query(Pod).filter(Pod.job_id == job_id).order_by(Pod.id))

    def notice(self, notice_id: int) -> Notice:
        with session_scope(self.sessions) as s:
            notice = s.get(Notice, notice_id)
            assert notice is not None
            return notice

    def notices(self, job_id: int, kind: NoticeKind | None = None) -> list[Notice]:
        with session_scope(self.sessions) as s:
            query = s.query(Notice).filter(Notice.job_id == job_id)
            if kind is not None:
                query = query.filter(Notice.kind == kind)
            return list(query.order_by(Notice.id))

    async def run_until(
        self,
        done: Callable[[], bool],
        *,
        timeout: float = 60.0,
        interval: float = 0.25,
        orchestrator: Orchestrator | None = None,
        what: str = "the condition",
    ) -> None:
        """Tick (like the scheduler would) until `done()`; fails with the job states and pod logs on timeout."""
        orch = orchestrator or self.orchestrator
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            report = await orch.tick()
            assert not [e for e in report.errors if "Transient" not in e], report.errors
            if done():
                return
            await asyncio.sleep(interval)

    def describe(self) -> str:
        lines = []
        with session_scope(self.sessions) as s:
            for job in s.query(Job).order_by(Job.id):
                lines.append(f"job j{job.id}: {job.status.value} {job.failure_reason or ''}")
        for pod in self.emulator.all_pods():
            lines.append(f"pod {pod}")
            log = self.emulator.pod_log(pod.id) if hasattr(pod, "id") else ""
            lines.append(log[-2000:])
        return "\n".join(lines)

    def running_pods(self) -> list[Any]:
        """Pods RunPod still has (and bills): anything not terminated. A terminated pod's process may take the
        kill grace period to exit; `wait_for_no_processes` checks that part."""
        return [p for p in self.emulator.all_pods() if p.state != "TERMINATED"]

    def wait_for_no_processes(self, timeout: float = 5.0) -> None:
        self.emulator.wait_until(
            lambda: not any(p.process_alive for p in self.emulator.all_pods()), timeout, "every pod process to exit"
        )

    def community_volume_attempts(self) -> list[str]:
        """Every time lorabot asked RunPod for a Community Cloud pod with the Network Volume (which RunPod refuses:
        volumes mount only on Secure Cloud pods), or got one: must stay empty in every world lorabot drives."""
        asked = [
            f"{r.operation} at sim {r.sim_time:.0f} s: {'; '.join(r.errors)}"
            for r in self.emulator.requests
            if any(NETWORK_VOLUME_SECURE_ONLY in e for e in r.errors)
        ]
        made = [f"pod {p.id} ({p.name})" for p in self.emulator.all_pods() if p.cloud == "COMMUNITY" and p.volume_id]
        return asked + made
