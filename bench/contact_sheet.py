"""Contact sheet render time and size: `python -m bench.contact_sheet [--epochs 10] [--prompts 4] [--px 1024]`.

Draws epochs × prompts synthetic 1024 px samples (a tinted gradient with per-pixel noise, so PNG cannot shrink them
the way it shrinks flat images: closer to a real render than the stand-in's 8 px blocks), encodes them as PNG like
sd-scripts, and times `jobs.contact_sheet.render_sheets` as the bot runs it (decode, scale, draw, encode under the
limit), reporting each sheet's size and format and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import statistics
import time

from PIL import Image, ImageChops

from jobs.contact_sheet import DEFAULT_SIZE_LIMIT, SheetJob, render_sheets


def sample_png(px: int, seed: int) -> bytes:
    rng = random.Random(seed)
    tint = [rng.randrange(256) for _ in range(3)]
    gradient = Image.linear_gradient("L").resize((px, px))
    noise = Image.frombytes("L", (px, px), rng.randbytes(px * px)).point(lambda v: v // 4)
    bands = [ImageChops.add(gradient.point(lambda v, t=t: (v + t) // 2), noise) for t in tint]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--px", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=DEFAULT_SIZE_LIMIT)
    args = parser.parse_args()

    samples = {(e, r): sample_png(args.px, e * 100 + r) for e in range(1, args.epochs + 1) for r in range(args.prompts)}
    source_mb = sum(len(b) for b in samples.values()) / 1e6
    epochs = tuple(range(1, args.epochs + 1))
    job = SheetJob(
        title="j1 · bench",
        prompts=tuple(f"bench, 1girl, prompt {r}, smiling, upper body" for r in range(args.prompts)),
        planned_epochs=epochs,
        epochs=epochs,
        seed=42,
        source_px=args.px,
    )
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        sheets = render_sheets(job, lambda e, r: samples[(e, r)], size_limit=args.limit)
        times.append(time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.epochs} epochs x {args.prompts} prompts at {args.px} px ({source_mb:.1f} MB of PNG samples)")
    for sheet in sheets:
        layout = sheet.layout
        quality = f" q{sheet.quality}" if sheet.quality else ""
        print(
            f"  {sheet.filename}: {layout.width}x{layout.height} px, cells {layout.cell} px, "
            f"{sheet.format}{quality}, {len(sheet.data) / 1e6:.2f} MB (limit {args.limit / 1e6:.2f} MB)"
        )
    print(f"render: median {statistics.median(times):.2f} s, max {max(times):.2f} s of {args.runs} runs")
    print(f"peak RSS {peak_mib:.0f} MiB (samples held in memory included)")


if __name__ == "__main__":
    main()
