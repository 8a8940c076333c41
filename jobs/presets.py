"""Operator-editable training presets (`jobs/presets/*.toml`) and their merge with a user's options.

`_defaults.toml` holds the values every preset starts from; each `<name>.toml` names its family and base model
and overrides values in its `[spec]` table. Every key and value type is checked against `TrainSpec` at load time,
so a typo in a preset fails at start-up with the file and key in the message, not halfway through a paid run.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jobs.spec import FAMILIES, SPEC_FIELDS, Family, TrainSpec, UserOptions

DEFAULT_PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULTS_FILE = "_defaults.toml"
# Filled by `merge` from the preset header and the user's options, never from a [spec] table.
_MERGE_FIELDS = frozenset({"family", "base_model", "preset", "output_name", "trigger", "sample_prompts"})
_HINTS: dict[str, Any] = typing.get_type_hints(TrainSpec)
# Settings presets used to have that lorabot no longer supports: the message says why, not just "unknown key".
RETIRED_KEYS = {
    "spot": "RunPod no longer offers spot (interruptible) pods; remove `spot` (GPU pods are on-demand Secure Cloud)",
}


class PresetError(Exception):
    """A broken preset file (operator error) or an unknown preset name (user error); str() is the message."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    family: Family
    base_model: str
    values: Mapping[str, Any]
    is_default: bool = False


@dataclass(frozen=True)
class PresetBook:
    """All presets of a folder; `get(None)` is the default one."""

    presets: Mapping[str, Preset]
    default_name: str

    @property
    def names(self) -> list[str]:
        return sorted(self.presets)

    def get(self, name: str | None) -> Preset:
        if name is None:
            return self.presets[self.default_name]
        preset = self.presets.get(name.strip().lower())
        if preset is None:
            raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(self.names)}")
        return preset


def load_presets(directory: Path = DEFAULT_PRESETS_DIR) -> PresetBook:
    defaults = _read_spec_table(directory / DEFAULTS_FILE) if (directory / DEFAULTS_FILE).exists() else {}
    presets: dict[str, Preset] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        preset = _load_one(path, defaults)
        if preset.name in presets:
            raise PresetError(f"{path}: preset name {preset.name!r} is used by two files")
        presets[preset.name] = preset
    if not presets:
        raise PresetError(f"no presets (*.toml) in {directory}")
    defaults_marked = [p.name for p in presets.values() if p.is_default]
    if len(defaults_marked) != 1:
        raise PresetError(
            f"exactly one preset in {directory} must say `default = true`, found {len(defaults_marked)}"
            f" ({', '.join(defaults_marked) or 'none'})"
        )
    return PresetBook(presets=presets, default_name=defaults_marked[0])


def _load_one(path: Path, defaults: Mapping[str, Any]) -> Preset:
    data = _read_toml(path)
    unknown_top = set(data) - {"name", "description", "family", "base_model", "default", "spec"}
    if unknown_top:
        raise PresetError(f"{path}: unknown top-level keys {', '.join(sorted(unknown_top))}")
    name = data.get("name")
    if not isinstance(name, str) or name != path.stem:
        raise PresetError(f"{path}: name must be the file name without .toml ({path.stem!r})")
    family = data.get("family")
    if family not in FAMILIES:
        raise PresetError(f"{path}: family must be one of {', '.join(FAMILIES)}")
    base_model = data.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        raise PresetError(f"{path}: base_model (a catalog id) is required")
    values = {**defaults, **_read_spec_table(path, data)}
    missing = SPEC_FIELDS - _MERGE_FIELDS - set(values) - _OPTIONAL_FIELDS
    if missing:
        raise PresetError(f"{path}: no value for {', '.join(sorted(missing))} (set it here or in {DEFAULTS_FILE})")
    return Preset(
        name=name,
        description=str(data.get("description", "")),
        family=cast(Family, family),
        base_model=base_model,
        values=values,
        is_default=bool(data.get("default", False)),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(f"cannot read preset file {path}: {exc}") from exc


def _read_spec_table(path: Path, data: dict[str, Any] | None = None) -> dict[str, Any]:
    table = (data if data is not None else _read_toml(path)).get("spec", {})
    if not isinstance(table, dict):
        raise PresetError(f"{path}: [spec] must be a table")
    checked: dict[str, Any] = {}
    for key, value in table.items():
        if key in RETIRED_KEYS:
            raise PresetError(f"{path}: [spec] {key}: {RETIRED_KEYS[key]}")
        if key not in SPEC_FIELDS or key in _MERGE_FIELDS:
            raise PresetError(f"{path}: [spec] key {key!r} is not a preset setting")
        checked[key] = _coerce(path, key, value)
    return checked


def _coerce(path: Path, key: str, value: Any) -> Any:
    """The TOML value as the type `TrainSpec` declares, or a PresetError naming file, key and expected type."""
    hint = _HINTS[key]
    for candidate in _flatten(hint):
        ok, converted = _try(candidate, value)
        if ok:
            return converted
    raise PresetError(f"{path}: [spec] {key} = {value!r} is not a valid {_describe(hint)}")


def _flatten(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [arg for sub in typing.get_args(hint) for arg in _flatten(sub)]
    return [hint]


def _try(candidate: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(candidate)
    if origin is typing.Literal:
        return (value in typing.get_args(candidate), value)
    if candidate is bool:
        return (isinstance(value, bool), value)
    if candidate is int:
        return (isinstance(value, int) and not isinstance(value, bool), value)
    if candidate is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (ok, float(value) if ok else value)
    if candidate is str:
        return (isinstance(value, str), value)
    if origin is tuple:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        return (ok, tuple(value) if ok else value)
    if origin in (Mapping, dict) or candidate is type(None):
        return (False, value)
    return (False, value)


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


# Fields a preset may leave out: TrainSpec gives them a default (Flux-only settings, extras, notes).
_OPTIONAL_FIELDS = frozenset(
    {
        "fp8_base",
        "blocks_to_swap",
        "guidance_scale",
        "sample_guidance",
        "timestep_sampling",
        "model_prediction_type",
        "discrete_flow_shift",
        "extra_options",
        "inference_notes",
        "repeats",
        "clip_skip",
        "lr_scheduler_num_cycles",
        "caption_general_threshold",
        "caption_character_threshold",
        "caption_undesired_tags",
        "test_window_min",
    }
)

# UserOptions fields that map one-to-one onto TrainSpec fields.
_USER_FIELDS = (
    "class_word",
    "epochs",
    "repeats",
    "network_dim",
    "network_alpha",
    "unet_lr",
    "te_lr",
    "resolution",
    "batch_size",
    "optimizer",
    "lr_scheduler",
    "clip_skip",
    "cache_text_encoder_outputs",
    "caption_extension",
    "sample_every_n_epochs",
    "seed",
    "gpu",
    "test_window_min",
)


def merge(preset: Preset, options: UserOptions, *, fallback_trigger: str = "lora") -> TrainSpec:
    """The preset's values with the user's non-None options on top. Checks nothing: the rules do that next."""
    values: dict[str, Any] = {
        "repeats": None,
        "clip_skip": None,
        "lr_scheduler_num_cycles": None,
        **preset.values,
    }
    trigger = options.trigger if options.trigger is not None else fallback_trigger
    values.update(
        family=preset.family,
        base_model=options.base_model or preset.base_model,
        preset=preset.name,
        trigger=trigger,
        output_name=options.output_name if options.output_name is not None else trigger,
        sample_prompts=tuple(options.sample_prompts),
    )
    for key in _USER_FIELDS:
        value = getattr(options, key)
        if value is not None:
            values[key] = value
    if options.extra_options:
        values["extra_options"] = {**values.get("extra_options", {}), **options.extra_options}
    # A text-encoder rate of 0 is sd-scripts' way of saying "U-Net only"; the spec says it explicitly.
    if values.get("te_lr") is not None and values["te_lr"] == 0:
        values["te_lr"] = None
        values["network_train_unet_only"] = True
    elif options.te_lr is not None:
        values["network_train_unet_only"] = False
    return TrainSpec(**values)
