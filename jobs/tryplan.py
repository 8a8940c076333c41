"""/try: a user's request checked into a TrySpec, its estimate, and the requests.json entry a serving agent runs
(docs/CONTRACTS.md "Try requests").

Images come from sd-scripts' own generation scripts at the pinned commit: `gen_img.py` for SD 1.x and SDXL (one run
per epoch, every prompt in one prompt file), `flux_minimal_inference.py` for Flux (one run per image: it takes a
single --prompt). lorabot writes every option itself; user text is only ever a prompt, under the sample-prompt rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.rules import _PROMPT_OPTION_START, MAX_SEED
from jobs.spec import Family, TrainSpec
from jobs.usertext import shown

MAX_PROMPTS = 4
MAX_EPOCHS = 10
MAX_CELLS = 24
MAX_STEPS = 100
MAX_STRENGTH = 2.0
MAX_PROMPT_CHARS = 500
REQUESTS_VERSION = 1

GEN_SCRIPTS: dict[str, str] = {"sd15": "gen_img.py", "sdxl": "gen_img.py", "flux": "flux_minimal_inference.py"}
PROMPTS_FILE = "prompts.txt"
_TID = re.compile(r"[a-z0-9_-]{1,32}")
_EPOCH_PART = re.compile(r"\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?")


class TryRefused(Exception):
    """A /try request lorabot will not run; `message` is for the user (user text in it through `shown`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TryJob:
    """What /try needs to know about a trained job (from its TrainSpec and what the store holds)."""

    job_id: str
    family: Family
    resolution: int
    output_name: str
    # Epochs whose checkpoint is in the store (uploaded and not swept by retention).
    epochs_available: tuple[int, ...]
    picked_epoch: int | None
    seed: int
    sample_steps: int
    sample_cfg: float
    sample_sampler: str
    sample_negative: str
    attention: str
    mixed_precision: str
    clip_skip: int | None = None
    sample_guidance: float | None = None
    network_module: str = "networks.lora"
    # Flux: the volume paths of the job's extra model files by role (clip_l, t5xxl, ae), placeholders allowed.
    extra_model_paths: Mapping[str, str] = field(default_factory=dict)
    trigger: str = ""
    class_word: str = ""

    @classmethod
    def from_spec(
        cls,
        spec: TrainSpec,
        *,
        job_id: str,
        epochs_available: Sequence[int],
        picked_epoch: int | None = None,
        extra_model_paths: Mapping[str, str] | None = None,
    ) -> TryJob:
        return cls(
            job_id=job_id,
            family=spec.family,
            resolution=spec.resolution,
            output_name=spec.output_name,
            epochs_available=tuple(sorted(set(epochs_available))),
            picked_epoch=picked_epoch,
            seed=spec.seed,
            sample_steps=spec.sample_steps,
            sample_cfg=spec.sample_cfg,
            sample_sampler=spec.sample_sampler,
            sample_negative=spec.sample_negative,
            attention=spec.attention,
            mixed_precision=spec.mixed_precision,
            clip_skip=spec.clip_skip,
            sample_guidance=spec.sample_guidance,
            network_module=spec.network_module,
            extra_model_paths=dict(extra_model_paths or {}),
            trigger=spec.trigger,
            class_word=spec.class_word,
        )

    @property
    def script(self) -> str:
        return GEN_SCRIPTS[self.family]


@dataclass(frozen=True)
class TrySpec:
    """A checked /try request: what the grid shows (rows = prompts, columns = epochs)."""

    prompts: tuple[str, ...]
    epochs: tuple[int, ...]
    seed: int
    negative: str
    strength: float
    steps: int
    compare: bool = False

    @property
    def cells(self) -> int:
        return len(self.prompts) * len(self.epochs)


def parse_try(
    job: TryJob,
    *,
    prompt: str,
    epochs: str | None = None,
    seed: int | None = None,
    negative: str | None = None,
    strength: float | None = None,
    steps: int | None = None,
    compare: bool = False,
) -> TrySpec:
    """The user's options checked against the job; raises TryRefused naming the first problem."""
    if not job.epochs_available:
        raise TryRefused(f"{job.job_id} has no epoch checkpoint in the store to try")
    prompts = _prompts(prompt)
    chosen = _epochs(job, epochs)
    if len(chosen) > MAX_EPOCHS:
        raise TryRefused(f"at most {MAX_EPOCHS} epochs per /try, got {len(chosen)}")
    if len(prompts) * len(chosen) > MAX_CELLS:
        raise TryRefused(
            f"{len(prompts)} prompts x {len(chosen)} epochs = {len(prompts) * len(chosen)} images; the limit is"
            f" {MAX_CELLS} per /try: ask for fewer epochs or prompts"
        )
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise TryRefused(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    if strength is not None and (not math.isfinite(strength) or not 0 <= strength <= MAX_STRENGTH):
        raise TryRefused(f"strength (the LoRA's multiplier) must be between 0 and {MAX_STRENGTH:g}, got {strength:g}")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise TryRefused(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if negative is None:
        negative_text = job.sample_negative
    else:
        negative_text = negative.strip()
        if negative_text:
            _check_text(negative_text, "the negative prompt")
    return TrySpec(
        prompts=prompts,
        epochs=chosen,
        seed=job.seed if seed is None else seed,
        negative=negative_text,
        strength=1.0 if strength is None else float(strength),
        steps=job.sample_steps if steps is None else steps,
        compare=compare,
    )


def _prompts(text: str) -> tuple[str, ...]:
    parts = [part.strip() for part in text.split("|")]
    if len(parts) > MAX_PROMPTS:
        raise TryRefused(f"at most {MAX_PROMPTS} prompts per /try (separated by '|'), got {len(parts)}")
    for number, part in enumerate(parts, start=1):
        label = f"prompt {number}" if len(parts) > 1 else "the prompt"
        if not part:
            raise TryRefused(f"{label} is empty")
        _check_text(part, label)
    return tuple(parts)


def _check_text(text: str, label: str) -> None:
    """The sample-prompt rules (jobs/rules.py rule_sample_prompt_text), plus braces for the prompt files."""
    if len(text) > MAX_PROMPT_CHARS:
        raise TryRefused(f"{label} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if any(ch in "\r\n\x85\u2028\u2029" or (ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0) for ch in text):
        raise TryRefused(
            f"{label} contains a line break or control character; sd-scripts reads one prompt per line, so it"
            " would split into several: write it on one line"
        )
    if " --" in text or text.startswith("--"):
        raise TryRefused(
            f"{label} contains '--', which sd-scripts reads as an option (--n, --d, --s ...); lorabot sets seed,"
            " steps, size, strength and negative prompt itself (use /try's options): remove the '--'"
        )
    if _PROMPT_OPTION_START.match(text):
        raise TryRefused(
            f"{label} starts with {shown(text.split(' ')[0])} and a space, which sd-scripts reads as an option"
            " letter: start it with the trigger word instead"
        )
    if "{" in text or "}" in text:
        raise TryRefused(
            f"{label} contains '{{' or '}}': sd-scripts' gen_img.py reads {{a|b}} as a choice between prompts, and"
            " lorabot's command lines use braces for paths: remove them"
        )


def _epochs(job: TryJob, text: str | None) -> tuple[int, ...]:
    available = job.epochs_available
    if text is None or not text.strip():
        if job.picked_epoch is not None and job.picked_epoch in available:
            return (job.picked_epoch,)
        return available[-3:]
    wanted: set[int] = set()
    for part in text.split(","):
        m = _EPOCH_PART.fullmatch(part)
        if m is None:
            raise TryRefused(f"epochs must look like 3, 1-3 or 2,5,8; got {shown(text)}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        if last < first:
            raise TryRefused(f"epoch range {first}-{last} runs backwards: write {last}-{first}")
        if last - first >= 1000:
            raise TryRefused(f"epoch range {first}-{last} is longer than any job")
        wanted.update(range(first, last + 1))
    missing = sorted(wanted - set(available))
    if missing:
        has = describe_epochs(available)
        which = "epoch " + str(missing[0]) if len(missing) == 1 else "epochs " + describe_epochs(missing)
        raise TryRefused(
            f"{job.job_id} has no checkpoint for {which} (checkpoints kept: {has}); a deleted or never-saved"
            " epoch cannot be tried"
        )
    return tuple(sorted(wanted))


def describe_epochs(epochs: Sequence[int]) -> str:
    """1, 2, 3, 5 → "1-3, 5"."""
    ordered = sorted(set(epochs))
    runs: list[str] = []
    start = prev = None
    for epoch in [*ordered, None]:
        if start is not None and (epoch is None or epoch != (prev or 0) + 1):
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if epoch is not None:
            if start is None:
                start = epoch
            prev = epoch
    return ", ".join(runs)


# --- estimate ----------------------------------------------------------------------------------------------------

# Seconds per sampling step at the family's native size, and seconds to load the base model and LoRA once per
# run, on a 24 GB card of the RTX 4090 / L40 / A5000 class. ASSUMED, not measured by lorabot (no GPU here): the
# order of magnitude published for sd-scripts/diffusers inference (SD 1.5 512 px ~20 it/s, SDXL 1024 px ~4 it/s,
# Flux.1-dev 1024 px bf16 ~1 it/s), and cold loads of a 2 / 7 / 24 GB model set from a network volume.
STEP_S: dict[str, tuple[float, int]] = {"sd15": (0.05, 512), "sdxl": (0.25, 1024), "flux": (1.0, 1024)}
LOAD_S: dict[str, float] = {"sd15": 10.0, "sdxl": 25.0, "flux": 60.0}
ESTIMATE_SOURCE = (
    "assumed figures for a 24 GB GPU, not measured by lorabot: {step:g} s per step at {ref} px (scaled by pixel"
    " count), {load:g} s to load the model per {per}"
)


@dataclass(frozen=True)
class GenerationEstimate:
    seconds: float
    source: str


def estimate_generation_s(job: TryJob, spec: TrySpec) -> GenerationEstimate:
    """Generation time on the pod (model loads + sampling), GPU start-up excluded."""
    step_s, reference = STEP_S[job.family]
    per_step = step_s * (job.resolution / reference) ** 2
    runs = len(spec.epochs) * (len(spec.prompts) if job.family == "flux" else 1)
    seconds = runs * LOAD_S[job.family] + spec.cells * spec.steps * per_step
    per = "image (flux_minimal_inference.py loads it for every image)" if job.family == "flux" else "epoch"
    return GenerationEstimate(
        seconds=round(seconds, 1),
        source=ESTIMATE_SOURCE.format(step=step_s, ref=reference, load=LOAD_S[job.family], per=per),
    )


# --- bucket keys -------------------------------------------------------------------------------------------------


def requests_key(job_id: str) -> str:
    return f"jobs/{job_id}/try/requests.json"


def status_key(job_id: str, tid: str) -> str:
    return f"jobs/{job_id}/try/{tid}/status.json"


def cell_name(epoch: int, prompt: int) -> str:
    return f"e{epoch:06d}-p{prompt:02d}"


def cell_key(job_id: str, tid: str, epoch: int, prompt: int) -> str:
    return f"jobs/{job_id}/try/{tid}/{cell_name(epoch, prompt)}.png"


# --- the requests.json entry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraRef:
    """An epoch's LoRA in the store: its key (jobs.manifest.JobKeys.checkpoint) and what the agent checks."""

    key: str
    sha256: str
    size: int | None = None


def request_entry(
    job: TryJob,
    spec: TrySpec,
    *,
    tid: str,
    loras: Mapping[int, LoraRef],
    presign_get: Callable[[str], str],
    presign_put: Callable[[str], str],
) -> dict[str, Any]:
    if not _TID.fullmatch(tid):
        raise ValueError(f"request id {tid!r} must be 1-32 of [a-z0-9_-]")
    missing = [e for e in spec.epochs if e not in loras]
    if missing:
        raise ValueError(f"no LoRA given for epochs {missing}")
    if job.family == "flux":
        runs = [_flux_run(job, spec, epoch, index) for epoch in spec.epochs for index in range(len(spec.prompts))]
    else:
        runs = [_gen_img_run(job, spec, epoch) for epoch in spec.epochs]
    return {
        "id": tid,
        "script": job.script,
        "loras": {
            str(e): {"url": presign_get(loras[e].key), "sha256": loras[e].sha256.lower(), "size": loras[e].size}
            for e in spec.epochs
        },
        "runs": runs,
        "cells": {
            cell_name(e, i): presign_put(cell_key(job.job_id, tid, e, i))
            for e in spec.epochs
            for i in range(len(spec.prompts))
        },
        "status_url": presign_put(status_key(job.job_id, tid)),
        "expected_s": estimate_generation_s(job, spec).seconds,
    }


def requests_document(entries: Sequence[Mapping[str, Any]]) -> bytes:
    ids = [entry["id"] for entry in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"request ids must be unique, got {ids}")
    return json.dumps({"version": REQUESTS_VERSION, "requests": list(entries)}, indent=1).encode()


def _num(value: float) -> str:
    return f"{value:g}"


def _gen_img_run(job: TryJob, spec: TrySpec, epoch: int) -> dict[str, Any]:
    """gen_img.py: the prompt file carries each image's seed, steps, negative prompt and file name (--f)."""
    args = ["--ckpt={model_path}"]
    if job.family == "sdxl":
        args.append("--sdxl")
    args += [
        f"--network_module={job.network_module}",
        "--network_weights={lora_path}",
        f"--network_mul={_num(spec.strength)}",
        f"--from_file={{run_dir}}/{PROMPTS_FILE}",
        "--outdir={run_dir}/out",
        "--images_per_prompt=1",
        "--batch_size=1",
        f"--sampler={job.sample_sampler}",
        f"--steps={spec.steps}",
        f"--scale={_num(job.sample_cfg)}",
        f"--W={job.resolution}",
        f"--H={job.resolution}",
        "--tokenizer_cache_dir={tokenizers_dir}",
        f"--{job.attention}",
    ]
    if job.mixed_precision in ("fp16", "bf16"):
        args.append(f"--{job.mixed_precision}")
    if job.clip_skip:
        args.append(f"--clip_skip={job.clip_skip}")
    lines = []
    outputs = []
    for index, prompt in enumerate(spec.prompts):
        name = f"{cell_name(epoch, index)}.png"
        negative = f" --n {spec.negative}" if spec.negative else ""
        lines.append(f"{prompt}{negative} --d {spec.seed} --s {spec.steps} --f {name}\n")
        outputs.append({"file": name, "epoch": epoch, "prompt": index})
    return {"epoch": epoch, "args": args, "files": {PROMPTS_FILE: "".join(lines)}, "outputs": outputs}


def _flux_run(job: TryJob, spec: TrySpec, epoch: int, index: int) -> dict[str, Any]:
    """flux_minimal_inference.py: one image, its file named by the time it was saved, alone in its folder."""
    args = ["--ckpt_path={model_path}"]
    for role in ("clip_l", "t5xxl", "ae"):
        if role not in job.extra_model_paths:
            raise ValueError(f"a Flux job needs the volume path of its {role} file")
        args.append(f"--{role}={job.extra_model_paths[role]}")
    args += [
        f"--lora_weights={{lora_path}};{_num(spec.strength)}",
        f"--prompt={spec.prompts[index]}",
        f"--seed={spec.seed}",
        f"--steps={spec.steps}",
        f"--guidance={_num(job.sample_guidance or 3.5)}",
        f"--width={job.resolution}",
        f"--height={job.resolution}",
        "--output_dir={run_dir}/out",
    ]
    if spec.negative:
        args.append(f"--negative_prompt={spec.negative}")
    return {"epoch": epoch, "args": args, "files": {}, "outputs": [{"file": "*.png", "epoch": epoch, "prompt": index}]}


# --- a request's status (written by the agent) --------------------------------------------------------------------

REQUEST_PHASES = ("running", "done", "failed")


@dataclass(frozen=True)
class RequestStatus:
    id: str
    phase: str
    cells_done: int
    cells: int
    seconds: float
    boots: int
    error_kind: str | None
    error_message: str | None

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")


def parse_request_status(body: bytes) -> RequestStatus:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request status is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("phase") not in REQUEST_PHASES or not isinstance(data.get("id"), str):
        raise ValueError("request status needs an id and a phase of running, done or failed")
    error = data.get("error")
    if error is not None and not isinstance(error, dict):
        raise ValueError("request status error must be an object or null")
    return RequestStatus(
        id=data["id"],
        phase=data["phase"],
        cells_done=int(data.get("cells_done") or 0),
        cells=int(data.get("cells") or 0),
        seconds=float(data.get("seconds") or 0.0),
        boots=int(data.get("boots") or 1),
        error_kind=str(error.get("kind")) if error else None,
        error_message=str(error.get("message")) if error else None,
    )
