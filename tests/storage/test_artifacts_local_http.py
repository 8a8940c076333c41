"""The local store's signed URLs, served by storage.http over real HTTP: links expire, can't be forged or
repurposed, downloads resume with Range, and uploads are capped and atomic (issue 5, issue 7)."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from storage.artifacts import OCTET_STREAM
from storage.signing import Operation
from tests.storage._artifact_worlds import URL_SECRET, LocalWorld, served_local_store

KEY = "jobs/j42/epochs/000001/kana-000001.safetensors"
CAP = 64 * 1024


@pytest.fixture
def world(tmp_path: Path) -> Iterator[LocalWorld]:
    with served_local_store(tmp_path / "store", max_put_bytes=CAP) as served:
        yield served


def _call(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def _put(url: str, body: bytes) -> tuple[int, bytes]:
    status, _headers, text = _call(url, "PUT", body, {"Content-Type": OCTET_STREAM})
    return status, text


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _objects_and_temps(world: LocalWorld) -> list[str]:
    return sorted(str(p.relative_to(world.root)) for p in world.root.rglob("*") if p.is_file())


def test_url_shape_is_base_artifacts_key_and_signed_query(world: LocalWorld) -> None:
    url = world.store.presign_get("jobs/j42/epochs/000001/sample 00.png", 60)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == world.store.base_url
    assert parts.path == "/artifacts/jobs/j42/epochs/000001/sample%2000.png"
    assert sorted(parse_qs(parts.query)) == ["exp", "op", "sig"]
    assert parse_qs(parts.query)["op"] == ["get"]


def test_put_then_get_with_content_length_and_recorded_sha256(world: LocalWorld) -> None:
    """The server hashes while writing, so head() knows the sha256 of a pod's upload without reading it."""
    body = os.urandom(10_000)
    assert _put(world.store.presign_put(KEY, 60), body)[0] == 200
    head = world.store.head(KEY)
    assert head is not None and head.sha256 == hashlib.sha256(body).hexdigest()

    status, headers, got = _call(world.store.presign_get(KEY, 60))
    assert (status, got) == (200, body)
    assert headers["Content-Length"] == str(len(body))
    assert headers["Accept-Ranges"] == "bytes"


def test_head_request_gives_the_length_without_the_body(world: LocalWorld) -> None:
    world.store.put_bytes(KEY, b"x" * 1234)
    status, headers, body = _call(world.store.presign_get(KEY, 60), method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "1234", b"")


def test_range_get_resumes_a_download(world: LocalWorld) -> None:
    """The agent resumes a model download with Range: the server answers 206 with exactly the asked bytes."""
    data = os.urandom(50_000)
    world.store.put_bytes(KEY, data)
    url = world.store.presign_get(KEY, 60)

    status, headers, part = _call(url, headers={"Range": "bytes=100-199"})
    assert (status, part) == (206, data[100:200])
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"

    status, headers, rest = _call(url, headers={"Range": "bytes=30000-"})
    assert (status, rest) == (206, data[30000:])
    assert headers["Content-Length"] == str(len(data) - 30000)

    status, _headers, _body = _call(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert status == 416


def test_expired_link_is_refused_with_link_expired(world: LocalWorld) -> None:
    world.store.put_bytes(KEY, b"weights")
    get_url = world.store.presign_get(KEY, 60)
    put_url = world.store.presign_put(KEY, 60)
    world.clock.advance(61)
    status, _headers, body = _call(get_url)
    assert (status, body.decode()) == (403, "link expired")
    assert _put(put_url, b"new") == (403, b"link expired")
    assert world.store.get_bytes(KEY) == b"weights"


def test_link_still_works_until_its_last_second(world: LocalWorld) -> None:
    world.store.put_bytes(KEY, b"weights")
    url = world.store.presign_get(KEY, 60)
    world.clock.advance(59)
    assert _call(url)[0] == 200


@pytest.mark.parametrize(
    ("tamper", "description"),
    [
        (lambda url: url.replace("kana-000001", "kana-000002"), "another key"),
        (lambda url: url.replace("/artifacts/jobs/j42/", "/artifacts/jobs/j43/"), "another job"),
        (lambda url: _with_query(url, sig="A" * 43), "a made-up signature"),
        (lambda url: _with_query(url, exp=str(int(parse_qs(urlsplit(url).query)["exp"][0]) + 3600)), "later expiry"),
        (lambda url: _with_query(url, op="put"), "the operation flipped"),
        (lambda url: _with_query(url, op="delete"), "an unknown operation"),
        (lambda url: url.split("?")[0], "no query at all"),
        (lambda url: _with_query(url, exp="soon"), "a non-numeric expiry"),
    ],
)
def test_tampered_get_links_are_refused_as_invalid_signature(
    world: LocalWorld, tamper: Callable[[str], str], description: str
) -> None:
    world.store.put_bytes("jobs/j42/epochs/000001/kana-000001.safetensors", b"a")
    world.store.put_bytes("jobs/j42/epochs/000001/kana-000002.safetensors", b"b")
    world.store.put_bytes("jobs/j43/epochs/000001/kana-000001.safetensors", b"c")
    status, _headers, body = _call(tamper(world.store.presign_get(KEY, 60)))
    assert status == 403, description
    assert body.decode().startswith("invalid signature"), description


def test_a_forged_expiry_on_an_expired_link_is_still_invalid_not_expired(world: LocalWorld) -> None:
    """The MAC is checked first, so nothing about a tampered link is trusted, not even its expiry."""
    url = world.store.presign_get(KEY, 60)
    world.clock.advance(3600)
    status, _headers, body = _call(_with_query(url, exp=str(int(world.clock.now().timestamp()) + 60)))
    assert (status, body.decode()) == (403, "invalid signature")


def test_a_link_signed_with_another_secret_is_refused(tmp_path: Path) -> None:
    """Only the bot's own secret makes a valid link: another deployment's links open nothing here."""
    with (
        served_local_store(tmp_path / "ours") as ours,
        served_local_store(tmp_path / "theirs", secret=b"another-deployment-secret") as theirs,
    ):
        ours.store.put_bytes(KEY, b"x")
        foreign = theirs.store.signer.url(ours.store.base_url, Operation.GET, KEY, 60)
        status, _headers, body = _call(foreign)
        assert (status, body.decode()) == (403, "invalid signature")


def test_get_with_a_put_signature_is_refused(world: LocalWorld) -> None:
    """A pod's upload link cannot be used to read the object, nor a download link to overwrite it."""
    world.store.put_bytes(KEY, b"weights")
    status, _headers, body = _call(world.store.presign_put(KEY, 60))
    assert (status, body.decode()) == (403, "this link is signed for PUT, not GET")
    assert _put(world.store.presign_get(KEY, 60), b"evil") == (403, b"this link is signed for GET, not PUT")
    assert world.store.get_bytes(KEY) == b"weights"


def test_missing_object_with_a_valid_link_is_404(world: LocalWorld) -> None:
    status, _headers, body = _call(world.store.presign_get(KEY, 60))
    assert status == 404
    assert KEY in body.decode()


def test_put_needs_octet_stream(world: LocalWorld) -> None:
    status, _headers, body = _call(world.store.presign_put(KEY, 60), "PUT", b"x", {"Content-Type": "text/plain"})
    assert status == 415
    assert "application/octet-stream" in body.decode()
    assert not world.store.exists(KEY)


def test_put_without_a_content_type_is_refused_too(world: LocalWorld) -> None:
    url = urlsplit(world.store.presign_put(KEY, 60))
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("PUT", f"{url.path}?{url.query}", body=b"x")  # http.client adds no Content-Type
        response = connection.getresponse()
        assert (response.status, response.read().decode()) == (
            415,
            "uploads must be sent with Content-Type: application/octet-stream, got None",
        )
    finally:
        connection.close()
    assert not world.store.exists(KEY)


def test_put_over_the_cap_with_content_length_is_refused_before_reading(world: LocalWorld) -> None:
    status, body = _put(world.store.presign_put(KEY, 60), b"x" * (CAP + 1))
    assert (status, body.decode()) == (413, f"upload too large: the limit is {CAP} bytes ({CAP + 1} bytes announced)")
    assert _objects_and_temps(world) == []


def test_put_over_the_cap_without_content_length_is_cut_off_and_leaves_no_file(world: LocalWorld) -> None:
    """A chunked upload that never says its size is counted while it streams and dropped at the cap."""
    url = urlsplit(world.store.presign_put(KEY, 60))
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    chunks = (b"y" * 8192 for _ in range(CAP // 8192 * 4))
    try:
        connection.request(
            "PUT", f"{url.path}?{url.query}", body=chunks, headers={"Content-Type": OCTET_STREAM}, encode_chunked=True
        )
        response = connection.getresponse()
        refusal = (response.status, response.read().decode())
    except (BrokenPipeError, ConnectionResetError):
        refusal = (413, "connection closed")  # the server may hang up before the client finishes: also a refusal
    finally:
        connection.close()
    assert refusal[0] == 413
    assert refusal[1] in ("connection closed", f"upload too large: the limit is {CAP} bytes (cut off while receiving)")
    assert _wait_for(lambda: _objects_and_temps(world) == [])


def test_an_upload_cut_off_by_the_client_leaves_no_file(world: LocalWorld) -> None:
    """A pod killed mid-upload (spot interruption) leaves neither a partial object nor a temp file."""
    world.store.put_bytes(KEY, b"previous checkpoint")
    url = urlsplit(world.store.presign_put(KEY, 60))
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as raw:
        raw.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTET_STREAM}\r\n"
            f"Content-Length: 10000\r\n\r\n".encode()
            + b"z" * 3000
        )
        time.sleep(0.1)
    assert _wait_for(lambda: list((world.root / "tmp").iterdir()) == [])
    assert world.store.get_bytes(KEY) == b"previous checkpoint"


def test_an_upload_replaces_an_object_atomically(world: LocalWorld) -> None:
    world.store.put_bytes(KEY, b"old")
    assert _put(world.store.presign_put(KEY, 60), b"new bytes")[0] == 200
    assert world.store.get_bytes(KEY) == b"new bytes"
    info = world.store.head(KEY)
    assert info is not None and info.sha256 == hashlib.sha256(b"new bytes").hexdigest()
    assert list((world.root / "tmp").iterdir()) == []


def test_served_requests_are_in_the_request_log(world: LocalWorld) -> None:
    assert _put(world.store.presign_put(KEY, 60), b"abc")[0] == 200
    assert _call(world.store.presign_get(KEY, 60))[0] == 200
    served = [(r.operation, r.key) for r in world.store.request_log()]
    assert ("PutObject", KEY) in served
    assert ("GetObject", KEY) in served


def test_the_secret_never_shows(world: LocalWorld) -> None:
    """Not in repr, not in a URL, not in a refusal."""
    secret_text = URL_SECRET.decode()
    url = world.store.presign_put(KEY, 60)
    world.clock.advance(120)
    texts = [repr(world.store), repr(world.store.signer), url, _put(url, b"x")[1].decode()]
    texts.append(_call(_with_query(world.store.presign_get(KEY, 60), sig="x"))[2].decode())
    assert all(secret_text not in text for text in texts)
    assert "<redacted>" in repr(world.store)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())
