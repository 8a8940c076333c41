"""Link download throughput and peak memory: `python -m bench.download [--sizes 50,200]` (MB).

A local HTTPS server (test CA from trustme, 127.0.0.1) serves a zip-headed file of each size; a fresh child process
downloads it with `jobs.fetch.fetch_dataset` (guard with 127.0.0.1 allow-listed, the real TLS path) and reports its
own peak RSS (VmHWM). The baseline child only imports. Flat peak RSS as the file grows = the body is streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.ingest import peak_rss_kib

CACHE = Path(tempfile.gettempdir()) / "lorabot-bench"


def served_file(size_mb: int) -> Path:
    """A file of `size_mb` MB that starts like a zip (the fetch checks the magic); sparse, so instant to make."""
    path = CACHE / f"download-{size_mb}MB.zip"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            out.write(b"PK\x03\x04")
            out.truncate(size_mb * 1_000_000)
    return path


def child(url: str | None, ca_path: str | None, dest: str | None) -> None:
    from jobs.fetch import FetchTimeouts, FetchTransport, SsrfGuard, fetch_dataset

    seconds = 0.0
    if url and ca_path and dest:
        context = ssl.create_default_context(cafile=ca_path)
        started = time.perf_counter()
        asyncio.run(
            fetch_dataset(
                url,
                Path(dest),
                max_bytes=10**10,
                guard=SsrfGuard(allow=["127.0.0.1/32"]),
                timeouts=FetchTimeouts(),
                transport=FetchTransport(ssl_context=context),
            )
        )
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_kib() / 1024}))


def run_child(*args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.download", "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def start_server(folder: Path) -> tuple[int, str, threading.Event]:
    """Serve `folder` over HTTPS on 127.0.0.1 in a thread; returns (port, CA pem path, stop event)."""
    import trustme
    from aiohttp import web

    ca = trustme.CA()
    ca_path = folder / "bench-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ready: dict[str, int] = {}
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        app = web.Application()
        app.router.add_static("/", folder)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        ready["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    started.wait(10)
    return ready["port"], str(ca_path), stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50,200", help="file sizes in MB, comma-separated")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        child(*[*options.child, None, None, None][:3])
        return
    sizes = [int(size) for size in options.sizes.split(",")]
    for size in sizes:
        served_file(size)
    port, ca_path, stop = start_server(CACHE)
    try:
        baseline = run_child()
        print(f"baseline (imports only): peak RSS {baseline['peak_rss_mib']:.0f} MiB")
        print("| file MB | seconds | MB/s | peak RSS MiB | over baseline MiB |")
        print("|---:|---:|---:|---:|---:|")
        for size in sizes:
            dest = Path(tempfile.mkdtemp(dir=CACHE)) / "dataset.zip"
            try:
                result = run_child(f"https://127.0.0.1:{port}/download-{size}MB.zip", ca_path, str(dest))
            finally:
                shutil.rmtree(dest.parent)
            print(
                f"| {size} | {result['seconds']:.1f} | {size / result['seconds']:.0f} |"
                f" {result['peak_rss_mib']:.0f} | {result['peak_rss_mib'] - baseline['peak_rss_mib']:.0f} |"
            )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
