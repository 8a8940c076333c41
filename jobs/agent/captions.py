"""Auto-captioning on the CPU pod: sd-scripts' own WD14 tagger writes tags, the agent turns them into seed 002's
`TRIGGER, CLASS, <tags not in every image>` and stores the result as a new content-addressed dataset.

The tagger (`finetune/tag_images_by_wd14_tagger.py` at the pinned commit) runs from the environment's venv like the
trainer does, with the Hub offline: the agent puts its ONNX model on the volume first (`models/wd14/<repo as _>/`,
the folder the script looks in), fetched once per volume and checked. It only sees the images to tag (symlinks in a
scratch folder), so a user's own caption is never overwritten. Images it cannot read are listed and keep
`TRIGGER, CLASS`; a tagger that exits non-zero fails the stage with its last line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsutil import CHUNK, atomic_write, dataset_files, fsync_dir, sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIX = ".txt"
# In each tagger model folder: what was asked for and the sha256 of what arrived (the tagger ignores it).
TAGGER_MARKER = ".lorabot-tagger.json"
# What the tagger logs for an image it cannot open (ImageLoadingPrepDataset, used with --max_data_loader_n_workers).
UNREADABLE_LINE = re.compile(r"Could not load image path[^:]*: (?P<path>.+?), error: (?P<error>.*)$")
# Same bytes for the same files, as jobs/dataset.py `pack_dataset` writes them: the hash names the content.
PACK_DATE_TIME = (1980, 1, 1, 0, 0, 0)
TOP_TAGS = 20
EXAMPLES = 5


@dataclass(frozen=True)
class TaggerFile:
    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class CaptionSpec:
    """The manifest's `captions` section (jobs/captions.py `CaptionPlan.manifest_section`)."""

    script: str
    repo: str
    revision: str
    files: list[TaggerFile]
    trigger: str
    class_word: str
    general_threshold: float
    character_threshold: float
    undesired_tags: list[str]
    batch_size: int
    expected_s: float

    @property
    def model_folder(self) -> str:
        """The folder name the tagger derives from --repo_id (a "namespace/name" id: "/" becomes "_")."""
        return self.repo.replace("/", "_")

    def cache_key(self, dataset_sha256: str) -> str:
        """Same source dataset, same settings: the same captioned dataset (a retry does not tag again)."""
        wanted = {
            "dataset": dataset_sha256,
            "script": self.script,
            "repo": self.repo,
            "revision": self.revision,
            "files": [[f.name, f.sha256] for f in self.files],
            "trigger": self.trigger,
            "class_word": self.class_word,
            "general_threshold": self.general_threshold,
            "character_threshold": self.character_threshold,
            "undesired_tags": self.undesired_tags,
        }
        return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:32]


def parse_caption_spec(data: Any) -> CaptionSpec | None:
    """None when the manifest asks for no tagging; ValueError with the field's name when it is malformed."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("manifest captions must be an object")

    def text(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"manifest captions.{key} must be a non-empty string")
        return value

    def number(key: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"manifest captions.{key} must be a number")
        return float(value)

    files = []
    for entry in data.get("files") or []:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "url")):
            raise ValueError("manifest captions.files must hold {name, url, sha256} objects")
        name = entry["name"]
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"manifest captions.files name {name!r} must be a plain file name")
        sha = entry.get("sha256")
        files.append(TaggerFile(name, entry["url"], sha.lower() if isinstance(sha, str) else None))
    if not files:
        raise ValueError("manifest captions.files must name the tagger's model files")
    undesired = data.get("undesired_tags") or []
    if not isinstance(undesired, list) or not all(isinstance(t, str) for t in undesired):
        raise ValueError("manifest captions.undesired_tags must be a list of strings")
    script = text("script")
    if script.startswith("/") or ".." in script.split("/"):
        raise ValueError("manifest captions.script must be a path inside sd-scripts")
    repo = text("repo")
    if repo.count("/") != 1 or ".." in repo:
        raise ValueError("manifest captions.repo must be a 'namespace/name' Hub id")
    return CaptionSpec(
        script=script,
        repo=repo,
        revision=str(data.get("revision") or "main"),
        files=files,
        trigger=text("trigger"),
        class_word=text("class_word"),
        general_threshold=number("general_threshold", 0.35),
        character_threshold=number("character_threshold", 0.35),
        undesired_tags=list(undesired),
        batch_size=max(1, int(number("batch_size", 1))),
        expected_s=number("expected_s", 0.0),
    )


def images_without_captions(dataset_dir: Path) -> list[str]:
    """Relative paths (POSIX) of the images that have no caption file beside them, sorted."""
    found = []
    for path in sorted(dataset_dir.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.with_suffix(CAPTION_SUFFIX).exists():
            found.append(path.relative_to(dataset_dir).as_posix())
    return found


def tagger_argv(spec: CaptionSpec, python: Path, script: Path, images_dir: Path, model_dir: Path) -> list[str]:
    """The tagger's command line: ONNX on CPU, the model folder the agent filled, captions beside each image.

    `--max_data_loader_n_workers 0` makes it load images through its dataset class, which logs an unreadable image
    and goes on (without it, one bad file ends the run); `--thresh` is left to the per-category thresholds."""
    return [
        str(python),
        str(script),
        str(images_dir),
        "--onnx",
        "--repo_id",
        spec.repo,
        "--model_dir",
        str(model_dir),
        "--batch_size",
        str(spec.batch_size),
        "--max_data_loader_n_workers",
        "0",
        "--recursive",
        "--caption_extension",
        CAPTION_SUFFIX,
        "--general_threshold",
        f"{spec.general_threshold:g}",
        "--character_threshold",
        f"{spec.character_threshold:g}",
        "--remove_underscore",
        "--undesired_tags",
        ",".join(spec.undesired_tags),
    ]


def unreadable_images(log_text: str, images_dir: Path) -> dict[str, str]:
    """Relative path -> the tagger's error, for every image it said it could not load."""
    found = {}
    for line in log_text.splitlines():
        match = UNREADABLE_LINE.search(line)
        if match is None:
            continue
        path = Path(match.group("path").strip())
        try:
            rel = path.relative_to(images_dir).as_posix()
        except ValueError:
            rel = path.name
        found[rel] = match.group("error").strip()
    return found


def last_error_line(log_text: str) -> str:
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"


def split_tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.replace("\n", " ").split(",") if tag.strip()]


def compose_captions(tags_by_image: dict[str, list[str] | None], spec: CaptionSpec) -> tuple[dict[str, str], list[str]]:
    """Seed 002's form for every tagged image: trigger, class, then its tags minus the undesired ones, the trigger
    and class themselves, and the tags every tagged image shares (they would bind to nothing but the trigger).
    Returns the captions and the shared tags that were dropped. An image without tags (unreadable) gets
    `TRIGGER, CLASS`; sharing is judged only among two or more tagged images."""
    undesired = {_norm(t) for t in spec.undesired_tags} | {_norm(spec.trigger), _norm(spec.class_word)}
    kept: dict[str, list[str]] = {}
    for rel, tags in tags_by_image.items():
        if tags is None:
            continue
        kept[rel] = [t for t in dict.fromkeys(tags) if _norm(t) not in undesired]
    shared: list[str] = []
    if len(kept) >= 2:
        common = set.intersection(*(set(_norm(t) for t in tags) for tags in kept.values()))
        shared = sorted(common)
    captions = {}
    for rel in tags_by_image:
        rest = [t for t in kept.get(rel, []) if _norm(t) not in shared]
        captions[rel] = ", ".join([spec.trigger, spec.class_word, *rest])
    return captions, shared


def _norm(tag: str) -> str:
    return tag.strip().lower().replace("_", " ")


def summarise(
    captions: dict[str, str], spec: CaptionSpec, shared: list[str], unreadable: dict[str, str]
) -> dict[str, Any]:
    """What the thread shows: tag frequencies (after pruning), five examples, what was dropped and why."""
    counts: Counter[str] = Counter()
    for caption in captions.values():
        counts.update(list(dict.fromkeys(split_tags(caption)[2:])))
    examples = [{"image": rel, "caption": captions[rel]} for rel in sorted(captions)[:EXAMPLES]]
    return {
        "tagged": len(captions) - len(unreadable),
        "images": len(captions),
        "top_tags": [[tag, n] for tag, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TAGS]],
        "examples": examples,
        "shared_removed": shared,
        "undesired": list(spec.undesired_tags),
        "unreadable": [{"image": rel, "error": error[:200]} for rel, error in sorted(unreadable.items())],
    }


def copy_dataset(source: Path, target: Path) -> None:
    """The source dataset's files (hard links where the volume allows: the images are not copied twice)."""
    for file, rel in dataset_files(source):
        (target / rel).mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target / rel / file.name)
        except OSError:
            shutil.copy2(file, target / rel / file.name)


def pack(folder: Path, out_zip: Path) -> tuple[str, int]:
    """A deterministic zip of `folder` (sorted names, fixed times, STORED): (sha256, size)."""
    files = sorted(
        (path.relative_to(folder).as_posix(), path)
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() != "COMPLETE"
    )
    partial = out_zip.with_name(f".{out_zip.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=PACK_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.file_size = path.stat().st_size
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, CHUNK)
    os.replace(partial, out_zip)
    fsync_dir(out_zip.parent)
    return sha256_file(out_zip), out_zip.stat().st_size


def write_pointer(path: Path, record: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(record, sort_keys=True).encode())
