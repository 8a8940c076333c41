"""`/caption` alone: a job that only tags a dataset on the CPU pod (no GPU is ever rented), and what it costs.

The job is an ordinary job whose plan says `caption_only`: it goes QUEUED → PREPARING (the CPU pod builds or finds
the environment, fetches the dataset and runs sd-scripts' WD14 tagger, no base model) → SUCCEEDED, with the same
cancel, clean-up and cost lines as any job. The captioned dataset is stored by hash (jobs/captioned.py), so a later
`/train dataset_from:sha256:<hash>` trains on it and tags nothing.

The estimate is the CPU stage of jobs/estimate.py without the model download: pod start, the environment build
(none when the volume the job would be placed on already holds it: the orchestrator's volume cache says so, as for
/train's placement), the dataset download and the tagging time of jobs/captions.py, priced at the CPU pod's hourly
rate, plus the Network Volume's share for that time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from jobs.captions import CaptionPlan
from jobs.estimate import StageFigures, volume_size_gb
from jobs.prices import PriceTable
from jobs.queue import JobPlan

# The cloud the quote is for: volumes (and so every lorabot pod) are Secure Cloud only.
CLOUD = "SECURE"


class NothingToTag(ValueError):
    """The dataset has a caption for every image and the mode keeps them: a /caption job would do nothing."""


@dataclass(frozen=True)
class CaptionJobEstimate:
    to_tag: int
    cpu_stage_s: int
    tagging_s: int
    env_build_s: int
    dataset_s: int
    cpu_hourly_micros: int
    volume_gb: int
    volume_micros: int
    cpu_micros: int

    @property
    def total_micros(self) -> int:
        return self.volume_micros + self.cpu_micros

    def cost_row(self) -> dict[str, int | str]:
        """One row of the plan message's cost table (render.cost_table's keys); the GPU line is 0, always."""
        return {
            "cloud": CLOUD,
            "volume_micros": self.volume_micros,
            "cpu_pod_micros": self.cpu_micros,
            "gpu_pod_micros": 0,
            "total_micros": self.total_micros,
        }


def estimate_caption_job(
    captions: CaptionPlan,
    *,
    dataset_bytes: int,
    prices: PriceTable,
    env_ready: bool,
    stages: StageFigures | None = None,
) -> CaptionJobEstimate:
    """What the CPU stage of a /caption job takes and costs; NothingToTag when no image would be tagged.
    `env_ready`: the volume already holds the environment, so the CPU pod only checks it."""
    if captions.to_tag == 0:
        raise NothingToTag(
            "every image already has a caption and captions: keep leaves them alone, so there is nothing to tag; "
            "use captions: auto to tag every image again, or edit the captions with /edit_captions"
        )
    stages = stages or StageFigures()
    dataset_s = dataset_bytes // stages.download_bytes_per_s
    env_build_s = 0 if env_ready else stages.env_build_s
    cpu_stage_s = stages.cpu_pod_start_s + env_build_s + dataset_s + captions.tagging_seconds
    volume_gb = volume_size_gb(0, stages)
    return CaptionJobEstimate(
        to_tag=captions.to_tag,
        cpu_stage_s=cpu_stage_s,
        tagging_s=captions.tagging_seconds,
        env_build_s=env_build_s,
        dataset_s=dataset_s,
        cpu_hourly_micros=prices.cpu_pod_hourly_micros,
        volume_gb=volume_gb,
        volume_micros=_cost(prices.volume_hourly_micros(volume_gb), cpu_stage_s),
        cpu_micros=_cost(Decimal(prices.cpu_pod_hourly_micros), cpu_stage_s),
    )


def caption_job_plan(plan: JobPlan, estimate: CaptionJobEstimate) -> JobPlan:
    """The queued job's plan: the training plan's dataset and tagger settings, marked caption-only, with this
    estimate (the budget check and the volume size read it) and no training time."""
    return dataclasses.replace(
        plan,
        caption_only=True,
        estimate_micros={CLOUD: estimate.total_micros},
        training_seconds=0,
        volume_gb=estimate.volume_gb,
        summary=f"captions only · {estimate.to_tag} images to tag",
    )


def _cost(hourly_micros: Decimal, seconds: int) -> int:
    return int((hourly_micros * seconds / 3600).to_integral_value(rounding=ROUND_HALF_UP))
