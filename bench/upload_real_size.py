"""Upload time of real-size LoRAs and state folders: `python -m bench.upload_real_size [--runs 3]`.

The stand-in's real-size writers (jobs/sandbox/sdscripts/_standin_files.py, as with LORABOT_STANDIN_REAL_SIZES=1)
make an SD1.5 dim 32 and an SDXL dim 32 LoRA and their AdamW8bit state folders, as large as sd-scripts' own; each
file goes to the tests' bucket (moto's ThreadedMotoServer on 127.0.0.1, as tests/world/s3.py runs it) through a
presigned PUT with the agent's own `Http.put_file`, the path every checkpoint takes from a pod. The median of
`--runs` uploads per file is reported. This measures lorabot's side (reading the file, HTTP, moto storing it) on
this machine, not RunPod's network to a real bucket.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jobs.agent.lifecycle import StopFlag
from jobs.agent.net import Http
from tests.world.s3 import S3Server, S3World

STANDIN = Path(__file__).resolve().parents[1] / "jobs" / "sandbox" / "sdscripts"
MB = 1_000_000
# (label, stand-in architecture, network_dim, LoRA dtype); both train their text encoders, as the presets do.
CASES = [("SD1.5 dim 32", "sd", 32, "F16"), ("SDXL dim 32", "sdxl", 32, "BF16")]


def make_files(folder: Path, arch: str, dim: int, dtype: str) -> tuple[Path, Path]:
    sys.path.insert(0, str(STANDIN))
    try:
        import _standin_files as files  # the stand-in is a standalone script folder, not a package
    finally:
        sys.path.pop(0)
    no_pace = files.Pace(lambda _s: None, 0)
    lora = folder / f"{arch}-lora.safetensors"
    files.write_real_lora(str(lora), arch, dim, 1.0, False, dtype, {"ss_network_dim": str(dim)}, 1, no_pace)
    state = folder / f"{arch}-state"
    params = files.real_lora_params(arch, dim, False)
    files.write_state_dir(
        str(state),
        lambda path: files.write_real_lora(path, arch, dim, 1.0, False, "F32", {}, 2, no_pace),
        1,
        100,
        optimizer_bytes=params * files.OPTIMIZER_BYTES_PER_PARAM["adamw8bit"],
        pace=no_pace,
    )
    return lora, state


def upload_seconds(http: Http, bucket: S3World, paths: list[Path], prefix: str) -> float:
    started = time.perf_counter()
    for path in paths:
        http.put_file(bucket.presign_put(f"{prefix}/{path.name}"), path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = S3Server()
    http = Http(StopFlag(), attempts=1)
    print("| files | MB | median s | MB/s | runs (s) |")
    print("|---|---:|---:|---:|---|")
    try:
        bucket = S3World(server)
        with tempfile.TemporaryDirectory() as tmp:
            for label, arch, dim, dtype in CASES:
                lora, state = make_files(Path(tmp), arch, dim, dtype)
                for what, paths in (("LoRA", [lora]), ("state folder", sorted(state.iterdir()))):
                    size = sum(p.stat().st_size for p in paths)
                    times = [upload_seconds(http, bucket, paths, f"bench/{arch}/{n}") for n in range(runs)]
                    median = statistics.median(times)
                    shown = ", ".join(f"{t:.2f}" for t in times)
                    print(f"| {label} {what} | {size / MB:.1f} | {median:.2f} | {size / MB / median:.0f} | {shown} |")
                lora.unlink()
                for path in state.iterdir():
                    path.unlink()
                state.rmdir()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
