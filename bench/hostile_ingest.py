"""Time and peak memory of ingest on two cost bombs: `python -m bench.hostile_ingest [--code-root DIR]`.

- forged-count zip: one real entry, but a central directory of 1,000,000 records (57 MB) under an end record that
  says the zip holds 1 entry; the old check trusted that count and handed the file to `zipfile`, which parses
  every record into a `ZipInfo`.
- pixel bombs: twenty 8000x8000 solid WEBPs with captions (a 54 KB zip), and eighty 4000x4000 ones (each
  under the per-image caps), both 1.28 gigapixels to decode.

Each ingest runs in a fresh child process that reports its own peak RSS (`VmHWM`) and the refusal's code.
`--code-root DIR` makes the child import `jobs` from DIR instead, to measure another version of the ingest,
e.g. the one before a change: `git archive HEAD jobs | tar -x -C /tmp/old && python -m bench.hostile_ingest
--code-root /tmp/old`. The zips are cached under the system temp folder (`lorabot-bench/hostile/`).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from bench.ingest import peak_rss_kib

CACHE = Path(tempfile.gettempdir()) / "lorabot-bench" / "hostile"
FORGED_RECORDS = 1_000_000
BOMB_IMAGES = 20
BOMB_SIDE = 8000
# Under the per-image memory cap (16 MP for a WEBP) but over the dataset's pixel budget (1,200 MP).
WIDE_BOMB_IMAGES = 80
WIDE_BOMB_SIDE = 4000


def forged_count_zip() -> Path:
    """One stored caption, then FORGED_RECORDS central-directory records that all point at it; the end record
    claims one entry. Written with struct, as no zip tool would write it."""
    path = CACHE / f"forged-count-{FORGED_RECORDS}.zip"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    data = b"kana, girl"
    crc = zlib.crc32(data)
    name = b"a.txt"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0)
    body = local + name + data
    records = bytearray()
    for index in range(FORGED_RECORDS):
        record_name = b"%07d.txt" % index
        records += struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            0,
            0,
            0,
            crc,
            len(data),
            len(data),
            len(record_name),
            0,
            0,
            0,
            0,
            0,
            0,
        )
        records += record_name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(records), len(body), 0)
    partial = path.with_suffix(".partial")
    partial.write_bytes(body + bytes(records) + end)
    partial.rename(path)
    return path


def pixel_bomb_zip(images: int = BOMB_IMAGES, side: int = BOMB_SIDE) -> Path:
    """`images` solid `side` x `side` lossless WEBPs (2.5 KB each at 8000) in distinct colours, each with a
    caption, stored uncompressed so that no zip-level ratio guard sees anything unusual."""
    path = CACHE / f"pixel-bomb-{images}x{side}-lossless.zip"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(images):
            buffer = io.BytesIO()
            Image.new("RGB", (side, side), (index * 3 % 256, 80, 200 - index * 2)).save(
                buffer, format="WEBP", lossless=True
            )
            archive.writestr(f"img_{index:02d}.webp", buffer.getvalue())
            archive.writestr(f"img_{index:02d}.txt", "kana, girl")
    partial.rename(path)
    return path


def child(zip_path: str, dest: str, code_root: str) -> None:
    """Runs in the child: ingest with `jobs` from `code_root` (if given) and print time, peak RSS and outcome."""
    if code_root:
        sys.path.insert(0, code_root)
    from jobs.dataset import DatasetError, ingest_zip

    outcome = "accepted"
    started = time.perf_counter()
    try:
        ingest_zip(Path(zip_path), Path(dest))
    except DatasetError as exc:
        outcome = f"refused: {exc.code}"
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_kib() / 1024, "outcome": outcome}))


def run_child(zip_path: Path, code_root: str) -> dict[str, object]:
    dest = Path(tempfile.mkdtemp(dir=CACHE)) / "dataset"
    try:
        output = subprocess.run(
            [sys.executable, "-m", "bench.hostile_ingest", "--child", str(zip_path), str(dest), code_root],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        shutil.rmtree(dest.parent)
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code-root", default="", help="import jobs from this folder (another version)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        child(*options.child)
        return
    cases = [
        (f"forged count: 1 entry declared, {FORGED_RECORDS:,} records", forged_count_zip()),
        (f"pixel bomb: {BOMB_IMAGES} solid WEBP {BOMB_SIDE}x{BOMB_SIDE}", pixel_bomb_zip()),
        (
            f"pixel bomb: {WIDE_BOMB_IMAGES} solid WEBP {WIDE_BOMB_SIDE}x{WIDE_BOMB_SIDE}",
            pixel_bomb_zip(WIDE_BOMB_IMAGES, WIDE_BOMB_SIDE),
        ),
    ]
    print(f"code: {options.code_root or 'this working tree'}")
    print("| input | zip | seconds | peak RSS MiB | outcome |")
    print("|---|---:|---:|---:|---|")
    for label, zip_path in cases:
        result = run_child(zip_path, options.code_root)
        size = zip_path.stat().st_size
        shown_size = f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
        print(
            f"| {label} | {shown_size} | {float(str(result['seconds'])):.2f} |"
            f" {float(str(result['peak_rss_mib'])):.0f} | {result['outcome']} |"
        )


if __name__ == "__main__":
    main()
