"""Dataset ingest: a user's zip in, a normalised sd-scripts dataset plus a report out, or a specific refusal.

The output is built in a hidden sibling of `dest_dir` and renamed into place only when everything passed,
so a refusal (or a crash) leaves nothing behind. Layout written:
`[<repeats>_]<concept_slug>/NNNN.<jpg|png|webp>` + `NNNN.txt` (one UTF-8 line) per image, and `report.json`
(the repeats prefix is kept when the zip had one, so the packed dataset ingests again to the same layout).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from jobs.dataset_images import IMAGE_EXTENSIONS, ImageHeader, decode_image, read_header, sniff_format
from jobs.dataset_limits import DatasetError, IngestLimits, first_control_character, name_some
from jobs.dataset_report import Concept, DatasetReport, ImageRecord, build_report
from jobs.spec import CaptionMode
from jobs.usertext import shown
from jobs.zipsafe import CHUNK_BYTES, ByteBudget, SafeEntry, list_entries, open_zip

__all__ = [
    "Concept",
    "DatasetError",
    "DatasetReport",
    "IngestLimits",
    "IngestedDataset",
    "ingest_zip",
    "pack_dataset",
]

OUTPUT_CAPTION_EXTENSION = ".txt"
REPORT_FILE = "report.json"
DEFAULT_CAPTION_EXTENSIONS = (".txt", ".caption")
# sd-scripts' DreamBooth-style folder name; config_util.py skips folders without the number.
_REPEATS_FOLDER = re.compile(r"^(\d+)_(.+)$")
_MAX_REPEATS = 10_000
_CAPTION_EXTENSION = re.compile(r"^\.[a-z0-9_-]{1,15}$")
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
# Fixed timestamp for pack_dataset: the zip's bytes must depend on the content only.
_PACK_DATE_TIME = (1980, 1, 1, 0, 0, 0)

Kind = Literal["image", "caption", "other"]


@dataclass
class IngestedDataset:
    root: Path
    report: DatasetReport
    concepts: list[Concept]
    caption_extension: str  # always ".txt": captions are normalised whatever the zip used


@dataclass(frozen=True)
class _File:
    entry: SafeEntry
    rel: tuple[str, ...]  # path below any wrapper folders
    kind: Kind


@dataclass
class _ConceptPlan:
    concept: Concept
    images: list[_File]


def ingest_zip(
    zip_path: Path,
    dest_dir: Path,
    *,
    limits: IngestLimits = IngestLimits(),  # noqa: B008 - frozen, so one shared default is safe
    trigger: str | None = None,
    class_word: str | None = None,
    caption_extension: str | None = None,
    generate_captions: bool = False,
    captions: CaptionMode | None = None,
) -> IngestedDataset:
    """Validate `zip_path` and write the normalised dataset to `dest_dir` (absent or empty), or raise DatasetError.

    `captions` (jobs/captions.py): with any mode an image without a caption is kept and written without a caption
    file (the CPU pod tags it, or with "off" sd-scripts trains it on the class tokens); "auto" also drops the user's
    captions so that every image is tagged. None: a missing caption is refused unless `generate_captions`."""
    trigger = _check_word(trigger, "trigger")
    class_word = _check_word(class_word, "class word")
    user_extension = _check_caption_extension(caption_extension)
    if generate_captions and (trigger is None or class_word is None):
        raise DatasetError(
            "captions_need_trigger",
            "Generating missing captions needs both a trigger and a class word (they become 'TRIGGER, CLASS').",
        )
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise DatasetError("dest_exists", f"The destination {shown(dest_dir.name)} already exists and is not empty.")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".ingest", dir=dest_dir.parent))
    try:
        report = _ingest_into(
            zip_path, staging, limits, trigger, class_word, user_extension, generate_captions, captions
        )
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        if dest_dir.exists():
            dest_dir.rmdir()
        os.rename(staging, dest_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise DatasetError(
                "disk_full",
                "The server ran out of disk space while unpacking the dataset; nothing was kept. "
                "Try again later, or ask the operator to free some space.",
            ) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestedDataset(
        root=dest_dir, report=report, concepts=report.concepts, caption_extension=OUTPUT_CAPTION_EXTENSION
    )


def pack_dataset(dataset_root: Path, out_zip: Path) -> tuple[str, int]:
    """Zip an ingested dataset deterministically (sorted names, fixed times, STORED); return (sha256, size).

    The same content always gives the same bytes, so the hash can name the stored dataset. `report.json`
    is left out: it names the user's original files, which would split identical datasets.
    """
    files = sorted(
        (path.relative_to(dataset_root).as_posix(), path)
        for path in dataset_root.rglob("*")
        if not path.is_dir() and path.relative_to(dataset_root).as_posix() != REPORT_FILE
    )
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    partial = out_zip.with_name(f".{out_zip.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, path in files:
                if path.is_symlink() or not path.is_file():
                    raise DatasetError("special_file", f"{shown(name)} in the dataset folder is not a regular file.")
                info = zipfile.ZipInfo(name, date_time=_PACK_DATE_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3
                info.external_attr = 0o100644 << 16
                info.file_size = path.stat().st_size
                with path.open("rb") as source, archive.open(info, "w") as target:
                    shutil.copyfileobj(source, target, CHUNK_BYTES)
        digest = hashlib.sha256()
        with partial.open("rb") as packed:
            while chunk := packed.read(CHUNK_BYTES):
                digest.update(chunk)
        os.replace(partial, out_zip)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), out_zip.stat().st_size


def _ingest_into(
    zip_path: Path,
    staging: Path,
    limits: IngestLimits,
    trigger: str | None,
    class_word: str | None,
    user_extension: str | None,
    generate_captions: bool,
    caption_mode: CaptionMode | None = None,
) -> DatasetReport:
    caption_extensions = tuple(dict.fromkeys([e for e in (user_extension,) if e] + list(DEFAULT_CAPTION_EXTENSIONS)))
    with open_zip(zip_path, limits) as archive:
        zip_size = zip_path.stat().st_size
        entries = list_entries(archive, zip_size, limits)
        budget = ByteBudget(archive, zip_size, limits)
        skipped: list[tuple[str, str]] = []
        kept = [entry for entry in entries if not _skip_junk(entry, skipped)]
        rel_paths, wrapper = _strip_wrappers([entry.parts for entry in kept])
        files = [
            _File(entry, rel, _classify(entry, caption_extensions, budget))
            for entry, rel in zip(kept, rel_paths, strict=True)
        ]
        _refuse_name_clashes(files)
        plans = _plan_concepts(files, skipped, wrapper or trigger, limits)
        captions, notes = _read_captions(files, plans, caption_extensions, budget, limits, skipped)
        if caption_mode == "auto":
            dropped = sum(1 for text in captions.values() if text is not None)
            captions = dict.fromkeys(captions, None)
            if dropped:
                notes.append(f"captions: auto: the {dropped} caption(s) in the zip are replaced by generated ones.")
        _refuse_caption_gaps(plans, captions, generate_captions or caption_mode is not None)
        # With a caption mode, an image without a caption gets no caption file (None), not 'TRIGGER, CLASS'.
        generated = None if caption_mode is not None else f"{trigger}, {class_word}"
        records = _write_images(plans, captions, staging, budget, limits, generated)
    return build_report(
        records,
        [plan.concept for plan in plans],
        sorted(skipped),
        trigger=trigger,
        class_word=class_word,
        notes=notes,
    )


def _skip_junk(entry: SafeEntry, skipped: list[tuple[str, str]]) -> bool:
    for part in entry.parts:
        if part.lower() in _JUNK_NAMES or part.startswith("."):
            skipped.append((entry.name, "system or hidden file"))
            return True
    return False


def _strip_wrappers(paths: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], str | None]:
    """Drop folders that wrap everything (e.g. `my_dataset/`); a `{repeats}_{concept}` folder is never a wrapper."""
    wrapper: str | None = None
    while paths and all(len(p) > 1 and p[0] == paths[0][0] for p in paths) and not _REPEATS_FOLDER.match(paths[0][0]):
        wrapper = paths[0][0]
        paths = [p[1:] for p in paths]
    return paths, wrapper


def _classify(entry: SafeEntry, caption_extensions: tuple[str, ...], budget: ByteBudget) -> Kind:
    suffix = PurePosixPath(entry.name).suffix.lower()
    if suffix in caption_extensions:
        return "caption"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    # Images are accepted by content: a camera export without an extension still counts.
    return "image" if sniff_format(budget.read_head(entry), trust_weak_magic=False) else "other"


def _refuse_name_clashes(files: list[_File]) -> None:
    seen_paths: dict[str, str] = {}
    seen_stems: dict[tuple[str, ...], str] = {}
    for file in files:
        lowered = "/".join(file.rel).lower()
        if lowered in seen_paths:
            raise DatasetError(
                "duplicate_name",
                f"{shown(seen_paths[lowered])} and {shown(file.entry.name)} differ only in letter case;"
                " rename one (they would collide on many disks).",
            )
        seen_paths[lowered] = file.entry.name
        if file.kind == "image":
            stem_key = (*file.rel[:-1], PurePosixPath(file.rel[-1]).stem.lower())
            if stem_key in seen_stems:
                raise DatasetError(
                    "duplicate_name",
                    f"{shown(seen_stems[stem_key])} and {shown(file.entry.name)} share a name; a caption file could"
                    " not tell them apart. Rename one.",
                )
            seen_stems[stem_key] = file.entry.name


def _plan_concepts(
    files: list[_File], skipped: list[tuple[str, str]], flat_name: str | None, limits: IngestLimits
) -> list[_ConceptPlan]:
    images = sorted((f for f in files if f.kind == "image"), key=lambda f: f.rel)
    for file in files:
        if file.kind == "other":
            skipped.append((file.entry.name, "not an image or a caption"))
    if not images:
        found = [f.entry.name for f in files]
        held = f" It holds only {name_some(found)}." if found else " It holds only system or hidden files."
        raise DatasetError("no_images", "The zip has no JPEG, PNG or WEBP images." + held)
    if len(images) > limits.max_images:
        raise DatasetError("too_many_images", f"The zip holds {len(images)} images; the limit is {limits.max_images}.")
    nested = [f.entry.name for f in images if len(f.rel) > 2]
    if nested:
        raise DatasetError(
            "nested_folder",
            f"{name_some(nested)} sit more than one folder deep; use one flat folder or"
            " '{repeats}_{concept}' folders (like '10_kanachan').",
        )
    in_folders = [f for f in images if len(f.rel) == 2]
    if not in_folders:
        name = flat_name or "images"
        return [_ConceptPlan(Concept(name, None, _slug(name, 1), len(images)), images)]
    at_root = [f.entry.name for f in images if len(f.rel) == 1]
    if at_root:
        raise DatasetError(
            "mixed_layout",
            f"{name_some(at_root)} sit beside the concept folders; sd-scripts would ignore them."
            " Move them into a '{repeats}_{concept}' folder.",
        )
    plans: list[_ConceptPlan] = []
    used_slugs: set[str] = set()
    for folder in sorted({f.rel[0] for f in in_folders}):
        match = _REPEATS_FOLDER.match(folder)
        if match is None:
            # Our call: refuse rather than warn, since sd-scripts would silently train without these images.
            raise DatasetError(
                "folder_without_repeats",
                f"The folder {shown(folder)} has no repeats prefix; sd-scripts would skip it ('ignore directory"
                f" without repeats'). Rename it like '10_{folder}'.",
            )
        repeats = int(match.group(1))
        if not 1 <= repeats <= _MAX_REPEATS:
            raise DatasetError(
                "bad_repeats", f"The folder {shown(folder)} asks for {repeats} repeats; use 1 to {_MAX_REPEATS}."
            )
        name = match.group(2).strip() or folder
        slug = _unique(_slug(name, len(plans) + 1), used_slugs)
        members = [f for f in in_folders if f.rel[0] == folder]
        # The folder keeps its repeats: the packed zip must ingest again to the same dataset (dataset_from, the
        # upload page), and sd-scripts reads the same layout.
        plans.append(_ConceptPlan(Concept(name, repeats, f"{repeats}_{slug}", len(members)), members))
    return plans


def _read_captions(
    files: list[_File],
    plans: list[_ConceptPlan],
    caption_extensions: tuple[str, ...],
    budget: ByteBudget,
    limits: IngestLimits,
    skipped: list[tuple[str, str]],
) -> tuple[dict[str, str | None], list[str]]:
    """Caption text per image entry name (None when missing); plus notes about joined lines."""
    by_stem: dict[tuple[str, ...], list[_File]] = {}
    for file in files:
        if file.kind == "caption":
            by_stem.setdefault(_stem_key(file.rel), []).append(file)
    captions: dict[str, str | None] = {}
    used: set[str] = set()
    joined: list[str] = []
    for plan in plans:
        for image in plan.images:
            candidates = sorted(
                by_stem.get(_stem_key(image.rel), []),
                key=lambda f: caption_extensions.index(PurePosixPath(f.rel[-1]).suffix.lower()),
            )
            texts: dict[str, str] = {}
            for candidate in candidates:
                used.add(candidate.entry.name)
                text, was_multiline = _caption_text(candidate.entry, budget, limits)
                if was_multiline:
                    joined.append(candidate.entry.name)
                texts[candidate.entry.name] = text
            if len(set(texts.values())) > 1:
                raise DatasetError(
                    "caption_conflict",
                    f"{shown(image.entry.name)} has several captions that disagree: {name_some(list(texts))}."
                    " Keep one.",
                )
            captions[image.entry.name] = next(iter(texts.values()), None)
    for file in files:
        if file.kind == "caption" and file.entry.name not in used:
            skipped.append((file.entry.name, "caption without a matching image"))
    notes = []
    if joined:
        notes.append(
            f"{len(joined)} caption(s) had several lines, joined into one because sd-scripts reads only"
            f" the first line: {name_some(joined)}."
        )
    return captions, notes


def _refuse_caption_gaps(plans: list[_ConceptPlan], captions: dict[str, str | None], generate: bool) -> None:
    images = [image.entry.name for plan in plans for image in plan.images]
    empty = [name for name in images if captions[name] == ""]
    if empty:
        raise DatasetError(
            "empty_caption",
            f"The captions of {name_some(empty)} are empty; write a caption or delete the empty file.",
        )
    missing = [name for name in images if captions[name] is None]
    if missing and not generate:
        raise DatasetError(
            "missing_captions",
            f"{len(missing)} of {len(images)} images have no caption file (.txt or .caption next to"
            f" the image): {name_some(missing)}. Add them, or set generate_captions with a trigger"
            " and a class word to caption them as 'TRIGGER, CLASS'.",
        )


def _write_images(
    plans: list[_ConceptPlan],
    captions: dict[str, str | None],
    staging: Path,
    budget: ByteBudget,
    limits: IngestLimits,
    generated_caption: str | None,
) -> list[ImageRecord]:
    # First every image is copied and its header read, so the dataset's decode cost is known (and a cost bomb
    # refused) before a single pixel is decoded; then the images are decoded one at a time, against a clock.
    copied: list[tuple[_ConceptPlan, _File, Path, str, ImageHeader]] = []
    for plan in plans:
        folder = staging / plan.concept.folder
        folder.mkdir()
        for number, image in enumerate(plan.images, start=1):
            incoming = folder / f"{number:04d}.incoming"
            with incoming.open("wb") as target:
                sha256 = budget.copy(image.entry, target)
            header = read_header(incoming, image.entry.name, limits)
            copied.append((plan, image, incoming, sha256, header))
    total_pixels = sum(header.decoded_pixels for *_, header in copied)
    if total_pixels > limits.max_total_pixels:
        raise _over_pixel_budget(
            total_pixels, [(image.entry.name, header) for _, image, _, _, header in copied], limits
        )
    records: list[ImageRecord] = []
    started = time.monotonic()
    for done, (plan, image, incoming, sha256, header) in enumerate(copied):
        if done and time.monotonic() - started > limits.max_decode_seconds:
            raise DatasetError(
                "decode_too_slow",
                f"Checking the images took over {limits.max_decode_seconds:g} s ({done} of {len(copied)} done);"
                f" the limit is {limits.max_decode_seconds:g} s per dataset. Downscale the images or re-save them"
                " as plain (baseline) JPEG or PNG.",
            )
        facts = decode_image(incoming, image.entry.name, header, limits)
        output = incoming.with_suffix(facts.extension)
        incoming.rename(output)
        caption = captions[image.entry.name]
        text = caption if caption is not None else generated_caption
        if text is not None:
            output.with_suffix(OUTPUT_CAPTION_EXTENSION).write_text(text + "\n", encoding="utf-8")
        records.append(
            ImageRecord(
                source=image.entry.name,
                output=f"{plan.concept.folder}/{output.name}",
                width=facts.width,
                height=facts.height,
                sha256=sha256,
                caption=text or "",
                had_caption=caption is not None,
                exif_rotated=facts.exif_rotated,
            )
        )
    return records


def _over_pixel_budget(total: int, images: list[tuple[str, ImageHeader]], limits: IngestLimits) -> DatasetError:
    largest = sorted(images, key=lambda item: -item[1].decoded_pixels)
    return DatasetError(
        "too_many_pixels",
        f"Checking these images means decoding {total / 1e6:,.0f} MP (PNG and WEBP in full, JPEG at 1/8 scale);"
        f" the limit is {limits.max_total_pixels / 1e6:,.0f} MP per dataset. The largest:"
        f" {name_some([f'{name} ({header.width}x{header.height})' for name, header in largest])}."
        " Downscale them: sd-scripts trains at about 1 MP per image.",
    )


def _caption_text(entry: SafeEntry, budget: ByteBudget, limits: IngestLimits) -> tuple[str, bool]:
    too_large = DatasetError(
        "caption_too_large",
        f"The caption {shown(entry.name)} is over {limits.max_caption_bytes // 1024} KiB; a caption is one short line.",
    )
    raw = budget.read_small(entry, limits.max_caption_bytes, too_large)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(
            "caption_encoding", f"The caption {shown(entry.name)} is not UTF-8 text; save it as UTF-8."
        ) from None
    # Refused, not stripped, as control characters in file names are: what trains is exactly what the user wrote,
    # and nothing invisible reaches sd-scripts, a terminal or Discord. Tabs and line breaks are ordinary spacing.
    found = first_control_character(text, allowed="\t\n\r")
    if found is not None:
        position, char = found
        hint = " (NUL bytes: is it UTF-16? Save it as UTF-8)" if char == "\x00" else ""
        raise DatasetError(
            "caption_control_character",
            f"The caption {shown(entry.name)} holds the control character U+{ord(char):04X} at character {position + 1}"
            f"{hint}; captions with control or text-direction characters are refused, not cleaned. Remove it.",
        )
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    joined = ""
    for line in lines:
        # Tag lists continue with a comma; sentences already end in punctuation.
        separator = "" if not joined else (" " if joined.endswith((",", ".", ";", ":")) else ", ")
        joined += separator + line
    return joined, len(lines) > 1


def _stem_key(rel: tuple[str, ...]) -> tuple[str, ...]:
    return (*rel[:-1], PurePosixPath(rel[-1]).stem.lower())


def _slug(name: str, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")
    return slug or f"concept{index}"


def _unique(slug: str, used: set[str]) -> str:
    candidate, counter = slug, 2
    while candidate in used:
        candidate, counter = f"{slug}-{counter}", counter + 1
    used.add(candidate)
    return candidate


def _check_word(value: str | None, label: str) -> str | None:
    if value is None:
        return None
    cleaned = value.strip()
    if not cleaned:
        raise DatasetError("bad_option", f"The {label} is empty.")
    if "," in cleaned or len(cleaned) > 64:
        raise DatasetError(
            "bad_option", f"The {label} must be one short tag: no commas or line breaks, at most 64 characters."
        )
    found = first_control_character(cleaned)
    if found is not None:
        # It is written into every generated caption: the same characters a caption may not hold are refused here.
        raise DatasetError(
            "bad_option", f"The {label} holds the control character U+{ord(found[1]):04X}; write it without it."
        )
    return cleaned


def _check_caption_extension(extension: str | None) -> str | None:
    if extension is None:
        return None
    normalised = extension.strip().lower()
    if not normalised.startswith("."):
        normalised = "." + normalised
    if not _CAPTION_EXTENSION.match(normalised) or normalised in IMAGE_EXTENSIONS:
        raise DatasetError(
            "bad_option",
            f"The caption extension {shown(extension)} is not usable; give something like '.txt' or '.caption'.",
        )
    return normalised
