"""The manifest a pod's agent runs from (docs/CONTRACTS.md), the keys it writes to, and the pod's start command.

Pods never hold cloud credentials: every object they read or write is a presigned URL in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from jobs.tryplan import requests_key
from storage.artifacts import dataset_key

MANIFEST_VERSION = 1
AGENT_FILE = "lorabot-agent.pyz"

# What a pod runs first: download the agent (retrying: a pod that cannot fetch it is billed for nothing), then
# replace itself with it. The SDK pastes dockerArgs into a GraphQL string without escaping, so the command may hold
# no double quote and no backslash: the source travels hex-encoded as an argument, and the URL and stage are read
# from the environment by name (never printed: the URL is a presigned secret).
BOOTSTRAP_SOURCE = """
import os, sys, time, urllib.request
url, path, stage = os.environ[sys.argv[2]], sys.argv[3], os.environ[sys.argv[4]]
for attempt in range(8):
    try:
        urllib.request.urlretrieve(url, path + ".part")
        os.replace(path + ".part", path)
        break
    except Exception as exc:
        print(f"lorabot bootstrap: agent download failed ({type(exc).__name__}), try {attempt + 1} of 8", flush=True)
        time.sleep(min(30, 2**attempt))
else:
    sys.exit("lorabot bootstrap: could not download the agent")
os.execvp(sys.executable, [sys.executable, path, stage])
"""


def start_command() -> str:
    source = BOOTSTRAP_SOURCE.strip().encode().hex()
    loader = "import sys;exec(bytes.fromhex(sys.argv[1]))"
    return f"python3 -c '{loader}' {source} LORABOT_AGENT_URL {AGENT_FILE} LORABOT_STAGE"


class Presigner(Protocol):
    def presign_get(self, key: str, expires_s: int) -> str: ...

    def presign_put(self, key: str, expires_s: int) -> str: ...


@dataclass(frozen=True)
class JobKeys:
    """Where one job's objects live in the artifact store (the bucket layout of docs/CONTRACTS.md)."""

    job_id: str
    output_name: str

    @property
    def prefix(self) -> str:
        return f"jobs/{self.job_id}/"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}manifest.json"

    def status(self, stage: str) -> str:
        return f"{self.prefix}status/{stage}.json"

    def history(self, stage: str) -> str:
        return f"{self.prefix}status/{stage}.history.jsonl"

    def log(self, stage: str) -> str:
        return f"{self.prefix}logs/{stage}.log"

    def checkpoint(self, epoch: int) -> str:
        return f"{self.prefix}epochs/{epoch:06d}/{self.output_name}-{epoch:06d}.safetensors"

    def sample(self, epoch: int, index: int) -> str:
        return f"{self.prefix}epochs/{epoch:06d}/sample-{index:02d}.png"

    @property
    def final(self) -> str:
        return f"{self.prefix}final/{self.output_name}.safetensors"

    @property
    def captioned_dataset(self) -> str:
        """The dataset the CPU pod captioned (its hash is known only then); the bot stores it as datasets/<sha>.zip."""
        return f"{self.prefix}captions/dataset.zip"


def agent_key(sha256: str) -> str:
    return f"agent/{sha256}.pyz"


def recipe_hash(env_recipe: dict[str, Any]) -> str:
    """The cache key of an environment recipe: the agent keys `lorabot/env/<hash>` with the same bytes."""
    canonical = json.dumps(env_recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


@dataclass(frozen=True)
class ModelSource:
    """One base-model file. `size` is checked after the download, so it is only sent when the bytes are pinned by a
    sha256; otherwise it travels as `size_hint` (catalog sizes are approximate) and only feeds the ETA."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    token_env: str | None = None
    extra_files: tuple[ModelSource, ...] = ()

    def to_manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size if self.sha256 else None,
            "size_hint": self.size,
            "filename": self.filename,
            "token_env": self.token_env,
        }
        if self.extra_files:
            entry["extra_files"] = [extra.to_manifest() for extra in self.extra_files]
        return entry


def build_manifest(
    *,
    job_id: str,
    output_name: str,
    stages: list[str],
    env_recipe: dict[str, Any],
    model: ModelSource,
    dataset_sha256: str,
    dataset_size: int,
    script: str,
    args: list[str],
    files: dict[str, str],
    epochs: int,
    sample_prompts: int,
    store: Presigner,
    expires_s: int,
    status_interval_s: float = 5.0,
    ready_timeout_s: int = 3600,
    trainer_silence_s: int = 1200,
    tokenizers: list[dict[str, Any]] | None = None,
    captions: dict[str, Any] | None = None,
    caption_only: bool = False,
) -> dict[str, Any]:
    """`tokenizers`: what the CPU stage fetches for the trainer's offline Hub (jobs.sdscripts.tokenizer_manifest).
    `captions`: what the CPU stage tags (jobs.captions `CaptionPlan.manifest_section`), or None.
    `caption_only`: a /caption job: the CPU stage tags and stops (no model download; no GPU stage follows)."""
    keys = JobKeys(job_id, output_name)

    def put(key: str) -> str:
        return store.presign_put(key, expires_s)

    stage_names = ("prepare", "train")
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "job_id": job_id,
        "output_name": output_name,
        "stages": stages,
        "env": env_recipe,
        "model": model.to_manifest(),
        "tokenizers": list(tokenizers or []),
        "dataset": {
            "url": store.presign_get(dataset_key(dataset_sha256), expires_s),
            "sha256": dataset_sha256,
            "size": dataset_size,
        },
        "script": script,
        "args": list(args),
        "files": dict(files),
        "epochs": epochs,
        "sample_prompts": sample_prompts,
        "uploads": {
            "status": {stage: put(keys.status(stage)) for stage in stage_names},
            "history": {stage: put(keys.history(stage)) for stage in stage_names},
            "log": {stage: put(keys.log(stage)) for stage in stage_names},
            "final": put(keys.final),
            "checkpoints": {str(e): put(keys.checkpoint(e)) for e in range(1, epochs + 1)},
            "samples": {str(e): [put(keys.sample(e, i)) for i in range(sample_prompts)] for e in range(1, epochs + 1)},
        },
        "status_interval_s": status_interval_s,
        "ready_timeout_s": ready_timeout_s,
        "trainer_silence_s": trainer_silence_s,
    }
    if captions is not None:
        manifest["captions"] = captions
        manifest["uploads"]["captions"] = put(keys.captioned_dataset)
    if caption_only:
        manifest["caption_only"] = True
    return manifest


# --- /try (docs/CONTRACTS.md "Try requests") ----------------------------------------------------------------------

SERVE_STAGE = "serve"


def add_serve(manifest: dict[str, Any], *, store: Presigner, expires_s: int, poll_s: float = 5.0) -> dict[str, Any]:
    """A copy of a `build_manifest` manifest whose pod serves /try after training (the test window): the `serve`
    section (the requests document's GET URL, how often to poll) and the serve stage's status, history and log."""
    copied: dict[str, Any] = json.loads(json.dumps(manifest))
    keys = JobKeys(copied["job_id"], copied["output_name"])
    copied["serve"] = {"requests_url": store.presign_get(requests_key(keys.job_id), expires_s), "poll_s": poll_s}
    uploads = copied["uploads"]
    for kind, key in (("status", keys.status), ("history", keys.history), ("log", keys.log)):
        uploads.setdefault(kind, {})[SERVE_STAGE] = store.presign_put(key(SERVE_STAGE), expires_s)
    return copied


def try_pod_manifest(
    manifest: dict[str, Any], *, store: Presigner, expires_s: int, poll_s: float = 5.0
) -> dict[str, Any]:
    """The manifest of a TRY pod (`stages: ["serve"]`) from the job's `build_manifest` manifest: the same env,
    model, tokenizers and launcher, and no upload URL but the serve stage's own, so a TRY pod can never overwrite
    a training output."""
    served = add_serve(manifest, store=store, expires_s=expires_s, poll_s=poll_s)
    served["stages"] = [SERVE_STAGE]
    served.pop("captions", None)
    served["uploads"] = {
        kind: {SERVE_STAGE: served["uploads"][kind][SERVE_STAGE]} for kind in ("status", "history", "log")
    }
    return served
