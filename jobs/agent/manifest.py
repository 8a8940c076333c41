"""The manifest (docs/CONTRACTS.md, version 1): checked on arrival, then turned into paths on the volume."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .captions import CaptionSpec, parse_caption_spec
from .serve_spec import ServeSpec, parse_serve_spec

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PYTHON_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")
PLACEHOLDERS = (
    "{python}",
    "{venv}",
    "{sd_scripts}",
    "{env_dir}",
    "{tokenizers_dir}",
    "{job_dir}",
    "{data_dir}",
    "{output_dir}",
    "{model_path}",
    "{volume}",
)

# What the agent itself keeps in an environment's folder: no recipe file may take these names.
ENV_DIR_NAMES = ("venv", "sd-scripts", "COMPLETE")


class ManifestError(ValueError):
    pass


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data or data[key] is None:
        raise ManifestError(f"manifest {where}{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest {where}{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value) or ".." in value:
        raise ManifestError(f"manifest {what} {value!r} must be a plain file name (letters, digits, . _ -)")
    return value


def _argv(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ManifestError(f"manifest {what} must be a non-empty list of strings")
    return list(value)


@dataclass(frozen=True)
class EnvStep:
    name: str
    argv: list[str]
    cwd: str | None = None
    # How long the recipe's author expects the step to take (seconds): makes the ETA the bot reserves the GPU by
    # honest for steps like a torch install. None = the agent's default guess.
    expected_s: float | None = None


@dataclass(frozen=True)
class ModelFile:
    """A file of the base model on the volume: the checkpoint itself, or Flux's ae / clip_l / t5xxl."""

    url: str
    filename: str
    sha256: str | None
    size: int | None  # exact: checked after the download
    size_hint: int | None  # approximate: only for the ETA
    token_env: str | None


@dataclass(frozen=True)
class TokenizerFile:
    name: str
    url: str
    required: bool


@dataclass(frozen=True)
class Tokenizer:
    """A Hub repo's tokenizer files, fetched on the CPU stage into `{tokenizers_dir}/<folder>` (sd-scripts'
    `--tokenizer_cache_dir` layout: the repo id with "/" as "_"), because the trainer runs with the Hub offline."""

    repo: str
    revision: str
    folder: str
    files: list[TokenizerFile]


@dataclass(frozen=True)
class Manifest:
    raw: dict[str, Any]
    job_id: str
    output_name: str
    stages: list[str]
    env_name: str
    env_python: str
    # major.minor the venv's interpreter must be (None in recipes written before the recipe recorded it).
    env_python_version: str | None
    env_steps: list[EnvStep]
    # Files the recipe ships (e.g. pip's constraints.txt): written into the environment's folder before its steps.
    env_files: dict[str, str]
    launcher: list[str]
    gpu_check: list[str]
    recipe_hash: str
    model_url: str
    model_sha256: str | None
    model_size: int | None
    model_filename: str
    model_token_env: str | None
    # Every model file to fetch, the main checkpoint first.
    model_files: list[ModelFile]
    tokenizers: list[Tokenizer]
    dataset_url: str
    dataset_sha256: str
    dataset_size: int | None
    script: str
    args: list[str]
    files: dict[str, str]
    epochs: int
    sample_prompts: int
    uploads: dict[str, Any]
    status_interval_s: float
    ready_timeout_s: float
    # sd-scripts silent this long (no output at all) is taken as hung: stopped and reported, not billed for hours.
    trainer_silence_s: float = 1200.0
    # Auto-captioning on the prepare stage (agent/captions.py); None = train on the dataset as it is.
    captions: CaptionSpec | None = None
    # /try: the serve stage's requests (agent/serve.py); on a training manifest, served after a successful train.
    serve: ServeSpec | None = None
    # /caption: the prepare stage only tags the dataset (no base model, no tokenizers, no GPU stage follows).
    caption_only: bool = False

    def upload_url(self, *path: str) -> str | None:
        """uploads[path...] or None: a missing URL means the bot does not want that file."""
        node: Any = self.uploads
        for key in path:
            if isinstance(node, dict):
                node = node.get(key)
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node if isinstance(node, str) and node else None


def _positive_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ManifestError(f"manifest {name} must be a positive number of seconds")
    return float(value)


def _model_file(data: Any, where: str) -> ModelFile:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {where.rstrip('.')} must be an object")
    sha = data.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not SHA256.match(sha.lower())):
        raise ManifestError(f"manifest {where}sha256 must be 64 hex digits or null")

    def positive(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    return ModelFile(
        url=_require(data, "url", str, where),
        filename=_safe_name(_require(data, "filename", str, where), f"{where}filename"),
        sha256=sha.lower() if sha else None,
        size=positive(data.get("size")),
        size_hint=positive(data.get("size_hint")),
        token_env=data.get("token_env") or None,
    )


def _tokenizers(value: Any) -> list[Tokenizer]:
    if not isinstance(value, list):
        raise ManifestError("manifest tokenizers must be a list")
    found = []
    for index, item in enumerate(value):
        where = f"tokenizers[{index}]."
        if not isinstance(item, dict) or not isinstance(item.get("files"), list):
            raise ManifestError(f"manifest {where.rstrip('.')} must be an object with a files list")
        files = []
        for entry in item["files"]:
            if not isinstance(entry, dict):
                raise ManifestError(f"manifest {where}files must hold objects")
            name = _safe_name(_require(entry, "name", str, f"{where}files[]."), f"{where}files[].name")
            files.append(
                TokenizerFile(name, _require(entry, "url", str, f"{where}files[]."), bool(entry.get("required")))
            )
        found.append(
            Tokenizer(
                repo=_require(item, "repo", str, where),
                revision=str(item.get("revision") or "main"),
                folder=_safe_name(_require(item, "folder", str, where), f"{where}folder"),
                files=files,
            )
        )
    return found


def _python_version(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not PYTHON_VERSION.match(value):
        raise ManifestError(f"manifest env.python_version must be a major.minor like '3.11', got {value!r}")
    return value


def recipe_hash(env: dict[str, Any]) -> str:
    """The hash of the whole recipe, byte for byte as jobs/manifest.py `recipe_hash` computes it on the bot."""
    return hashlib.sha256(json.dumps(env, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def parse_manifest(body: bytes) -> Manifest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest must be a JSON object")
    if data.get("version") != 1:
        raise ManifestError(f"manifest version {data.get('version')!r} is not supported (expected 1)")
    env = _require(data, "env", dict, "")
    model = _require(data, "model", dict, "")
    dataset = _require(data, "dataset", dict, "")
    steps = []
    for index, step in enumerate(_require(env, "steps", list, "env.")):
        if not isinstance(step, dict):
            raise ManifestError(f"manifest env.steps[{index}] must be an object")
        cwd = step.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ManifestError(f"manifest env.steps[{index}].cwd must be a string")
        expected = step.get("expected_s")
        if expected is not None and (
            isinstance(expected, bool) or not isinstance(expected, int | float) or expected < 0
        ):
            raise ManifestError(f"manifest env.steps[{index}].expected_s must be a number of seconds ≥ 0")
        steps.append(
            EnvStep(
                _require(step, "name", str, f"env.steps[{index}]."),
                _argv(step.get("argv"), f"env.steps[{index}].argv"),
                cwd,
                float(expected) if expected is not None else None,
            )
        )
    env_files = env.get("files", {})
    if not isinstance(env_files, dict) or not all(isinstance(v, str) for v in env_files.values()):
        raise ManifestError("manifest env.files must map file names to text")
    for name in env_files:
        _safe_name(name, "env.files name")
        if name in ENV_DIR_NAMES:
            raise ManifestError(f"manifest env.files name {name!r} is taken by the environment's own {name}")
    stages = data.get("stages", ["train"])
    if not isinstance(stages, list) or not set(stages) <= {"prepare", "train", "serve"}:
        raise ManifestError(f"manifest stages must be a list of 'prepare'/'train'/'serve', got {stages!r}")
    try:
        serve = parse_serve_spec(data.get("serve"), stages)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    dataset_sha = _require(dataset, "sha256", str, "dataset.").lower()
    if not SHA256.match(dataset_sha):
        raise ManifestError("manifest dataset.sha256 must be 64 hex digits")
    model_sha = model.get("sha256")
    if model_sha is not None and (not isinstance(model_sha, str) or not SHA256.match(model_sha.lower())):
        raise ManifestError("manifest model.sha256 must be 64 hex digits or null")
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ManifestError("manifest files must map file names to text")
    for name in files:
        _safe_name(name, "files name")
    uploads = _require(data, "uploads", dict, "")
    epochs = _require(data, "epochs", int, "")
    if epochs < 1:
        raise ManifestError("manifest epochs must be at least 1")
    interval = data.get("status_interval_s", 5)
    timeout = data.get("ready_timeout_s", 3600)
    if not isinstance(interval, (int, float)) or interval <= 0:
        raise ManifestError("manifest status_interval_s must be a positive number")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ManifestError("manifest ready_timeout_s must be a positive number")
    size = model.get("size")
    main_file = _model_file(model, "model.")
    extras = model.get("extra_files") or []
    if not isinstance(extras, list):
        raise ManifestError("manifest model.extra_files must be a list")
    extra_files = [_model_file(item, f"model.extra_files[{i}].") for i, item in enumerate(extras)]
    try:
        captions = parse_caption_spec(data.get("captions"))
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    caption_only = data.get("caption_only", False)
    if not isinstance(caption_only, bool) or (caption_only and captions is None):
        raise ManifestError("manifest caption_only must be true or false, and true only with a captions section")
    if len({f.filename for f in [main_file, *extra_files]}) != 1 + len(extra_files):
        raise ManifestError("manifest model files must have distinct file names")
    return Manifest(
        raw=data,
        job_id=_safe_name(_require(data, "job_id", str, ""), "job_id"),
        output_name=_safe_name(_require(data, "output_name", str, ""), "output_name"),
        stages=list(stages),
        env_name=_require(env, "name", str, "env."),
        env_python=_require(env, "python", str, "env."),
        env_python_version=_python_version(env.get("python_version")),
        env_steps=steps,
        env_files=dict(env_files),
        launcher=_argv(env.get("launcher"), "env.launcher"),
        gpu_check=_argv(env.get("gpu_check"), "env.gpu_check"),
        recipe_hash=recipe_hash(env),
        model_url=_require(model, "url", str, "model."),
        model_sha256=model_sha.lower() if model_sha else None,
        model_size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None,
        model_filename=_safe_name(_require(model, "filename", str, "model."), "model.filename"),
        model_token_env=model.get("token_env") or None,
        model_files=[main_file, *extra_files],
        tokenizers=_tokenizers(data.get("tokenizers") or []),
        dataset_url=_require(dataset, "url", str, "dataset."),
        dataset_sha256=dataset_sha,
        dataset_size=dataset.get("size") if isinstance(dataset.get("size"), int) else None,
        script=_safe_name(_require(data, "script", str, ""), "script"),
        args=[str(a) for a in _require(data, "args", list, "")],
        files=dict(files),
        epochs=epochs,
        sample_prompts=int(data.get("sample_prompts", 0) or 0),
        uploads=uploads,
        status_interval_s=float(interval),
        ready_timeout_s=float(timeout),
        trainer_silence_s=_positive_seconds(data.get("trainer_silence_s", 1200), "trainer_silence_s"),
        captions=captions,
        serve=serve,
        caption_only=caption_only,
    )


@dataclass(frozen=True)
class Layout:
    """Where everything lives on the volume (docs/CONTRACTS.md "Layout on the volume")."""

    volume: Path
    manifest: Manifest

    @property
    def root(self) -> Path:
        return self.volume / "lorabot"

    @property
    def env_dir(self) -> Path:
        return self.root / "env" / self.manifest.recipe_hash

    @property
    def venv(self) -> Path:
        return self.env_dir / "venv"

    @property
    def sd_scripts(self) -> Path:
        return self.env_dir / "sd-scripts"

    @property
    def env_complete(self) -> Path:
        return self.env_dir / "COMPLETE"

    @property
    def model_path(self) -> Path:
        return self.models_dir / self.manifest.model_filename

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "datasets" / self.manifest.dataset_sha256

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def tagger_models_dir(self) -> Path:
        """The WD14 tagger's --model_dir: one folder per Hub repo inside, as the tagger names them."""
        return self.models_dir / "wd14"

    @property
    def captioned_dir(self) -> Path:
        """Pointers from (source dataset, caption settings) to the captioned dataset, and its zip."""
        return self.root / "captioned"

    @property
    def hf_home(self) -> Path:
        """HF_HOME of the trainer: whatever the Hugging Face libraries keep lands on the volume, never fetched twice."""
        return self.root / "hf"

    @property
    def tokenizers_dir(self) -> Path:
        return self.hf_home / "tokenizers"

    @property
    def job_dir(self) -> Path:
        return self.root / "jobs" / self.manifest.job_id

    @property
    def data_dir(self) -> Path:
        return self.job_dir / "data"

    @property
    def output_dir(self) -> Path:
        return self.job_dir / "output"

    @property
    def ready(self) -> Path:
        return self.job_dir / "READY"

    @property
    def logs_dir(self) -> Path:
        return self.job_dir / "logs"

    @property
    def status_dir(self) -> Path:
        return self.job_dir / "status"

    @property
    def ledger(self) -> Path:
        return self.job_dir / "uploads.json"

    def placeholders(self) -> dict[str, str]:
        return {
            "{python}": self.manifest.env_python,
            "{venv}": str(self.venv),
            "{sd_scripts}": str(self.sd_scripts),
            "{env_dir}": str(self.env_dir),
            "{tokenizers_dir}": str(self.tokenizers_dir),
            "{job_dir}": str(self.job_dir),
            "{data_dir}": str(self.data_dir),
            "{output_dir}": str(self.output_dir),
            "{model_path}": str(self.model_path),
            "{volume}": str(self.volume),
        }

    def expand(self, text: str) -> str:
        for key, value in self.placeholders().items():
            text = text.replace(key, value)
        return text

    def expand_argv(self, argv: list[str]) -> list[str]:
        return [self.expand(item) for item in argv]
