"""The bucket goes away for a minute and the disk fills while ingesting: the job still ends cleanly, and a full disk
leaves nothing behind. (Discord failing is in test_discord_faults.py, through the real bot.)"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from jobs.dataset import ingest_zip
from jobs.dataset_limits import DatasetError
from jobs.states import JobStatus
from tests.faults.harness import RESULTS, Outcome, When, check_promises, cpu_pod_created, drive
from tests.world.lorabot_world import LorabotWorld
from tests.world.s3 import S3World

OUTAGE_MOMENTS = {
    "preparing (agent fetching the dataset)": cpu_pod_created,
    "training": lambda w, j: w.status(j) is JobStatus.TRAINING,
}


@pytest.mark.parametrize("moment", list(OUTAGE_MOMENTS))
async def test_s3_unavailable_for_a_minute(
    fault_world: Callable[..., LorabotWorld], s3_world: S3World, moment: str
) -> None:
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)
    minute_real_s = world.emulator.clock.real_seconds(60)

    def outage() -> None:
        s3_world.server.set_available(False)
        threading.Timer(minute_real_s, s3_world.server.set_available, args=(True,)).start()

    hook = When(OUTAGE_MOMENTS[moment], outage)
    try:
        result = await drive(world, job_id, hooks=[hook], timeout=90)
    finally:
        s3_world.server.set_available(True)

    refused = [r for r in s3_world.requests if r.status == 503]
    assert refused, "the outage should have refused requests"
    check_promises(
        world,
        job_id,
        case=f"S3 unavailable 60 s: {moment}",
        fault="every S3 request answers 503 SlowDown for 60 sim s (bot reads and agent uploads)",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


def noisy_zip(images: int, size: int = 512) -> bytes:
    """Images of random noise: they do not compress, so the normalised dataset really takes the space."""
    buffer = io.BytesIO()
    rng = random.Random(4)
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(images):
            png = io.BytesIO()
            Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(png, "PNG")
            zf.writestr(f"10_kana/{index:03d}.png", png.getvalue())
            zf.writestr(f"10_kana/{index:03d}.txt", f"kana, 1girl, pose {index}")
    return buffer.getvalue()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB tmpfs (the sandbox runs as root); skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_ingesting_leaves_nothing_behind(tiny_disk: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    upload = tmp_path / "upload.zip"
    upload.write_bytes(noisy_zip(images=8))  # ≈ 6 MB of PNGs for a 3 MB disk
    dest = tiny_disk / "jobs" / "dataset"

    with pytest.raises(DatasetError) as refused:
        ingest_zip(upload, dest, trigger="kana", class_word="1girl")

    assert refused.value.code == "disk_full" and "ran out of disk space" in str(refused.value)
    message = str(refused.value)
    assert not dest.exists()
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
    assert shutil.disk_usage(tiny_disk).used < 64 * 1024, "the partial copy must be gone"
    RESULTS.append(
        Outcome(
            case="disk full while ingesting",
            fault="dataset normalised onto a real 3 MB tmpfs (≈ 6 MB of images)",
            state="ingest (before QUEUED)",
            outcome="refused",
            reason=message,
            pods_left=0,
            ledger_micros=0,
            billed_micros=0,
            seconds=round(time.monotonic() - started, 1),
        )
    )
