"""The stand-in generation scripts (gen_img.py, flux_minimal_inference.py) take sd-scripts 48d368fa's command lines,
write its output file names, and draw an image that tells which prompt line and which LoRA bytes made it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from jobs.sandbox.sdscripts._standin_files import lora_tensors, safetensors_bytes
from jobs.sandbox.sdscripts._standin_images import network_colour, prompt_colour

ROOT = Path(__file__).resolve().parents[2]
SDSCRIPTS = ROOT / "jobs" / "sandbox" / "sdscripts"
TARBALL = ROOT.parent / "shared" / "vendor" / "sd-scripts-48d368fa.tar.gz"


def run(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The Hub is offline, as on a GPU pod: tokenizers come from the volume or the run fails.
    full_env = {**os.environ, "LORABOT_TIME_SCALE": "1000", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(SDSCRIPTS / script), *args], cwd=cwd, env=full_env, capture_output=True, text=True
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    for seed in (1, 2):
        data = safetensors_bytes(lora_tensors("sd", 4, 4.0, seed), "F16", {})
        (tmp_path / f"lora{seed}.safetensors").write_bytes(data)
    # sd-scripts' --tokenizer_cache_dir layout: the repo id with "/" as "_".
    (tmp_path / "tokenizers/openai_clip-vit-large-patch14").mkdir(parents=True)
    (tmp_path / "tokenizers/openai_clip-vit-large-patch14/vocab.json").write_text("{}")
    return tmp_path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bands(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return rgb.getpixel((1, 1)), rgb.getpixel((1, rgb.height - 2))  # type: ignore[return-value]


def gen_img(files: Path, lora: str, mul: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        "gen_img.py",
        f"--ckpt={files / 'model.safetensors'}",
        "--network_module=networks.lora",
        f"--network_weights={files / lora}",
        f"--network_mul={mul}",
        f"--from_file={files / 'prompts.txt'}",
        f"--outdir={files / 'out'}",
        "--W=64",
        "--H=64",
        f"--tokenizer_cache_dir={files / 'tokenizers'}",
        *extra,
        cwd=files,
    )


def test_gen_img_names_each_image_by_its_line_and_draws_its_prompt_and_lora(files: Path) -> None:
    (files / "prompts.txt").write_text(
        "# a comment line is skipped\n"
        "kana smiling --n blurry, lowres --d 7 --s 20 --f e000001-p00.png\n"
        "\n"
        "kana angry --d 7 --s 20 --f e000001-p01.png\n"
    )
    result = gen_img(files, "lora1.safetensors", "0.8")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (files / "out").iterdir()) == ["e000001-p00.png", "e000001-p01.png"]
    lora = network_colour([(sha(files / "lora1.safetensors"), 0.8)])
    assert bands(files / "out/e000001-p00.png") == (prompt_colour("kana smiling", "blurry, lowres", 7, 20, 7.5), lora)
    assert bands(files / "out/e000001-p01.png") == (prompt_colour("kana angry", "", 7, 20, 7.5), lora)
    with Image.open(files / "out/e000001-p00.png") as image:
        assert image.size == (64, 64)
        assert image.text["prompt"] == "kana smiling"  # type: ignore[attr-defined]
        assert image.text["seed"] == "7"  # type: ignore[attr-defined]
        assert image.text["negative-prompt"] == "blurry, lowres"  # type: ignore[attr-defined]

    # Another epoch's LoRA (other bytes) or another strength changes the bottom band only.
    (files / "out").rename(files / "first")
    assert gen_img(files, "lora2.safetensors", "0.8").returncode == 0
    top, bottom = bands(files / "out/e000001-p00.png")
    assert top == bands(files / "first/e000001-p00.png")[0]
    assert bottom == network_colour([(sha(files / "lora2.safetensors"), 0.8)]) != lora
    (files / "out").rename(files / "second")
    assert gen_img(files, "lora1.safetensors", "0.5").returncode == 0
    assert bands(files / "out/e000001-p00.png")[1] == network_colour([(sha(files / "lora1.safetensors"), 0.5)])


def test_gen_img_default_file_names(files: Path) -> None:
    (files / "prompts.txt").write_text("kana --d 11\nkana waving --d 12\n")
    assert gen_img(files, "lora1.safetensors", "1", "--sequential_file_name").returncode == 0
    assert sorted(p.name for p in (files / "out").iterdir()) == ["im_000001.png", "im_000002.png"]
    (files / "out").rename(files / "seq")
    assert gen_img(files, "lora1.safetensors", "1").returncode == 0
    names = sorted(p.name for p in (files / "out").iterdir())
    assert [re.sub(r"\d{14}", "<ts>", n) for n in names] == ["im_<ts>_000_11.png", "im_<ts>_000_12.png"]


def test_gen_img_refuses_what_argparse_refuses_and_fails_like_python(files: Path) -> None:
    (files / "prompts.txt").write_text("kana --d 1 --f a.png\n")
    unknown = gen_img(files, "lora1.safetensors", "1", "--network_strength=2")
    assert unknown.returncode == 2
    assert "gen_img.py: error: unrecognized arguments: --network_strength=2" in unknown.stderr
    missing = gen_img(files, "nope.safetensors", "1")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("FileNotFoundError: [Errno 2] No such file")
    # sd-scripts' own bug at 48d368fa: --seed with a one-line prompt file and no --d in the line.
    (files / "prompts.txt").write_text("kana\n")
    bug = gen_img(files, "lora1.safetensors", "1", "--seed=5")
    assert bug.returncode == 1
    assert bug.stderr.strip().splitlines()[-1] == "AttributeError: 'tuple' object has no attribute 'seed'"


def test_gen_img_fault_reports_torch_oom(files: Path) -> None:
    (files / "prompts.txt").write_text("kana --d 1 --f a.png\nkana --d 1 --f b.png\n")
    result = run(
        "gen_img.py",
        f"--ckpt={files / 'model.safetensors'}",
        f"--from_file={files / 'prompts.txt'}",
        f"--outdir={files / 'out'}",
        f"--tokenizer_cache_dir={files / 'tokenizers'}",
        cwd=files,
        env={"LORABOT_STANDIN_GEN_FAULT": "oom@2"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert [p.name for p in (files / "out").iterdir()] == ["a.png"]


def test_flux_minimal_inference_writes_one_timestamped_image(files: Path) -> None:
    model = str(files / "model.safetensors")
    args = [f"--clip_l={model}", f"--t5xxl={model}", f"--ae={model}", "--width=64", "--height=64"]
    lora = files / "lora2.safetensors"
    flux_args = [
        f"--ckpt_path={model}",
        *args,
        f"--lora_weights={lora};0.7",
        "--prompt=kana under the rain",
        "--seed=9",
        "--steps=4",
        f"--output_dir={files / 'out'}",
    ]
    # It loads its tokenizers by Hub id (no cache dir): offline, only folders of those names where it runs serve.
    offline = run("flux_minimal_inference.py", *flux_args, cwd=files)
    assert offline.returncode == 1
    assert (
        offline.stderr.strip()
        .splitlines()[-1]
        .startswith("OSError: Can't load tokenizer for 'openai/clip-vit-large-patch14'.")
    )
    (files / "openai/clip-vit-large-patch14").mkdir(parents=True)
    (files / "openai/clip-vit-large-patch14/vocab.json").write_text("{}")
    (files / "google/t5-v1_1-xxl").mkdir(parents=True)
    (files / "google/t5-v1_1-xxl/spiece.model").write_bytes(b"\0")
    result = run("flux_minimal_inference.py", *flux_args, cwd=files)
    assert result.returncode == 0, result.stderr
    (image,) = list((files / "out").iterdir())
    assert re.fullmatch(r"\d{8}_\d{6}\.png", image.name)
    assert bands(image) == (
        prompt_colour("kana under the rain", "", 9, 4, 1.0),
        network_colour([(sha(lora), 0.7)]),
    )
    no_ckpt = run("flux_minimal_inference.py", *args, "--prompt=x", cwd=files)
    assert no_ckpt.returncode == 2
    assert "the following arguments are required: --ckpt_path" in no_ckpt.stderr


@pytest.mark.skipif(not TARBALL.is_file(), reason="the vendored sd-scripts tarball is not beside the repo")
def test_gen_flags_json_is_what_the_pinned_source_says() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import extract_sdscripts_flags as extractor
    finally:
        sys.path.remove(str(ROOT / "tools"))
    with tarfile.open(TARBALL) as tar:
        prefix = tar.getnames()[0].split("/")[0]

        def read(path: str) -> str:
            try:
                member = tar.extractfile(f"{prefix}/{path}")
            except KeyError:
                raise FileNotFoundError(path) from None
            if member is None:
                raise FileNotFoundError(path)
            return io.TextIOWrapper(member, encoding="utf-8").read()

        generation = extractor.extract_generation(read)
    assert generation == json.loads((SDSCRIPTS / "gen_flags.json").read_text())
    assert {"--ckpt", "--network_weights", "--from_file", "--outdir", "--sdxl"} <= set(generation["gen_img.py"])
    assert generation["flux_minimal_inference.py"]["--ckpt_path"]["required"] is True
