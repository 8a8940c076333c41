"""A stand-in Hugging Face Hub for the sandbox and the test world: the tokenizer files the trainers load.

It answers `GET /<org>/<repo>/resolve/<revision>/<file>` as the Hub does for the files lorabot fetches (200 with the
bytes and `X-Repo-Commit`; 404 with `X-Error-Code: EntryNotFound` for a file the repo lacks; 404
`RepositoryNotFound` for another repo), with small deterministic stand-ins for the real files, and records every
request so a test can say who asked for what.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

COMMIT = hashlib.sha1(b"lorabot stand-in hub").hexdigest()


def _clip_files(max_length: int) -> dict[str, bytes]:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "kana</w>": 2, "girl</w>": 3}
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    return {
        "vocab.json": json.dumps(vocab).encode(),
        "merges.txt": b"#version: 0.2\nk a\n",
        "tokenizer_config.json": json.dumps({"model_max_length": max_length, **special}).encode(),
        "special_tokens_map.json": json.dumps({**special, "pad_token": "<|endoftext|>"}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": vocab}}).encode(),
    }


# The repos sd-scripts' trainers load tokenizers from (jobs/sdscripts.py TOKENIZERS); like the real ones, the CLIP
# repos have no added_tokens.json and google/t5-v1_1-xxl has no tokenizer.json.
REPOS: dict[str, dict[str, bytes]] = {
    "openai/clip-vit-large-patch14": _clip_files(77),
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": _clip_files(77),
    "google/t5-v1_1-xxl": {
        "spiece.model": hashlib.sha256(b"stand-in sentencepiece model").digest() * 8,
        "tokenizer_config.json": json.dumps({"model_max_length": 512, "extra_ids": 100}).encode(),
        "special_tokens_map.json": json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}).encode(),
    },
}


@dataclass
class HubRequest:
    path: str
    status: int


@dataclass
class StandinHub:
    """`with StandinHub() as hub:` serves on 127.0.0.1; `hub.url` is the endpoint (HF_ENDPOINT's meaning)."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=lambda: {k: dict(v) for k, v in REPOS.items()})
    requests: list[HubRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "the hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandinHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="standin-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StandinHub:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def fetched(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if r.status == 200]

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        repo, sep, rest = path.lstrip("/").partition("/resolve/")
        _revision, _, filename = rest.partition("/")
        files = self.repos.get(repo) if sep else None
        if files is None:
            return 404, b"Repository Not Found", {"X-Error-Code": "RepositoryNotFound"}
        if filename not in files:
            return 404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
        return 200, files[filename], {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(files[filename]).hexdigest()}"'}


def _handler(hub: StandinHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self, with_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            status, body, headers = hub.answer(path)
            with hub._lock:
                hub.requests.append(HubRequest(path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve(with_body=True)

        def do_HEAD(self) -> None:
            self._serve(with_body=False)

    return Handler
