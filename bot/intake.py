"""Dataset intake shared by /train and /caption: one dataset source (an attachment, a link, or an earlier job or
dataset of the user's) → the same ingest and planner, so both commands read a dataset exactly the same way.

One instance per bot (`LorabotBot.intake`): its semaphore caps attachment downloads across both commands.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.actions import Refused, parse_job
from bot.ingest import MAX_PARALLEL_DOWNLOADS, Prepared, human_mb, stream_to_file, upload_cap_bytes
from jobs.spec import UserOptions
from jobs.usertext import shown
from storage.db import session_scope
from storage.models import Dataset, Job

if TYPE_CHECKING:
    from bot.client import LorabotBot


@dataclass(frozen=True)
class StoredDataset:
    store_key: str
    sha256: str
    size: int


class DatasetIntake:
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot
        self._downloads = asyncio.Semaphore(MAX_PARALLEL_DOWNLOADS)

    async def prepare(
        self,
        interaction: discord.Interaction[Any],
        workdir: Path,
        options: UserOptions,
        dataset: discord.Attachment | None,
        dataset_url: str | None,
        dataset_from: str | None,
    ) -> Prepared:
        """The planned dataset from whichever source was given (the caller checked there is exactly one)."""
        planner = self.bot.runtime.planner
        if dataset is not None:
            if not dataset.filename.lower().endswith(".zip"):
                raise Refused(f"{shown(dataset.filename)} is not a .zip; zip your images and captions first.")
            cap = upload_cap_bytes(self.bot.settings, interaction.filesize_limit)
            zip_path = workdir / "upload.zip"
            assert self.bot.session is not None
            async with self._downloads:
                await stream_to_file(self.bot.session, dataset.url, zip_path, cap=cap, declared_size=dataset.size)
            return await planner.run(lambda: planner.plan_zip(zip_path, workdir, options))
        if dataset_url is not None:
            zip_path = await self.fetch_link(interaction, dataset_url, workdir)
            return await planner.run(lambda: planner.plan_zip(zip_path, workdir, options))
        assert dataset_from is not None
        found = await asyncio.to_thread(self.stored_dataset, interaction.user, dataset_from)
        store = self.bot.runtime.store
        return await planner.run(
            lambda: planner.plan_stored(store, found.store_key, found.sha256, found.size, workdir, options)
        )

    async def fetch_link(self, interaction: discord.Interaction[Any], url: str, workdir: Path) -> Path:
        """`jobs.fetch` (SSRF guard, share links, caps) when it is built; otherwise a clear refusal."""
        if importlib.util.find_spec("jobs.fetch") is None:
            raise Refused("links are not available yet: attach the zip, or use `dataset_from`.")
        from jobs.fetch import FetchError, FetchProgress, GuardRefused, fetch_dataset
        from jobs.fetch.settings import FetchSettings, fetch_options

        fetch: FetchSettings = getattr(self.bot.settings, "fetch", None) or FetchSettings()
        hf = self.bot.settings.tokens.hf_token

        async def progress(p: FetchProgress) -> None:
            total = f" of {human_mb(p.bytes_total)}" if p.bytes_total else ""
            eta = f", about {render.duration(p.eta_s)} left" if p.eta_s is not None else ""
            await interaction.edit_original_response(content=f"Downloading: {human_mb(p.bytes_done)}{total}{eta}…")

        try:
            result = await fetch_dataset(
                url,
                workdir / "link.zip",
                max_bytes=upload_cap_bytes(self.bot.settings, None),
                progress_cb=progress,
                hf_token=hf.get_secret_value() if hf is not None else None,
                **fetch_options(fetch),  # guard, timeouts (deadline and minimum rate included), http, redirects
            )
        except (FetchError, GuardRefused) as exc:
            raise Refused(str(exc)) from None
        return result.path

    def stored_dataset(self, user: discord.abc.User, value: str) -> StoredDataset:
        """`j42` (a job of yours) or `sha256:<hex>` (a dataset of yours) → where it is stored (blocking: DB)."""
        with session_scope(self.bot.runtime.sessions) as s:
            if value.startswith("sha256:"):
                row = s.get(Dataset, value.removeprefix("sha256:").lower())
                if row is None or row.owner_user_id != user.id:
                    raise Refused("that dataset is not one of yours; pick one from the list as you type.")
                return StoredDataset(row.store_key, row.sha256, row.size)
            job_id = parse_job(value)
            job = s.get(Job, job_id)
            if job is None or job.user_id != user.id:
                raise Refused(f"`j{job_id}` is not a job of yours; pick one from the list as you type.")
            row = s.get(Dataset, job.dataset_sha256)
            if row is None:
                raise Refused(f"the dataset of `j{job_id}` is no longer stored.")
            return StoredDataset(row.store_key, row.sha256, row.size)


def remove_workdir(path: Path) -> None:
    """A command's working folder, gone (its dataset was planned, refused or never arrived)."""
    shutil.rmtree(path, ignore_errors=True)
