"""`/cost` for a job: the container disk inside the pod lines, and RunPod's own bill once the job has finished."""

from __future__ import annotations

from bot import render
from jobs.billing_sync import JobBill
from jobs.ledger import CostBreakdown, DataCenterVolumes, VolumesMonth

COST = CostBreakdown(volume_micros=2_916, cpu_pod_micros=55_184, gpu_pod_micros=692_777, disk_micros=4_628)
LEDGER_PODS = 55_184 + 692_777


def _bill(runpod: int, *, settled: int = 2, given_up: int = 0) -> JobBill:
    return JobBill(pods=2, settled=settled, given_up=given_up, runpod_micros=runpod, ledger_micros=LEDGER_PODS)


def test_the_disk_is_shown_under_the_total_and_the_lines_above_still_add_up() -> None:
    table = render.cost_table(COST)
    lines = table.strip("`\n").splitlines()
    assert [line.split()[0] for line in lines] == ["Volume", "CPU", "GPU", "-" * len(lines[3]), "Total", "incl."]
    assert lines[4].endswith("$0.75") and lines[5] == "  incl. disk  <$0.01"
    # A notice's payload carries the same split when it has one; without disk there is no such line.
    payload = {"volume_micros": 2_916, "cpu_pod_micros": 55_184, "gpu_pod_micros": 692_777, "disk_micros": 14_628}
    assert "  incl. disk   $0.01" in render.cost_table(payload)
    assert "disk" not in render.cost_table(CostBreakdown(gpu_pod_micros=690_000))


def test_a_bill_that_agrees_says_so_and_one_that_differs_shows_runpods_figure() -> None:
    agrees = render.job_cost_text(COST, _bill(LEDGER_PODS + 7_000))  # 0.94 % over
    assert agrees.startswith(render.cost_table(COST))
    assert agrees.endswith("\nRunPod's own bill for the pods agrees (within 1 %).")

    differs = render.job_cost_text(COST, _bill(830_000))
    assert "**RunPod billed $0.83** for the pods; the ledger says $0.75 (+11.0 %)." in differs
    under = render.job_cost_text(COST, _bill(700_000))
    assert "**RunPod billed $0.70**" in under and "(-6.4 %)" in under


def test_a_bill_not_in_yet_or_never_in_is_said_and_a_running_job_has_no_bill_line() -> None:
    waiting = render.job_cost_text(COST, _bill(345_000, settled=1))
    assert "RunPod's own bill for the pods is not in yet" in waiting and "$0.35" not in waiting
    never = render.job_cost_text(COST, _bill(0, settled=1, given_up=1))
    assert "never came in; the figures above are lorabot's ledger" in never
    assert render.job_cost_text(COST, None) == render.cost_table(COST)


def test_the_volumes_month_is_split_per_data_center_when_there_are_several() -> None:
    """One volume per data center: the month kept, the jobs' share and the hours between jobs, each split per data
    center (a job moved from EU-RO-1 to US-KS-2 paid a part of each), and every block adds up to its line."""
    volumes = VolumesMonth(
        kept_micros=58_332,
        jobs_share_micros=5_833 + 8_749,
        gb=80,
        data_centers=(
            DataCenterVolumes("EU-RO-1", 29_166, 30, jobs_share_micros=5_833),
            DataCenterVolumes("US-KS-2", 29_166, 50, jobs_share_micros=8_749),
        ),
    )
    assert volumes.between_jobs_micros == (29_166 - 5_833) + (29_166 - 8_749)
    lines = render.volume_month_table(volumes, COST).strip("`\n").splitlines()
    assert [line.split()[0] for line in lines[:9]] == [
        "Kept", "EU-RO-1", "US-KS-2", "In", "EU-RO-1", "US-KS-2", "Between", "EU-RO-1", "US-KS-2",
    ]  # fmt: skip
    assert lines[1].startswith(" EU-RO-1 30 GB") and lines[1].endswith("$0.03")
    assert lines[3].endswith("$0.01") and lines[4].endswith("$0.01") and lines[5].endswith("$0.01")
    assert lines[6].endswith("$0.04") and lines[7].endswith("$0.02") and lines[8].endswith("$0.02")
    assert len({len(line) for line in lines}) == 1, lines
    single = VolumesMonth(29_166, 5_833, 30, (DataCenterVolumes("EU-RO-1", 29_166, 30),))
    assert "EU-RO-1" not in render.volume_month_table(single, COST)
