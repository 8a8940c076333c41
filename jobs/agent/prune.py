"""Removing what `lorabot volumes prune` marked on this volume, first thing in a CPU stage.

RunPod has no file API for a Network Volume: only a pod mounting it can delete its files, and the CPU pod of the next
cold job on the volume is such a pod, already paid for. The bot lists the marked entries in the manifest's `prune`
section (docs/CONTRACTS.md): each entry's paths, relative to `{volume}/lorabot`, and `keep`, the paths the live jobs
on this volume use. Every path is checked here again before anything is removed: it must be a direct child of one of
the cache folders (`env/`, `models/`, `datasets/`, `captioned/`, `hf/tokenizers/`), neither it nor any folder on the
way to it a symlink, and neither used by this job's own manifest (its environment, model files and their extras, its
tokenizers, dataset, tagger, and the captioned copy it would reuse) nor named in `keep` (nor inside or around such a
path). A refused path is reported with its reason and the entry stays.

Each removal holds the same lock the prepare stage builds that thing under, and first renames the thing out of the
way in one step (`.<name>.pruning-<pid>`), so no other pod ever sees half an environment that still says COMPLETE;
a rename left by a pod that died mid-removal is swept by the next prune. The stage's status reports
`pruned: [{kind, key, freed_bytes, deleted[], refused[{path, reason}]}]`; the bot forgets an entry only when every
one of its paths was deleted (or already gone).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import Context, StageFailed, file_lock
from .manifest import Layout, ManifestError
from .report import Reporter

# Where prune may delete, relative to {volume}/lorabot: the folders whose children the prepare stage builds whole.
CACHE_FOLDERS = ("env", "models", "datasets", "captioned", "hf/tokenizers")
KINDS = ("env", "model", "dataset")
TRASH_MARK = ".pruning-"


@dataclass(frozen=True)
class PruneItem:
    kind: str
    key: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class PruneOrder:
    items: tuple[PruneItem, ...]
    keep: tuple[str, ...]


def parse_prune(value: Any) -> PruneOrder | None:
    """The manifest's optional `prune` section; its shape is checked here, its paths when they are used."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("items"), list):
        raise ManifestError("manifest prune must be an object with an items list")
    keep = value.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(path, str) for path in keep):
        raise ManifestError("manifest prune.keep must be a list of paths")
    items = []
    for index, item in enumerate(value["items"]):
        where = f"manifest prune.items[{index}]"
        if not isinstance(item, dict) or item.get("kind") not in KINDS or not isinstance(item.get("key"), str):
            raise ManifestError(f"{where} must have a kind (env, model or dataset) and a key")
        paths = item.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(path, str) for path in paths):
            raise ManifestError(f"{where}.paths must be a non-empty list of paths")
        items.append(PruneItem(item["kind"], item["key"], tuple(paths)))
    return PruneOrder(tuple(items), tuple(keep))


def own_paths(layout: Layout) -> list[Path]:
    """What this job's manifest uses on the volume: never removed, whatever the prune section says."""
    manifest = layout.manifest
    models = layout.models_dir
    found = [layout.env_dir, layout.dataset_dir, layout.tagger_models_dir]
    for file in manifest.model_files:
        found += [models / file.filename, models / f".{file.filename}.verified"]
    found += [layout.tokenizers_dir / tokenizer.folder for tokenizer in manifest.tokenizers]
    if manifest.captions is not None:
        # The captioned copy this job would reuse instead of tagging again (prepare.captions' pointer and zip).
        key = manifest.captions.cache_key(manifest.dataset_sha256)
        pointer = layout.captioned_dir / f"{key}.json"
        found += [pointer, layout.captioned_dir / f"{key}.zip"]
        try:
            sha = (
                json.loads(pointer.read_text()).get("sha256")
                if pointer.is_file() and not pointer.is_symlink()
                else None
            )
        except (OSError, ValueError, AttributeError):
            sha = None  # an unreadable pointer is rewritten by tagging again; nothing of it to protect
        if isinstance(sha, str) and sha and "/" not in sha and sha not in (".", ".."):
            found.append(layout.datasets_dir / sha)
    return found


def check_path(layout: Layout, rel: str, protected: list[Path]) -> tuple[Path | None, str | None]:
    """(the path to remove, None) or (None, why it is refused)."""
    parent, _, name = rel.rpartition("/")
    if parent not in CACHE_FOLDERS:
        return None, "not a direct child of env/, models/, datasets/, captioned/ or hf/tokenizers/"
    if name in ("", ".", "..") or "\\" in name or "\x00" in name or TRASH_MARK in name:
        return None, "not a plain name"
    folder = layout.root / parent
    target = folder / name
    if target.is_symlink():
        return None, "a symlink"
    # A folder on the way that is a link would send the removal elsewhere (hf/ linked to another disk, say).
    step = layout.root
    for part in parent.split("/"):
        step = step / part
        if step.is_symlink():
            return None, f"{step.relative_to(layout.root)}/ is a symlink"
    if target.parent.resolve() != folder.resolve():
        return None, "outside the cache folder"
    for kept in protected:
        if target == kept or target in kept.parents or kept in target.parents:
            return None, "in use (this job's manifest or a live job on this volume)"
    return target, None


def lock_for(target: Path) -> Path:
    """The lock the prepare stage builds this path under (jobs/agent/prepare.py), so a build and a removal of the
    same thing never overlap."""
    folder, name = target.parent, target.name
    if folder.name == "env":
        return folder / f"{name}.lock"
    if folder.name == "captioned":
        return folder / f".{name.rsplit('.', 1)[0]}.lock"  # the pointer and the zip share their key's lock
    if name.startswith(".") and name.endswith(".verified"):
        name = name[1 : -len(".verified")]  # a model's marker goes with the model
    return folder / f".{name}.lock"


def tree_bytes(path: Path) -> int:
    """The files' bytes under a file or folder (apparent sizes, as `du --apparent-size` counts them); a symlink
    counts as itself, never followed."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        links = [name for name in dirs if (Path(root) / name).is_symlink()]
        for name in [*files, *links]:
            total += (Path(root) / name).lstat().st_size
    return total


def remove(target: Path) -> int:
    """Rename out of the way, then delete; the bytes freed (0 when it was already gone)."""
    if not os.path.lexists(target):
        return 0
    size = tree_bytes(target)
    trash = target.with_name(f".{target.name}{TRASH_MARK}{os.getpid()}")
    os.replace(target, trash)
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash)
    else:
        trash.unlink()
    return size


def sweep_leftovers(layout: Layout) -> int:
    """Renamed things a pod died removing (only the agent's own trash names)."""
    freed = 0
    for folder in CACHE_FOLDERS:
        base = layout.root / folder
        if base.is_dir() and not base.is_symlink():
            for path in base.iterdir():
                if path.name.startswith(".") and TRASH_MARK in path.name:
                    freed += tree_bytes(path)
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return freed


def run_prune(ctx: Context, rep: Reporter) -> None:
    """Remove the marked entries and report them; a malformed section fails the stage (the bot wrote it)."""
    try:
        order = parse_prune(ctx.manifest.raw.get("prune"))
    except ManifestError as exc:
        raise StageFailed("internal", str(exc)) from None
    if order is None or not order.items:
        return
    layout = ctx.layout
    started = ctx.clock.now()
    rep.step("prune", state="running")
    protected = own_paths(layout)
    for rel in order.keep:
        kept, why = check_path(layout, rel, [])
        if kept is None:
            rep.log(f"prune: keep path {rel!r} ignored: {why}")
        else:
            protected.append(kept)
    leftovers = sweep_leftovers(layout)
    # An agent started again on this pod (RunPod restarts an ended container) finds the paths gone: what the
    # first run freed is in the status it continues.
    earlier = {(r.get("kind"), r.get("key")): r for r in rep.status.get("pruned") or [] if isinstance(r, dict)}
    results = []
    for item in order.items:
        freed, deleted, refused = int(earlier.get((item.kind, item.key), {}).get("freed_bytes") or 0), [], []
        for rel in item.paths:
            target, why = check_path(layout, rel, protected)
            if target is None:
                refused.append({"path": rel, "reason": why})
                continue
            try:
                with file_lock(lock_for(target)):
                    freed += remove(target)
            except OSError as exc:
                refused.append({"path": rel, "reason": f"could not be removed: {exc.strerror or exc}"})
                continue
            deleted.append(rel)
        results.append(
            {"kind": item.kind, "key": item.key, "freed_bytes": freed, "deleted": deleted, "refused": refused}
        )
        reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in refused)
        rep.log(f"prune {item.kind} {item.key}: " + (f"kept ({reasons})" if refused else f"freed {freed} bytes"))
    rep.status["pruned"] = results
    if leftovers:
        rep.log(f"prune: removed {leftovers} bytes an earlier pod left half-removed")
    rep.step("prune", state="done", seconds=round(ctx.clock.now() - started, 3))
    rep.publish()
