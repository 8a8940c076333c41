"""What sd-scripts writes, and when a file of it is complete enough to upload or resume from.

sd-scripts saves straight to the final names (facts/sd-scripts.md), so a file is complete only when its size is
stable across two polls AND its format says it is whole: a safetensors header that parses and a length that
matches it, a PNG that ends with IEND.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
MAX_HEADER = 100 << 20


def safetensors_complete(path: Path) -> bool:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return False
            (header_len,) = struct.unpack("<Q", head)
            if header_len > MAX_HEADER or 8 + header_len > size:
                return False
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError):
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("data_offsets"), list):
            return False
        end = max(end, int(entry["data_offsets"][1]))
    return size == 8 + header_len + end


def png_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                return False
            handle.seek(-len(PNG_IEND), 2)
            return handle.read() == PNG_IEND
    except OSError:
        return False


def format_complete(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return safetensors_complete(path)
    if path.suffix.lower() == ".png":
        return png_complete(path)
    return path.is_file() and path.stat().st_size > 0


class StableSizes:
    """Remembers each file's size at the last poll: a file growing between polls is still being written."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int]] = {}

    def complete(self, path: Path, settled: bool = False) -> bool:
        """`settled` = the writer has exited, so one look is enough."""
        try:
            info = path.stat()
        except OSError:
            return False
        key = (info.st_size, info.st_mtime_ns)
        previous = self._seen.get(path)
        self._seen[path] = key
        return (settled or previous == key) and format_complete(path)


@dataclass(frozen=True)
class EpochFiles:
    epoch: int
    checkpoint: Path
    samples: dict[int, Path]


def checkpoint_path(output_dir: Path, output_name: str, epoch: int, total_epochs: int) -> Path:
    # sd-scripts saves no "-{epoch:06d}" file for the last epoch: its checkpoint is the final LoRA.
    if epoch == total_epochs:
        return output_dir / f"{output_name}.safetensors"
    return output_dir / f"{output_name}-{epoch:06d}.safetensors"


def sample_files(output_dir: Path, output_name: str, epoch: int) -> dict[int, Path]:
    """Prompt index → newest sample image of that epoch (a resumed run may have drawn one twice)."""
    pattern = re.compile(rf"^{re.escape(output_name)}_e{epoch:06d}_(\d+)_\d{{14}}(?:_\d+)?\.png$", re.IGNORECASE)
    found: dict[int, Path] = {}
    folder = output_dir / "sample"
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            index = int(match.group(1))
            if index not in found or path.stat().st_mtime_ns > found[index].stat().st_mtime_ns:
                found[index] = path
    return found


def state_dir(output_dir: Path, output_name: str, epoch: int) -> Path:
    return output_dir / f"{output_name}-{epoch:06d}-state"


def state_complete(path: Path, epoch: int) -> bool:
    """A state folder is complete when sd-scripts' train_state.json names this epoch, accelerate wrote its last
    file (random_states_*.pkl comes after the weights, optimizer and scheduler) and every safetensors is whole."""
    try:
        train_state = json.loads((path / "train_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(train_state, dict) or train_state.get("current_epoch") != epoch:
        return False
    if not any(path.glob("random_states_*.pkl")):
        return False
    return all(safetensors_complete(p) for p in path.glob("*.safetensors"))


def latest_complete_state(output_dir: Path, output_name: str) -> tuple[int, Path, int] | None:
    """(epoch, folder, step) of the newest complete epoch state, or None."""
    pattern = re.compile(rf"^{re.escape(output_name)}-(\d{{6}})-state$")
    best: tuple[int, Path, int] | None = None
    if not output_dir.is_dir():
        return None
    for path in output_dir.iterdir():
        match = pattern.match(path.name)
        if not match or not path.is_dir():
            continue
        epoch = int(match.group(1))
        if (best is None or epoch > best[0]) and state_complete(path, epoch):
            step = json.loads((path / "train_state.json").read_text()).get("current_step", 0)
            best = (epoch, path, int(step) if isinstance(step, int) else 0)
    return best
