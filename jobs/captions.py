"""Auto-captioning: which images the CPU pod tags with sd-scripts' WD14 tagger, how long that takes, and the
manifest section that tells the agent how (seed 002: captions are `TRIGGER, CLASS, <tags not in every image>`).

Modes (`/train captions:` and `lorabot plan --captions`):
- `keep` (default): the user's captions stay; only images without one are tagged.
- `auto`: every image is tagged; the user's captions are dropped at ingest.
- `off`: nothing is tagged; an image without a caption trains on the class tokens (`TRIGGER CLASS`) alone.
The ingest writes no caption file for an image that is to be tagged (or, with `off`, that has none), so "no caption
file" is the one signal the agent and sd-scripts both read.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jobs.spec import CaptionMode, Notice, TrainSpec

CAPTION_MODES: tuple[CaptionMode, ...] = ("keep", "auto", "off")
DEFAULT_CAPTION_MODE: CaptionMode = "keep"

# finetune/tag_images_by_wd14_tagger.py at the pinned sd-scripts commit: DEFAULT_WD14_TAGGER_REPO, and with `--onnx`
# it loads exactly these two files from `<model_dir>/<repo_id with / as _>/` (it downloads them itself only when
# that folder is missing; the agent fetches them first so the tagger never reaches the Hub on its own).
TAGGER_SCRIPT = "finetune/tag_images_by_wd14_tagger.py"
WD14_REPO = "SmilingWolf/wd-v1-4-convnext-tagger-v2"
WD14_REVISION = "main"
WD14_FILES = ("model.onnx", "selected_tags.csv")
# The tagger runs batches of this many images; ONNX Runtime on a few CPU cores gains little from more.
TAGGER_BATCH_SIZE = 4

# CPU time per tagged image on RunPod's cheapest CPU pod. Not measured (the model cannot be fetched from the test
# machine): derived from timm's published cost of ConvNeXt-Base, the WD14 v2 tagger's backbone, 15.4 GMACs at 224 px,
# x4 at the tagger's 448 px = ~62 GMACs (~123 GFLOPs) per image, at ~100 GFLOP/s for ONNX Runtime on 2-4 vCPUs
# = ~1.2 s, plus ~0.3 s to decode, pad and resize the image. See bench/README.md; replace with a measured figure.
TAG_SECONDS_PER_IMAGE = Decimal("1.5")
# Once per tagging run: load the ~400 MB ONNX model (and, on a volume that lacks it, fetch it at ~20 MB/s).
TAGGER_SETUP_S = 30
WD14_MODEL_BYTES = 400_000_000


@dataclass(frozen=True)
class CaptionPlan:
    mode: CaptionMode
    image_count: int
    # Images that carry no caption file after ingest: tagged on the CPU pod (keep/auto) or class tokens only (off).
    uncaptioned: int
    general_threshold: float
    character_threshold: float
    undesired_tags: tuple[str, ...]

    @property
    def to_tag(self) -> int:
        return 0 if self.mode == "off" else self.uncaptioned

    @property
    def tagging_seconds(self) -> int:
        """What tagging adds to the CPU stage; 0 when nothing is tagged."""
        if self.to_tag == 0:
            return 0
        return TAGGER_SETUP_S + WD14_MODEL_BYTES // 20_000_000 + int(TAG_SECONDS_PER_IMAGE * self.to_tag + 1)

    def render_lines(self) -> list[str]:
        lines = [f"Mode {self.mode} · {self.image_count} images, {self.image_count - self.uncaptioned} with a caption"]
        if self.mode == "off":
            if self.uncaptioned:
                lines.append(
                    f"{self.uncaptioned} images have no caption and are not tagged: they train on the class tokens"
                    " (trigger and class word) only"
                )
            else:
                lines.append("nothing to tag: every image has a caption")
            return lines
        if self.to_tag == 0:
            lines.append("nothing to tag: every image has a caption")
            return lines
        lines += [
            f"{self.to_tag} images will be tagged on the CPU pod by sd-scripts' WD14 tagger ({WD14_REPO}, ONNX on CPU),"
            f" adding about {_minutes(self.tagging_seconds)} to the CPU stage"
            f" (~{TAG_SECONDS_PER_IMAGE} s per image, an estimate from the model's size, not a measurement)",
            f"captions become 'TRIGGER, CLASS, tags'; tags every tagged image shares are dropped; thresholds general"
            f" {self.general_threshold:g} / character {self.character_threshold:g}"
            + (" (character tags off)" if self.character_threshold > 1 else ""),
            "undesired tags removed: " + (", ".join(self.undesired_tags) or "(none)"),
        ]
        return lines

    def job_settings(self, spec: TrainSpec) -> dict[str, Any] | None:
        """What the queued job keeps (JobPlan.captions) to write the manifest section later, or None: no tagging."""
        if self.to_tag == 0:
            return None
        return {
            "trigger": spec.trigger,
            "class_word": spec.class_word,
            "general_threshold": self.general_threshold,
            "character_threshold": self.character_threshold,
            "undesired_tags": list(self.undesired_tags),
            "expected_images": self.to_tag,
            "expected_s": self.tagging_seconds,
        }

    def manifest_section(self, spec: TrainSpec, hub_endpoint: str) -> dict[str, Any] | None:
        """The manifest's `captions`: what the agent needs to tag, or None when nothing is tagged."""
        settings = self.job_settings(spec)
        return None if settings is None else manifest_section(settings, hub_endpoint)


def manifest_section(settings: dict[str, Any], hub_endpoint: str) -> dict[str, Any]:
    """The manifest's `captions` from a job's settings: the tagger's model comes from the same Hub endpoint as the
    trainer's tokenizers (HF_ENDPOINT's meaning; the stand-in Hub in the sandbox and tests)."""
    base = hub_endpoint.rstrip("/")
    return {
        **settings,
        "script": TAGGER_SCRIPT,
        "repo": WD14_REPO,
        "revision": WD14_REVISION,
        "files": [
            {"name": name, "url": f"{base}/{WD14_REPO}/resolve/{WD14_REVISION}/{name}", "sha256": None}
            for name in WD14_FILES
        ],
        "batch_size": TAGGER_BATCH_SIZE,
    }


def caption_mode(value: str | None) -> CaptionMode | None:
    """A mode from a command option (Discord offers only these choices; anything else is the default)."""
    for mode in CAPTION_MODES:
        if value == mode:
            return mode
    return None


def plan_captions(
    mode: CaptionMode | None, spec: TrainSpec, *, image_count: int, uncaptioned: int
) -> tuple[CaptionPlan, list[Notice]]:
    plan = CaptionPlan(
        mode=mode or DEFAULT_CAPTION_MODE,
        image_count=image_count,
        uncaptioned=uncaptioned,
        general_threshold=spec.caption_general_threshold,
        character_threshold=spec.caption_character_threshold,
        undesired_tags=spec.caption_undesired_tags,
    )
    notices: list[Notice] = []
    if plan.mode == "off" and plan.uncaptioned:
        notices.append(
            Notice(
                "warn",
                "captions-off",
                f"{plan.uncaptioned} of {image_count} images have no caption and captions is off: they train on"
                f" '{spec.trigger} {spec.class_word}' alone, so everything in them binds to the trigger",
            )
        )
    if spec.family == "flux" and plan.to_tag:
        # Seed 003: FLUX.1 reads captions with T5 and was trained on sentences; a tag list is a weak fit.
        notices.append(
            Notice(
                "warn",
                "captions-flux",
                f"{plan.to_tag} images would get WD14 tags, but FLUX.1 learns best from natural-language captions"
                f" (e.g. '{spec.trigger}, a {spec.class_word} in a red coat standing in the rain'): write one sentence"
                " per image in a .txt beside it and use captions: keep, or captions: off to train on the trigger"
                " and class alone",
            )
        )
    return plan, notices


def _minutes(seconds: int) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds} s"
