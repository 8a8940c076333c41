"""A stand-in Hugging Face Hub for the sandbox and the test world: the tokenizer files the trainers load and the
WD14 tagger's model files the CPU stage captions with.

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


# What the WD14 tagger reads with --onnx (jobs/captions.py WD14_FILES). The sandbox's model is an ONNX ModelProto
# holding only ir_version and producer_name (the stand-in tagger reads no further; the tests serve a real tiny model
# with the tagger's signature instead, tests/world/wd14_model.py). Tags: the CSV's columns and categories (9 rating,
# 0 general, 4 character); a count of 1,000,000 or more makes the stand-in give the tag to every image.
WD14_TAGS_CSV = (
    b"tag_id,name,category,count\n"
    b"9999999,general,9,800000\n9999998,sensitive,9,500000\n9999997,questionable,9,100000\n9999996,explicit,9,90000\n"
    b"470575,1girl,0,4000000\n212816,solo,0,3500000\n1709,simple_background,0,1200000\n13197,long_hair,0,600000\n"
    b"3389,smile,0,550000\n1821,looking_at_viewer,0,500000\n2373,open_mouth,0,300000\n5403,red_coat,0,20000\n"
    b"2585,outdoors,0,200000\n4080,hat,0,150000\n11429,holding,0,140000\n1300281,upper_body,0,250000\n"
    b"616,nose,0,20000\n1347,lips,0,30000\n"
    b"8801,hatsune_miku,4,90000\n"
)
STANDIN_ONNX = b"\x08\x08" + b"\x12" + bytes([len(b"lorabot-standin")]) + b"lorabot-standin"


def _wd14_files() -> dict[str, bytes]:
    return {"model.onnx": STANDIN_ONNX, "selected_tags.csv": WD14_TAGS_CSV}


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
    "SmilingWolf/wd-v1-4-convnext-tagger-v2": _wd14_files(),
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
