"""Auto-captioning end to end: /train on a zip without captions, the real bot and fake Discord, the RunPod emulator
whose CPU pod runs the agent and the (stand-in) WD14 tagger, moto S3. The thread shows the captions before
training; the job trains on them; the captioned dataset is stored by hash and reused without tagging again."""

from __future__ import annotations

import hashlib
import io
import re
import urllib.request
import zipfile

import pytest
from PIL import Image

from jobs.captions import WD14_REPO
from jobs.states import JobStatus
from tests.agent.world import standin_hub
from tests.world.fixtures_bot import BotWorld
from tests.world.wd14_model import tiny_wd14_onnx

pytestmark = pytest.mark.timeout(180)
UNDESIRED = {"1girl", "1boy", "solo", "nose", "lips"}


def captionless_zip(images: int, captioned: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (512, 512), (index * 30 % 256, 90 + index, 160)).save(png, "PNG")
            zf.writestr(f"kana/{index:03d}.png", png.getvalue())
            if index < captioned:
                zf.writestr(f"kana/{index:03d}.txt", f"kana, girl, written by hand {index}")
    return buffer.getvalue()


async def test_a_dataset_without_captions_is_tagged_shown_in_the_thread_then_trained(bot_world: BotWorld) -> None:
    bw = bot_world
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    plan = await bw.train(captionless_zip(6), name="kana", epochs=1, repeats=1, trigger="kana", class_word="girl")
    assert "6 image(s) will be tagged on the CPU pod" in plan.text(), plan.text()

    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    await bw.wait_for_thread_message(thread, lambda m: "done" in m.text() and "Download" in m.text())

    texts = [m.text() for m in bw.fake.messages_in(thread)]
    [at] = [i for i, t in enumerate(texts) if "captions written" in t]
    first_epoch = next(i for i, t in enumerate(texts) if re.search(r"epoch 1/1", t))
    assert at < first_epoch, "the captions are shown before training results"
    shown = texts[at]
    assert "Tag frequencies" in shown and "tagged 6 of 6" in shown
    examples = re.findall(r"\S+/\d{4}\.png: (.+)", shown)
    assert len(examples) == 5 and all(e.startswith("kana, girl") for e in examples)

    # The link downloads the captioned dataset; its captions are the ones on the volume the job trained on.
    link = re.search(r"\[download the zip\]\((\S+?)\)", shown)
    sha = re.search(r"dataset_from:sha256:([0-9a-f]{64})", shown)
    assert link is not None and sha is not None
    body = urllib.request.urlopen(link.group(1), timeout=10).read()
    assert hashlib.sha256(body).hexdigest() == sha.group(1)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        captions = {n: zf.read(n).decode().strip() for n in zf.namelist() if n.endswith(".txt")}
    assert len(captions) == 6
    tag_sets = [set(t.strip() for t in c.split(",")[2:]) for c in captions.values()]
    for caption, tags in zip(captions.values(), tag_sets, strict=True):
        assert caption.startswith("kana, girl")
        assert not tags & UNDESIRED
    assert not set.intersection(*tag_sets), "a tag in every image binds to nothing: it must be pruned"
    [volume] = bw.world.emulator.volumes()
    data = bw.world.emulator.volume_path(volume.id) / "lorabot" / "jobs" / f"j{job_id}" / "data"
    trained = {p.relative_to(data).as_posix(): p.read_text().strip() for p in data.rglob("*.txt")}
    assert sorted(trained.values()) == sorted(captions.values())

    # dataset_from the captioned hash: every image has its caption, nothing is tagged again.
    again = await bw.train(None, name="again", dataset_from=f"sha256:{sha.group(1)}", trigger="kana", class_word="girl")
    assert "Plan for **again**" in again.content, again.text()
    assert "tagged on the CPU pod" not in again.text()


async def test_captions_off_trains_on_class_tokens_and_the_plan_says_so(bot_world: BotWorld) -> None:
    bw = bot_world
    plan = await bw.train(
        captionless_zip(4, captioned=2),
        name="off",
        epochs=1,
        repeats=1,
        trigger="kana",
        class_word="girl",
        captions="off",
    )
    text = plan.text()
    assert "Captions off: 2 image(s) without a caption train on class tokens only" in text, text
    assert "train on 'kana girl' alone" in text
    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    await bw.wait_for_thread_message(thread, lambda m: "done" in m.text() and "Download" in m.text())
    assert not [m for m in bw.fake.messages_in(thread) if "captions written" in m.text()]
    [volume] = bw.world.emulator.volumes()
    data = bw.world.emulator.volume_path(volume.id) / "lorabot" / "jobs" / f"j{job_id}" / "data"
    # Two hand-written captions; the other two images have none, so sd-scripts uses the subset's class_tokens.
    assert sorted(p.read_text().strip() for p in data.rglob("*.txt")) == [
        "kana, girl, written by hand 0",
        "kana, girl, written by hand 1",
    ]
    assert len(list(data.rglob("*.png"))) == 4
    assert 'class_tokens = "kana girl"' in (data.parent / "dataset.toml").read_text()
