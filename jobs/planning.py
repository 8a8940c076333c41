"""`make_plan`: an ingested dataset + a user's options → exactly what would run, how long it takes and what it costs.

Presets fill the options, the rules fix or refuse, the builder writes the sd-scripts arguments, the estimate prices
it. Nothing here touches the network or spends money; `Plan.render_text()` is what `lorabot plan` prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jobs.captions import CaptionPlan, plan_captions
from jobs.catalog import Catalog, CatalogModel
from jobs.estimate import Estimate, StepCount, count_steps, estimate
from jobs.presets import PresetBook, PresetError, merge
from jobs.prices import GpuOffer, PriceProvider
from jobs.rules import ConceptFacts, DatasetFacts, PlanRefused, RuleLimits, apply_rules, effective_repeats
from jobs.sdscripts import TrainCommand, build_command, render_command
from jobs.spec import Notice, TrainSpec, UserOptions


class ConceptLike(Protocol):
    """What planning reads from `jobs.dataset.Concept`."""

    @property
    def name(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def image_count(self) -> int: ...
    @property
    def repeats(self) -> int | None: ...


class ReportLike(Protocol):
    def render_text(self) -> str: ...
    @property
    def uncaptioned(self) -> int: ...


class DatasetLike(Protocol):
    """What planning reads from `jobs.dataset.IngestedDataset`."""

    @property
    def concepts(self) -> Sequence[ConceptLike]: ...
    @property
    def caption_extension(self) -> str: ...
    @property
    def report(self) -> ReportLike: ...


@dataclass(frozen=True)
class Plan:
    spec: TrainSpec
    notices: tuple[Notice, ...]
    model: CatalogModel
    gpu: GpuOffer
    command: TrainCommand
    steps: StepCount
    estimate: Estimate
    dataset_report: str = ""
    inference_notes: tuple[str, ...] = field(default_factory=tuple)
    captions: CaptionPlan | None = None

    @property
    def script(self) -> str:
        return self.command.script

    @property
    def args(self) -> tuple[str, ...]:
        return self.command.args

    @property
    def dataset_toml(self) -> str:
        return self.command.dataset_toml

    @property
    def sample_prompts_text(self) -> str:
        return self.command.sample_prompts_text

    def render_command(self) -> str:
        return render_command(self.command.script, self.command.args)

    def render_text(self) -> str:
        spec = self.spec
        parts = []
        if self.dataset_report:
            parts += ["== Dataset", self.dataset_report.rstrip(), ""]
        parts += [
            "== Plan",
            f"Preset {spec.preset} · base model {self.model.name} ({self.model.id}) · {spec.family}",
            f"Trigger {spec.trigger!r}, class {spec.class_word!r}, output {spec.output_name}.safetensors",
            f"dim {spec.network_dim} / alpha {spec.network_alpha:g} · U-Net lr {spec.unet_lr:g} · "
            + (f"text-encoder lr {spec.te_lr:g}" if spec.te_lr is not None else "U-Net only")
            + f" · {spec.optimizer} · {spec.lr_scheduler} · {spec.mixed_precision}",
            f"{spec.epochs} epochs at {spec.resolution}px, batch {spec.batch_size},"
            f" samples every {spec.sample_every_n_epochs} epoch(s)",
            "",
            *(["== Captions", *self.captions.render_lines(), ""] if self.captions is not None else []),
            "== Notices",
            *([n.render() for n in self.notices] or ["(none)"]),
            "",
            "== Command",
            self.render_command(),
            "",
            f"== {self.command.script.replace('.py', '')} files",
            "-- dataset.toml",
            self.command.dataset_toml.rstrip(),
            "-- sample_prompts.txt",
            self.command.sample_prompts_text.rstrip(),
            "",
            "== Estimate",
            self.estimate.render_table(),
        ]
        if self.inference_notes:
            parts += ["", "== At inference", *self.inference_notes]
        return "\n".join(parts) + "\n"


def dataset_facts(dataset: DatasetLike) -> DatasetFacts:
    return DatasetFacts(
        concepts=tuple(
            ConceptFacts(name=c.name, folder=c.folder, image_count=c.image_count, repeats=c.repeats)
            for c in dataset.concepts
        ),
        caption_extension=dataset.caption_extension,
    )


def make_plan(
    dataset: DatasetLike,
    options: UserOptions,
    *,
    presets: PresetBook,
    catalog: Catalog,
    prices: PriceProvider,
    limits: RuleLimits | None = None,
    warm: bool = False,
) -> Plan:
    """The plan for this dataset and these options, or PlanRefused with every reason at once."""
    facts = dataset_facts(dataset)
    if facts.image_count == 0:
        raise PlanRefused(["the dataset has no images"])
    try:
        preset = presets.get(options.preset)
    except PresetError as exc:
        raise PlanRefused([str(exc)]) from exc
    spec = merge(preset, options, fallback_trigger=_trigger_from(facts))
    table = prices.get_table()
    checked = apply_rules(spec, facts, catalog=catalog, prices=table, limits=limits)
    spec = checked.spec
    notes = list(spec.inference_notes)
    if checked.model.notes:
        notes.append(checked.model.notes)
    if options.trigger is None:
        notices = (
            Notice("info", "trigger", f"no trigger given: using {spec.trigger!r} (the dataset's first concept)"),
            *checked.notices,
        )
    else:
        notices = checked.notices
    captions, caption_notices = plan_captions(
        options.captions, spec, image_count=facts.image_count, uncaptioned=dataset.report.uncaptioned
    )
    notices = (*notices, *caption_notices)
    steps = count_steps(
        [(c.image_count, effective_repeats(spec, c)) for c in facts.concepts], spec.epochs, spec.batch_size
    )
    return Plan(
        spec=spec,
        notices=notices,
        model=checked.model,
        gpu=checked.gpu,
        command=build_command(spec, facts, checked.model),
        steps=steps,
        estimate=estimate(
            spec,
            steps,
            image_count=facts.image_count,
            model_bytes=checked.model.total_bytes,
            gpu=checked.gpu,
            prices=table,
            warm=warm,
            tagging_s=captions.tagging_seconds,
        ),
        dataset_report=dataset.report.render_text(),
        inference_notes=tuple(notes),
        captions=captions,
    )


def _trigger_from(facts: DatasetFacts) -> str:
    """The first concept's name as a trigger word, as sd-scripts uses folder names for class tokens."""
    for concept in facts.concepts:
        word = re.sub(r"[^\w .'-]+", " ", concept.name.replace("_", " ")).strip()
        if word:
            return word[:64]
    return "lora"
