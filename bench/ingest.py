"""Ingest throughput and peak memory on generated 1024x1024 datasets: `python -m bench.ingest [--sizes 100,1000]`.

Each ingest runs in a fresh child process that reports its own peak RSS (`ru_maxrss`), so the figures are not
blurred by the generator. A child that only imports the ingest gives the baseline. Generated zips are cached
under the system temp folder (`lorabot-bench/`), so a second run measures the ingest only.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "lorabot-bench"
SIDE = 1024


def generated_zip(image_count: int) -> Path:
    """A zip of `image_count` distinct 1024x1024 JPEGs (gradient + noise) with one caption each; cached."""
    path = CACHE / f"ingest-{image_count}x{SIDE}.zip"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    # Imported here so the measuring children (and the baseline) don't carry numpy.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(42)
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for index in range(image_count):
            base = (ramp[None, :, None] + ramp[:, None, None] * (index % 7) / 7) / 2
            noise = rng.integers(0, 48, size=(SIDE, SIDE, 3), dtype=np.uint8)
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=85)
            archive.writestr(f"10_benchchar/img_{index:05d}.jpg", buffer.getvalue())
            archive.writestr(f"10_benchchar/img_{index:05d}.txt", f"benchchar, girl, pose {index % 13}")
    partial.rename(path)
    return path


def child(zip_path: str | None, dest: str | None) -> None:
    """Runs in the child: ingest (or only import, for the baseline) and print timing and peak RSS as JSON."""
    from jobs.dataset import ingest_zip

    seconds = 0.0
    if zip_path and dest:
        started = time.perf_counter()
        ingest_zip(Path(zip_path), Path(dest), trigger="benchchar", class_word="girl")
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_kib() / 1024}))


def peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries the forking parent's peak into
    ru_maxrss across exec, which would charge the generator's memory to the ingest."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def run_child(*args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000", help="image counts, comma-separated")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        child(*[*options.child, None, None][:2])
        return
    baseline = run_child()
    print(f"baseline (imports only): peak RSS {baseline['peak_rss_mib']:.0f} MiB")
    print("| images (1024², JPEG) | zip MB | unpacked MB | seconds | MB/s (zip) | peak RSS MiB | over baseline MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count in (int(size) for size in options.sizes.split(",")):
        zip_path = generated_zip(count)
        with zipfile.ZipFile(zip_path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        dest = Path(tempfile.mkdtemp(dir=CACHE)) / "dataset"
        try:
            result = run_child(str(zip_path), str(dest))
        finally:
            shutil.rmtree(dest.parent)
        zip_mb = zip_path.stat().st_size / 1e6
        print(
            f"| {count} | {zip_mb:.0f} | {unpacked / 1e6:.0f} | {result['seconds']:.1f} |"
            f" {zip_mb / result['seconds']:.0f} | {result['peak_rss_mib']:.0f} |"
            f" {result['peak_rss_mib'] - baseline['peak_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
