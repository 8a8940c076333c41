"""The base models lorabot can train on, read from an operator-editable TOML file (`jobs/catalog/models.toml`)."""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jobs.spec import FAMILIES, Family

DEFAULT_CATALOG_PATH = Path(__file__).parent / "catalog" / "models.toml"
# Where the agent stores models on the volume (docs/CONTRACTS.md: `{volume}/lorabot/models/<filename>`).
VOLUME_MODELS_DIR = "{volume}/lorabot/models"

_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_EXTRA_ROLES = ("ae", "clip_l", "t5xxl")


class CatalogError(Exception):
    """A broken catalog file (operator error) or an unknown model id (user error); str() is the message."""


@dataclass(frozen=True)
class ModelFile:
    """One downloadable file. `size` is approximate (volume sizing and ETAs), `sha256` pins the bytes when set."""

    url: str
    filename: str
    size: int
    sha256: str | None = None
    token_env: str | None = None
    role: str = "model"

    @property
    def volume_path(self) -> str:
        return f"{VOLUME_MODELS_DIR}/{self.filename}"


@dataclass(frozen=True)
class CatalogModel:
    id: str
    family: Family
    name: str
    file: ModelFile
    license: str
    notes: str = ""
    extra_files: tuple[ModelFile, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.file.size + sum(f.size for f in self.extra_files)

    @property
    def gated(self) -> bool:
        return any(f.token_env for f in (self.file, *self.extra_files))

    def extra(self, role: str) -> ModelFile:
        for extra in self.extra_files:
            if extra.role == role:
                return extra
        raise CatalogError(f"base model {self.id!r} has no {role!r} file in the catalog")


@dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    def get(self, model_id: str) -> CatalogModel:
        """The model with this id (case-insensitive); unknown → CatalogError naming close matches."""
        wanted = model_id.strip().lower()
        for model in self.models:
            if model.id == wanted:
                return model
        close = difflib.get_close_matches(wanted, self.ids, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CatalogError(f"unknown base model {model_id!r}.{hint} Known base models: {', '.join(self.ids)}.")


def load_catalog(path: Path = DEFAULT_CATALOG_PATH) -> Catalog:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc}") from exc
    entries = data.get("model")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: no [[model]] entries")
    models = tuple(_parse_model(path, cast(dict[str, Any], entry)) for entry in entries)
    seen: set[str] = set()
    for model in models:
        if model.id in seen:
            raise CatalogError(f"{path}: model id {model.id!r} appears twice")
        seen.add(model.id)
    return Catalog(models)


def _parse_model(path: Path, entry: dict[str, Any]) -> CatalogModel:
    where = f"{path}: model {entry.get('id', '?')!r}"
    model_id = _text(entry, "id", where)
    if not _ID.fullmatch(model_id):
        raise CatalogError(f"{where}: id must be lower-case letters, digits, '.', '_' or '-'")
    family = _text(entry, "family", where)
    if family not in FAMILIES:
        raise CatalogError(f"{where}: family {family!r} is not one of {', '.join(FAMILIES)}")
    extras = tuple(_parse_file(f"{where} extra file", e, e.get("role", "")) for e in entry.get("extra_files", []))
    for extra in extras:
        if extra.role not in _EXTRA_ROLES:
            raise CatalogError(f"{where}: extra file role {extra.role!r} is not one of {', '.join(_EXTRA_ROLES)}")
    if family == "flux":
        missing = [role for role in _EXTRA_ROLES if role not in {e.role for e in extras}]
        if missing:
            raise CatalogError(f"{where}: a Flux model needs extra_files for {', '.join(missing)}")
    return CatalogModel(
        id=model_id,
        family=cast(Family, family),
        name=_text(entry, "name", where),
        file=_parse_file(where, entry, "model"),
        license=str(entry.get("license", "")),
        notes=str(entry.get("notes", "")),
        extra_files=extras,
    )


def _parse_file(where: str, entry: dict[str, Any], role: str) -> ModelFile:
    url = _text(entry, "url", where)
    if not url.startswith("https://"):
        raise CatalogError(f"{where}: url must start with https://")
    filename = _text(entry, "filename", where)
    if not _FILENAME.fullmatch(filename):
        raise CatalogError(f"{where}: filename {filename!r} must be a plain file name (no folders)")
    size = entry.get("size")
    if not isinstance(size, int) or size <= 0:
        raise CatalogError(f"{where}: size must be a positive number of bytes")
    sha256 = entry.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise CatalogError(f"{where}: sha256 must be 64 lower-case hex digits")
    token_env = entry.get("token_env")
    if token_env is not None and (not isinstance(token_env, str) or not _ENV_NAME.fullmatch(token_env)):
        raise CatalogError(f"{where}: token_env must be an environment variable name like HF_TOKEN")
    return ModelFile(url=url, filename=filename, size=size, sha256=sha256, token_env=token_env, role=role)


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: {key} is required (a non-empty string)")
    return value.strip()
