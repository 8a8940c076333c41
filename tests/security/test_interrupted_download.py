"""`lorabot plan <link>` stopped mid-download by SIGTERM or SIGINT leaves nothing behind: no `.partial`, no temp folder.

A real subprocess (the installed `lorabot` command) downloads from a local server that sends the zip's first bytes
and then holds the connection open; once the partial file exists, the signal arrives.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


class HoldingServer:
    """Answers any GET with a 1 MB zip's first 64 kB, then sends nothing until stopped."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        held: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: 1000000\r\n\r\n"
            conn.sendall(head + b"PK\x03\x04" + bytes(65_532))
            held.append(conn)
        for conn in held:
            conn.close()
        self._sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def holding_server() -> Iterator[HoldingServer]:
    server = HoldingServer()
    yield server
    server.stop()


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_link_download_leaves_nothing(
    holding_server: HoldingServer, tmp_path: Path, sig: signal.Signals
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "LORABOT_FETCH_ALLOW_HTTP": "true",
        "LORABOT_FETCH_ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "LORABOT_FETCH_READ_TIMEOUT_S": "60",
        "LORABOT_FETCH_MIN_RATE_KB_S": "0",
    }
    url = f"http://127.0.0.1:{holding_server.port}/data.zip"
    process = subprocess.Popen(
        [str(BIN / "lorabot"), "plan", url, "--built-in-prices"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(tmp.rglob("*.partial")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        time.sleep(0.2)  # the first bytes are written
        process.send_signal(sig)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig, err
    assert err.rstrip().endswith(f"lorabot plan: stopped by {sig.name}; nothing was kept"), err
    assert "Traceback" not in err
    assert leftovers(tmp) == [], "the partial download and the plan's temp folder must be removed"
