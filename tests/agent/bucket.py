"""A small presigned-URL bucket for the agent's tests: GET with Range, PUT, and injectable faults.

As strict as S3 where the agent depends on it: a URL only works for the method it was signed for, a PUT without
`Content-Type: application/octet-stream` is refused (moto would store 0 bytes), and a missing object is a 404.
Faults the real world has and moto cannot do: a body cut off mid-way, and PUTs that fail for a while.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

KEY = b"test-bucket-signing-key"
RANGE = re.compile(r"bytes=(\d+)-$")


def _signature(method: str, key: str) -> str:
    return hmac.new(KEY, f"{method} {key}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Request:
    method: str
    key: str
    range: str | None
    status: int


@dataclass
class Bucket:
    objects: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    tear_after: dict[str, int] = field(default_factory=dict)  # key -> bytes sent before the next GET drops
    failing_puts: Counter[str] = field(default_factory=Counter)  # key -> PUTs still to answer 503
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def presign_get(self, key: str, expires_s: int = 3600) -> str:
        return f"{self.base_url}/{quote(key)}?X-Sig={_signature('GET', key)}&X-Expires={expires_s}"

    def presign_put(self, key: str, expires_s: int = 3600) -> str:
        return f"{self.base_url}/{quote(key)}?X-Sig={_signature('PUT', key)}&X-Expires={expires_s}"

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def read(self, key: str) -> bytes:
        return self.objects[key]

    def puts(self, key: str) -> int:
        return sum(1 for r in self.requests if r.method == "PUT" and r.key == key and r.status == 200)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


def _handler(bucket: Bucket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _key(self) -> tuple[str, bool]:
            parts = urlsplit(self.path)
            key = unquote(parts.path.lstrip("/"))
            sig = parse_qs(parts.query).get("X-Sig", [""])[0]
            return key, hmac.compare_digest(sig, _signature(self.command, key))

        def _answer(self, key: str, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            with bucket.lock:
                bucket.requests.append(Request(self.command, key, self.headers.get("Range"), status))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            key, signed = self._key()
            if not signed:
                return self._answer(key, 403, b"SignatureDoesNotMatch")
            data = bucket.objects.get(key)
            if data is None:
                return self._answer(key, 404, b"NoSuchKey")
            start = 0
            wanted = self.headers.get("Range")
            if wanted:
                match = RANGE.match(wanted)
                if not match:
                    return self._answer(key, 400, b"bad range")
                start = int(match.group(1))
                if start >= len(data):
                    return self._answer(key, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            tear = bucket.tear_after.pop(key, None)
            with bucket.lock:
                bucket.requests.append(Request("GET", key, wanted, 206 if wanted else 200))
            self.send_response(206 if wanted else 200)
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if tear is not None:
                self.wfile.write(body[:tear])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        def do_PUT(self) -> None:
            key, signed = self._key()
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if not signed:
                return self._answer(key, 403, b"SignatureDoesNotMatch")
            if self.headers.get("Content-Type") != "application/octet-stream":
                return self._answer(key, 400, b"PUT needs Content-Type: application/octet-stream")
            with bucket.lock:
                if bucket.failing_puts[key] > 0:
                    bucket.failing_puts[key] -= 1
                    failing = True
                else:
                    failing = False
                    bucket.objects[key] = body
            self._answer(key, 503 if failing else 200, b"SlowDown" if failing else b"")

    return Handler


class BucketServer:
    def __init__(self) -> None:
        self.bucket = Bucket()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.bucket))
        self.server.daemon_threads = True
        self.bucket.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Bucket:
        self.thread.start()
        return self.bucket

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
