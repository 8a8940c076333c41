"""From a dataset source to a plan, without blocking the event loop and without a whole zip in memory.

- `stream_to_file`: an attachment (or any URL the bot itself trusts, like Discord's CDN) straight to disk,
  counting bytes against a cap (discord.py's `Attachment.read()` would load the whole file).
- `prepare_upload` / `prepare_stored`: ingest + plan + pack, run in the bot's small ingest thread pool so ten
  200 MB zips at once never starve the event loop or the default executor the RunPod SDK calls use.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from jobs.catalog import Catalog
from jobs.config import Settings
from jobs.dataset import DatasetError, IngestLimits, ingest_zip, pack_dataset
from jobs.planning import Plan, make_plan
from jobs.presets import PresetBook
from jobs.prices import PriceProvider
from jobs.spec import UserOptions

MiB = 1024 * 1024
CHUNK_BYTES = 256 * 1024
WRITE_BATCH_BYTES = 4 * 1024 * 1024
# Attachments downloaded at once; more wait their turn (already acknowledged, so nobody sees a timeout).
MAX_PARALLEL_DOWNLOADS = 4


class IngestRefused(Exception):
    """The dataset cannot be used; str() is the sentence shown to the user (never a secret or a full URL)."""


class StoreReader(Protocol):
    def download(self, key: str, path: Path) -> Any: ...


@dataclass
class Prepared:
    """An ingested, planned and packed dataset waiting for the user's Confirm (its files live in `workdir`)."""

    plan: Plan
    workdir: Path
    dataset_zip: Path
    dataset_sha256: str
    dataset_size: int
    image_count: int
    report: dict[str, Any]
    report_text: str
    # True when the dataset is already in the store (dataset_from): confirming uploads nothing.
    reused: bool = False
    # What the user asked for: a plan waiting for Confirm is rebuilt from these after a bot restart.
    options: UserOptions = field(default_factory=UserOptions)
    # A /caption plan: confirming queues a job that only tags the dataset on the CPU pod (jobs/caption_job.py).
    caption_only: bool = False
    # For a /caption plan: the volume it would run on already holds the environment (its estimate builds none).
    env_ready: bool = False

    def discard(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def upload_cap_bytes(settings: Settings, interaction_limit: int | None) -> int:
    """The smallest of: what Discord lets this user attach here, our attachment cap and our dataset cap."""
    caps = [settings.discord.max_attachment_mb * MiB, settings.limits.max_dataset_mb * MiB]
    if interaction_limit:
        caps.append(interaction_limit)
    return min(caps)


def human_mb(num_bytes: int) -> str:
    return f"{num_bytes / MiB:,.0f} MiB" if num_bytes >= MiB else f"{num_bytes:,} bytes"


async def stream_to_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    cap: int,
    declared_size: int | None = None,
    timeout_s: float = 300.0,
) -> int:
    """Download `url` to `dest` in chunks; refuse before reading when the declared size is over `cap`, and stop
    (deleting the partial file) the moment more than `cap` bytes arrive. Returns the byte count."""
    if declared_size is not None and declared_size > cap:
        raise IngestRefused(f"The file is {human_mb(declared_size)}; the limit here is {human_mb(cap)}.")
    received = 0
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s, sock_read=60)) as response:
            if response.status != 200:
                raise IngestRefused(f"Discord answered {response.status} when the bot fetched the attachment.")
            if response.content_length is not None and response.content_length > cap:
                raise IngestRefused(
                    f"The file is {human_mb(response.content_length)}; the limit here is {human_mb(cap)}."
                )
            with dest.open("wb") as out:
                # Disk writes happen in a worker thread, a few MiB at a time: with many big uploads at once, writing
                # on the event loop delayed other users' interaction acks (bench/ack_latency.py).
                pending: list[bytes] = []
                pending_bytes = 0
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    received += len(chunk)
                    if received > cap:
                        raise IngestRefused(f"The file is larger than the limit here ({human_mb(cap)}).")
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                    if pending_bytes >= WRITE_BATCH_BYTES:
                        await asyncio.to_thread(out.writelines, pending)
                        pending, pending_bytes = [], 0
                if pending:
                    await asyncio.to_thread(out.writelines, pending)
    except IngestRefused:
        dest.unlink(missing_ok=True)
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        dest.unlink(missing_ok=True)
        raise IngestRefused(
            f"The download of the attachment failed ({type(exc).__name__}); please try again."
        ) from None
    return received


@dataclass(frozen=True)
class Planner:
    """Everything ingest + plan needs besides the zip; built once by the runtime."""

    presets: PresetBook
    catalog: Catalog
    prices: PriceProvider
    limits: IngestLimits
    executor: Executor | None = None

    async def run(self, fn: Callable[[], Prepared]) -> Prepared:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def plan_zip(self, zip_path: Path, workdir: Path, options: UserOptions) -> Prepared:
        """Ingest `zip_path` into `workdir/dataset`, plan, and pack the normalised zip (blocking: run in a thread).
        Raises DatasetError or PlanRefused with the user's message."""
        dataset = ingest_zip(
            zip_path,
            workdir / "dataset",
            limits=self.limits,
            trigger=options.trigger,
            class_word=options.class_word,
            # The bot always ingests with a caption mode: images without a caption are tagged on the CPU pod (or,
            # with "off", train on the class tokens) instead of being refused.
            captions=options.captions or "keep",
        )
        plan = make_plan(dataset, options, presets=self.presets, catalog=self.catalog, prices=self.prices)
        packed = workdir / "normalised.zip"
        sha, packed_size = pack_dataset(dataset.root, packed)
        zip_path.unlink(missing_ok=True)  # the upload is no longer needed; keep the disk for the next one
        return Prepared(
            plan=plan,
            workdir=workdir,
            dataset_zip=packed,
            dataset_sha256=sha,
            dataset_size=packed_size,
            image_count=dataset.report.image_count,
            report=dataset.report.to_dict(),
            report_text=dataset.report.render_text(),
            options=options,
        )

    def plan_stored(
        self, store: StoreReader, store_key: str, sha256: str, size: int, workdir: Path, options: UserOptions
    ) -> Prepared:
        """Plan from a dataset already in the store: download its normalised zip and ingest it again (the layout
        is the same), but keep its hash, so confirming uploads nothing."""
        zip_path = workdir / "stored.zip"
        store.download(store_key, zip_path)
        prepared = self.plan_zip(zip_path, workdir, options)
        prepared.reused = True
        prepared.dataset_sha256, prepared.dataset_size = sha256, size
        return prepared


def new_workdir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="train-", dir=root))


__all__ = [
    "DatasetError",
    "IngestRefused",
    "Planner",
    "Prepared",
    "new_workdir",
    "stream_to_file",
    "upload_cap_bytes",
]
