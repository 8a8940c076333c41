"""S3 for the test world: moto's server on 127.0.0.1, reached by real boto3 and by stdlib urllib.

The pods hold no credentials and talk to the bucket only through presigned URLs (docs/CONTRACTS.md), so the
world must serve those over real HTTP: `ThreadedMotoServer`, not the in-process `mock_aws`.
Every HTTP request the server answers is recorded (method, path, query, status, body size) so tests can
assert what a client really sent.

Mind: moto keeps its state per process. A test that uses `mock_aws` resets that state, so a world bucket
must not outlive its test (the fixture makes a fresh bucket per test).
"""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from moto.server import DomainDispatcherApplication, MotoRequestHandler, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
FAKE_KEY_ID = "testing-key-id"
FAKE_SECRET = "testing-secret-key"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int
    content_length: int
    content_type: str


_SIGNATURE_MISMATCH = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request '
    b"signature we calculated does not match the signature you provided. Check your key and signing method."
    b"</Message></Error>"
)


class _RecordingApp:
    """WSGI middleware that records each request once the response status is known.

    moto does not check presigned signatures; real S3 answers 403 SignatureDoesNotMatch when a signed header
    differs. For URLs minted by S3World.presign_put we know the signed Content-Type, so we enforce it.
    """

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.signed_content_types: dict[str, str] = {}  # X-Amz-Signature -> Content-Type it signed

    def _signature_mismatch(self, environ: dict[str, Any]) -> bool:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        signature = (query.get("X-Amz-Signature") or [""])[0]
        expected = self.signed_content_types.get(signature)
        return expected is not None and environ.get("CONTENT_TYPE", "") != expected

    unavailable = False  # an outage: every request answers 503 SlowDown (set through S3Server.set_available)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.unavailable:
            app: WsgiApp = _unavailable
        elif self._signature_mismatch(environ):
            app = _refuse_signature
        else:
            app = self._app

        def recording_start_response(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            record = RecordedRequest(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),
                query=environ.get("QUERY_STRING", ""),
                status=int(status.split()[0]),
                content_length=int(environ.get("CONTENT_LENGTH") or 0),
                content_type=environ.get("CONTENT_TYPE", ""),
            )
            with self._lock:
                self.requests.append(record)
            return start_response(status, headers, *rest)

        return app(environ, recording_start_response)


def _refuse_signature(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response(
        "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(_SIGNATURE_MISMATCH)))]
    )
    return [_SIGNATURE_MISMATCH]


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.'
    b"</Message></Error>"
)


def _unavailable(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("503 Slow Down", [("Content-Type", "application/xml"), ("Content-Length", str(len(_SLOW_DOWN)))])
    return [_SLOW_DOWN]


class _RecordingMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose WSGI app is wrapped by `_RecordingApp` (moto exposes no request log)."""

    def __init__(self) -> None:
        # port 0: the OS picks a free port; get_host_and_port() reads the real one back
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.recorder = _RecordingApp(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        # same as moto's, with our app; threaded=True so a slow client cannot block the others

        self._server = make_server(
            self._ip_address, self._port, self.recorder, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


class S3Server:
    """One moto server for the session; buckets are per test (see S3World)."""

    def __init__(self) -> None:
        self._server = _RecordingMotoServer()
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._server.recorder.requests)

    @property
    def signed_content_types(self) -> dict[str, str]:
        return self._server.recorder.signed_content_types

    def set_available(self, available: bool) -> None:
        """Outage knob: while unavailable, every request (boto3's and presigned URLs') answers 503 SlowDown."""
        self._server.recorder.unavailable = not available

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()  # type: ignore[union-attr]  # frees the port now, not at GC


class S3World:
    """A fresh bucket on the shared server, with the helpers tests and fixtures need."""

    def __init__(self, server: S3Server, bucket: str | None = None) -> None:
        self.server = server
        self.endpoint_url = server.endpoint_url
        self.bucket = bucket or f"lorabot-test-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        self._first_request = len(server.requests)
        self.client.create_bucket(Bucket=self.bucket)

    @property
    def env(self) -> dict[str, str]:
        """What a process (the bot, `storage/artifacts.py`) needs to reach this bucket with plain boto3."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "LORABOT_S3_BUCKET": self.bucket,
        }

    def new_bucket(self) -> S3World:
        return S3World(self.server)

    def presign_put(self, key: str, expires_s: int = 3600) -> str:
        # The URL signs Content-Type: uploaders must send exactly application/octet-stream (CONTRACTS.md)
        url = str(
            self.client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.bucket, "Key": key, "ContentType": "application/octet-stream"},
                ExpiresIn=expires_s,
            )
        )
        signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
        self.server.signed_content_types[signature] = "application/octet-stream"
        return url

    def presign_get(self, key: str, expires_s: int = 3600) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
        )

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def read(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return bytes(body.read())

    def exists(self, key: str) -> bool:
        return key in self.keys(key)

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(found)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests the server answered since this world's bucket was made (any bucket: filter by path)."""
        return self.server.requests[self._first_request :]

    def requests_for(self, key: str) -> Iterator[RecordedRequest]:
        path = f"/{self.bucket}/{key}"
        return (r for r in self.requests if r.path == path)


def urllib_put(url: str, data: bytes) -> int:
    """Upload the way the stdlib-only agent does."""
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def urllib_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())
