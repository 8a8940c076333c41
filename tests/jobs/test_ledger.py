"""The cost ledger, checked against hand-computed figures (seed 000's table) and the store's pod records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from jobs.ledger import (
    CostBreakdown,
    DataCenterVolumes,
    billed_seconds,
    close_pod_cost,
    close_volume_cost,
    disk_cost_micros,
    exceeds_job_budget,
    format_usd,
    job_cost,
    month_bounds,
    month_cost_by_user,
    month_of,
    pod_cost_micros,
    remaining_budget,
    team_month_cost,
    uptime_drift,
    usd_to_micros,
    user_month_cost,
    volume_billed_hours,
    volume_cost_micros,
    volumes_month_cost,
    would_exceed,
)
from jobs.states import CostKind, JobStatus, PodRole
from storage.models import Job, Pod
from storage.queries import record_volume, record_volume_resize, set_budget
from storage.transitions import record_pod_intent, set_pod_created, set_pod_seen, set_pod_terminated
from tests.world.fixtures_db import T0, new_job

MIN = dt.timedelta(minutes=1)
CPU_RATE, SECURE_4090, COMMUNITY_4090 = 80_000, 690_000, 440_000
ALICE, BOB = 111, 222


def _pod(
    session: Session,
    job_id: int,
    role: PodRole,
    *,
    start: dt.datetime,
    minutes: float | None,
    rate: int,
    attempt: int = 1,
    disk_gb: int | None = None,
) -> Pod:
    """A pod RunPod created at ``start`` and (when ``minutes`` is given) terminated that much later."""
    pod = record_pod_intent(session, job_id=job_id, role=role, attempt=attempt, now=start, container_disk_gb=disk_gb)
    set_pod_created(
        session, pod.id, runpod_pod_id=f"rp-{job_id}-{role.value}-{attempt}", cost_per_hr_micros=rate, now=start
    )
    if minutes is not None:
        set_pod_terminated(session, pod.id, now=start + dt.timedelta(minutes=minutes))
    session.refresh(pod)
    return pod


# -- seed 000's table, by hand --------------------------------------------------------------------------------------


def test_seed_000_cost_table_to_the_micro_dollar() -> None:
    """CPU $0.08/h × 40 min, 4090 $0.69/h × 60 min, 30 GB volume × 4 h: the article's "~$0.75"."""
    cpu = pod_cost_micros(billed_seconds(T0, T0 + 40 * MIN), usd_to_micros("0.08"))
    gpu = pod_cost_micros(billed_seconds(T0, T0 + 60 * MIN), usd_to_micros(0.69))
    volume = volume_cost_micros(30, volume_billed_hours(T0, T0 + 4 * 60 * MIN))
    assert cpu == 53_333  # 80,000 × 2,400 / 3,600 = 53,333.3 → floored once
    assert gpu == 690_000
    assert volume == 11_666  # 30 × 70,000 × 4 / 720 = 11,666.7 → floored once ("$0.003/h", "$0.01")
    assert cpu + gpu + volume == 754_999
    assert (format_usd(cpu), format_usd(gpu), format_usd(volume), format_usd(cpu + gpu + volume)) == (
        "$0.05", "$0.69", "$0.01", "$0.75"
    )  # fmt: skip


def test_container_disk_is_ten_cents_per_gb_per_30_day_month_by_the_second() -> None:
    assert disk_cost_micros(30 * 24 * 3600, 20) == 2_000_000  # 20 GB for a whole month: $2.00
    assert disk_cost_micros(3600, 20) == 2_777  # 2,777.8 µ$ for an hour of 20 GB, floored once
    assert disk_cost_micros(2400, 20) == 1_851  # the seed's 40-minute CPU pod
    assert disk_cost_micros(1, 20) == 0  # 0.77 µ$: a second of disk is below a micro-dollar
    assert disk_cost_micros(3600, 0) == 0
    with pytest.raises(ValueError, match="must be ≥ 0"):
        disk_cost_micros(-1, 20)


def test_partial_seconds_and_hours_round_up_then_the_amount_is_floored_once() -> None:
    assert billed_seconds(T0, T0 + dt.timedelta(seconds=1, microseconds=1)) == 2
    assert billed_seconds(T0, T0) == 0
    assert pod_cost_micros(1, 690_000) == 191  # 191.67 µ$ for one second of a $0.69/h pod
    assert volume_billed_hours(T0, T0 + 4 * 60 * MIN) == 4
    assert volume_billed_hours(T0, T0 + 4 * 60 * MIN + dt.timedelta(seconds=1)) == 5
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        billed_seconds(T0, T0 - MIN)


@pytest.mark.parametrize(
    ("amount", "micros"),
    [(0.69, 690_000), ("0.44", 440_000), (Decimal("0.0000005"), 1), (Decimal("0.00000049"), 0), (2, 2_000_000)],
)
def test_dollar_amounts_convert_exactly(amount: object, micros: int) -> None:
    assert usd_to_micros(amount) == micros  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [-0.01, "abc", float("nan"), float("inf")])
def test_nonsense_prices_are_refused(amount: object) -> None:
    with pytest.raises(ValueError, match=r"price|dollar amount"):
        usd_to_micros(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"), (1, "<$0.01"), (4_999, "<$0.01"), (5_000, "$0.01"), (754_999, "$0.75"), (755_000, "$0.76"),
        (1_234_567_890, "$1,234.57"), (-50_000, "-$0.05"),
    ],
)  # fmt: skip
def test_format_usd_shows_cents(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_months_are_utc_calendar_months() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert month_of(dt.datetime(2026, 12, 1, 5, 0, tzinfo=tokyo)) == "2026-11"
    assert month_bounds("2026-12") == (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="looks like 2026-11"):
        month_bounds("2026-13")


# -- a job in the store ------------------------------------------------------------------------------------------


def test_a_cold_job_costs_its_pods_and_its_volume_hours(db_session: Session) -> None:
    """CPU pod 40 min; the 4090 reserved 5 min before the CPU stage ends, then 60 min; volume 30 GB."""
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0)
    job_id = new_job(db_session)
    db_session.get_one(Job, job_id).volume_id = volume.id
    _pod(db_session, job_id, PodRole.CPU, start=T0, minutes=40, rate=CPU_RATE)
    _pod(db_session, job_id, PodRole.GPU, start=T0 + 35 * MIN, minutes=60, rate=SECURE_4090)

    cost = job_cost(db_session, job_id, now=T0 + 5 * 60 * MIN)
    # The volume is billed from the first pod's creation (T0) to the last pod's end (T0+95 min): 2 started hours.
    assert cost == CostBreakdown(volume_micros=5_833, cpu_pod_micros=53_333, gpu_pod_micros=690_000, live=False)
    assert cost.total_micros == 749_166 and format_usd(cost.total_micros) == "$0.75"


def test_volumes_bill_every_hour_they_exist_and_the_hours_between_jobs_are_shown(db_session: Session) -> None:
    """RunPod bills a Network Volume all month, jobs or not: the month's bill, the jobs' share, the rest."""
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0)
    old = record_volume(
        db_session, data_center_id="US-TX-3", size_gb=50, now=dt.datetime(2026, 10, 31, 20, tzinfo=dt.UTC)
    )
    old.deleted_at = dt.datetime(2026, 11, 1, 6, tzinfo=dt.UTC)
    job_id = new_job(db_session)
    db_session.get_one(Job, job_id).volume_id = volume.id
    _pod(db_session, job_id, PodRole.CPU, start=T0, minutes=40, rate=CPU_RATE)
    _pod(db_session, job_id, PodRole.GPU, start=T0 + 35 * MIN, minutes=60, rate=SECURE_4090)
    now = T0 + 10 * 60 * MIN

    november = volumes_month_cost(db_session, "2026-11", now=now)
    # 30 GB × 10 h (29,166) + 50 GB × the 6 h it lived in November (29,166); the job paid 2 of the 30 GB hours.
    assert (november.kept_micros, november.jobs_share_micros, november.gb) == (58_332, 5_833, 80)
    assert november.between_jobs_micros == 52_499
    # Split per data center (one volume each), as /cost shows it.
    assert november.data_centers == (
        DataCenterVolumes("EU-RO-1", 29_166, 30, jobs_share_micros=5_833),
        DataCenterVolumes("US-TX-3", 29_166, 50, jobs_share_micros=0),
    )
    october = volumes_month_cost(db_session, "2026-10", now=now)
    assert (october.kept_micros, october.jobs_share_micros, october.gb) == (19_444, 0, 50)  # 50 GB × 4 h
    assert volumes_month_cost(db_session, "2026-12", now=now).kept_micros == 0  # not yet


def test_a_job_moved_to_another_data_center_pays_each_volume_for_its_stay_there(db_session: Session) -> None:
    """The CPU stage starts in EU-RO-1 (30 GB volume), the 4090s vanish there after 50 minutes and the job moves to
    US-KS-2 (a 50 GB volume made for it then), where its CPU stage runs again and it trains. EU-RO-1's volume is
    charged for the first CPU pod's 50 minutes (1 started hour of 30 GB), US-KS-2's from its CPU pod to the end of
    training (2 started hours of 50 GB): not the whole job at the new volume's size. The month's split per data
    center holds each part, and every figure adds up."""
    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0 - 60 * MIN)
    job_id = new_job(db_session)
    job = db_session.get_one(Job, job_id)
    job.volume_id, job.data_center_id = ro.id, "EU-RO-1"
    first = _pod(db_session, job_id, PodRole.CPU, start=T0, minutes=50, rate=CPU_RATE)
    first.data_center_id = "EU-RO-1"
    moved_at = T0 + 52 * MIN
    ks = record_volume(db_session, data_center_id="US-KS-2", size_gb=50, now=moved_at)
    job.volume_id, job.data_center_id = ks.id, "US-KS-2"  # what the orchestrator's _move writes
    again = _pod(db_session, job_id, PodRole.CPU, start=moved_at, minutes=40, rate=CPU_RATE, attempt=2)
    gpu = _pod(db_session, job_id, PodRole.GPU, start=moved_at + 35 * MIN, minutes=60, rate=SECURE_4090)
    again.data_center_id = gpu.data_center_id = "US-KS-2"
    db_session.flush()
    end = moved_at + 95 * MIN

    ro_part, ks_part = volume_cost_micros(30, 1), volume_cost_micros(50, 2)
    assert (ro_part, ks_part) == (2_916, 9_722)
    assert job_cost(db_session, job_id, now=end).volume_micros == ro_part + ks_part
    # Before the split, the whole window (T0 .. end: 3 started hours) went to the job's current, 50 GB volume.
    assert ro_part + ks_part < volume_cost_micros(50, 3)

    items = close_volume_cost(db_session, job_id, now=end)
    assert [(i.started_at, i.ended_at, i.amount_micros) for i in items] == [
        (T0, T0 + 50 * MIN, ro_part),
        (moved_at, end, ks_part),
    ]
    assert [i.note for i in items] == [
        "30 GB × $0.07/GB/month, 1 started hour(s) on the EU-RO-1 volume",
        "50 GB × $0.07/GB/month, 2 started hour(s) on the US-KS-2 volume",
    ]
    assert job_cost(db_session, job_id, now=end + 60 * MIN).volume_micros == ro_part + ks_part

    month = volumes_month_cost(db_session, "2026-11", now=end)
    assert [(dc.data_center_id, dc.jobs_share_micros) for dc in month.data_centers] == [
        ("EU-RO-1", ro_part),
        ("US-KS-2", ks_part),
    ]
    assert month.jobs_share_micros == team_month_cost(db_session, "2026-11", now=end).volume_micros == ro_part + ks_part
    assert month.kept_micros == sum(dc.kept_micros for dc in month.data_centers)
    assert month.between_jobs_micros == sum(dc.kept_micros - dc.jobs_share_micros for dc in month.data_centers)
    # Each data center's job share fits inside what its volume was billed for.
    assert all(dc.jobs_share_micros <= dc.kept_micros for dc in month.data_centers)


def test_a_volume_grown_mid_job_costs_its_new_size_from_that_hour_on(db_session: Session) -> None:
    """30 GB, grown to 50 GB 70 minutes into a 3-hour job: hour 1 at 30 GB, hours 2 and 3 at 50 GB (the hour in
    which it grew is billed at the larger size); the month's bill follows the same sizes."""
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0)
    job_id = new_job(db_session)
    db_session.get_one(Job, job_id).volume_id = volume.id
    _pod(db_session, job_id, PodRole.CPU, start=T0, minutes=40, rate=CPU_RATE)
    grown_at = T0 + 70 * MIN
    record_volume_resize(db_session, volume.id, size_gb=50, now=grown_at)
    _pod(db_session, job_id, PodRole.GPU, start=grown_at, minutes=110, rate=SECURE_4090)
    assert volume.size_gb == 50
    expected = (30 + 50 + 50) * 70_000 // 720  # 12,638.9 → floored once
    assert job_cost(db_session, job_id, now=T0 + 4 * 60 * MIN).volume_micros == expected == 12_638
    (item,) = close_volume_cost(db_session, job_id, now=T0 + 4 * 60 * MIN)
    assert item.amount_micros == expected
    assert item.note == "30 GB → 50 GB × $0.07/GB/month, 3 started hour(s) on the EU-RO-1 volume"
    # Without the resize the job would have paid 3 hours of 30 GB; a later job pays 50 GB throughout.
    assert expected > volume_cost_micros(30, 3)
    month = volumes_month_cost(db_session, "2026-11", now=T0 + 4 * 60 * MIN)
    assert month.kept_micros == (30 + 50 + 50 + 50) * 70_000 // 720
    with pytest.raises(ValueError, match="only grows"):
        record_volume_resize(db_session, volume.id, size_gb=40, now=T0 + 5 * 60 * MIN)


def test_closing_costs_writes_final_items_once_and_they_are_authoritative(db_session: Session) -> None:
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0)
    job_id = new_job(db_session)
    db_session.get_one(Job, job_id).volume_id = volume.id
    gpu = _pod(db_session, job_id, PodRole.GPU, start=T0, minutes=60, rate=SECURE_4090)
    live_view = job_cost(db_session, job_id, now=T0 + 2 * 60 * MIN)

    item = close_pod_cost(db_session, gpu)
    assert item is not None and (item.kind, item.amount_micros, item.final) == (CostKind.GPU_POD, 690_000, True)
    assert close_pod_cost(db_session, gpu) is item
    (volume_item,) = close_volume_cost(db_session, job_id, now=T0 + 2 * 60 * MIN)
    assert volume_item.amount_micros == 2_916  # 1 hour of 30 GB
    assert close_volume_cost(db_session, job_id, now=T0 + 9 * 60 * MIN) == [volume_item]

    gpu.cost_per_hr_micros = 1  # a later change to the pod row does not rewrite history
    assert job_cost(db_session, job_id, now=T0 + 9 * 60 * MIN) == live_view


def test_each_pods_container_disk_is_in_its_line_and_the_split_is_kept(db_session: Session) -> None:
    """The seed's cold job with 20 GB of container disk per pod: each pod line holds its compute and its disk, the
    breakdown says how much of them is disk, and the closed items say the same as the live view did."""
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0)
    job_id = new_job(db_session)
    db_session.get_one(Job, job_id).volume_id = volume.id
    cpu = _pod(db_session, job_id, PodRole.CPU, start=T0, minutes=40, rate=CPU_RATE, disk_gb=20)
    gpu = _pod(db_session, job_id, PodRole.GPU, start=T0 + 35 * MIN, minutes=60, rate=SECURE_4090, disk_gb=20)

    live_view = job_cost(db_session, job_id, now=T0 + 5 * 60 * MIN)
    assert live_view == CostBreakdown(
        volume_micros=5_833,
        cpu_pod_micros=53_333 + 1_851,
        gpu_pod_micros=690_000 + 2_777,
        disk_micros=1_851 + 2_777,
        live=False,
    )
    assert live_view.total_micros == 749_166 + 4_628  # the disk counts once, inside the pod lines

    items = [close_pod_cost(db_session, pod) for pod in (cpu, gpu)]
    assert [(i.amount_micros, i.disk_micros, i.rate_micros_per_hour) for i in items if i is not None] == [
        (55_184, 1_851, CPU_RATE),
        (692_777, 2_777, SECURE_4090),
    ]
    assert items[1] is not None and "20 GB container disk" in (items[1].note or "")
    close_volume_cost(db_session, job_id, now=T0 + 5 * 60 * MIN)
    assert job_cost(db_session, job_id, now=T0 + 9 * 60 * MIN) == live_view


def test_a_running_pods_disk_grows_with_it_and_a_pod_from_before_0003_bills_no_disk(db_session: Session) -> None:
    job_id = new_job(db_session)
    _pod(db_session, job_id, PodRole.GPU, start=T0, minutes=None, rate=COMMUNITY_4090, disk_gb=20)
    at_30 = job_cost(db_session, job_id, now=T0 + 30 * MIN)
    assert (at_30.gpu_pod_micros, at_30.disk_micros, at_30.live) == (220_000 + 1_388, 1_388, True)

    old = new_job(db_session)
    _pod(db_session, old, PodRole.GPU, start=T0, minutes=60, rate=SECURE_4090)  # no disk size recorded
    assert job_cost(db_session, old, now=T0 + 2 * 60 * MIN) == CostBreakdown(gpu_pod_micros=690_000)
    assert (job_cost(db_session, job_id, now=T0 + 30 * MIN) + job_cost(db_session, old, now=T0)).disk_micros == 1_388


def test_a_running_pod_costs_more_as_time_passes_until_it_is_terminated(db_session: Session) -> None:
    job_id = new_job(db_session)
    gpu = _pod(db_session, job_id, PodRole.GPU, start=T0, minutes=None, rate=COMMUNITY_4090)
    assert close_pod_cost(db_session, gpu) is None  # nothing to close while it runs

    at_10 = job_cost(db_session, job_id, now=T0 + 10 * MIN)
    at_30 = job_cost(db_session, job_id, now=T0 + 30 * MIN)
    assert (at_10.gpu_pod_micros, at_30.gpu_pod_micros) == (73_333, 220_000)
    assert at_10.live and at_30.live

    set_pod_terminated(db_session, gpu.id, now=T0 + 30 * MIN)
    later = job_cost(db_session, job_id, now=T0 + 10 * 60 * MIN)
    assert (later.gpu_pod_micros, later.live) == (220_000, False)


def test_a_pod_runpod_never_created_costs_nothing(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    assert job_cost(db_session, job_id, now=T0 + 60 * MIN) == CostBreakdown()
    set_pod_terminated(db_session, pod.id, now=T0 + MIN)  # e.g. "no instances available"
    assert close_pod_cost(db_session, pod) is None


def test_uptime_drift_compares_our_seconds_with_runpods_at_the_same_instant(db_session: Session) -> None:
    job_id = new_job(db_session)
    gpu = _pod(db_session, job_id, PodRole.GPU, start=T0, minutes=None, rate=SECURE_4090)
    assert uptime_drift(gpu) is None  # RunPod has not reported an uptime yet
    set_pod_seen(db_session, gpu.id, now=T0 + 10 * MIN, uptime_seconds_api=540)  # 60 s of image pull
    drift = uptime_drift(gpu)
    assert drift is not None
    assert (drift.recorded_seconds, drift.api_seconds, drift.drift_seconds) == (600, 540, 60)


def test_a_job_with_its_own_budget_is_flagged_once_it_spends_more(db_session: Session) -> None:
    job_id = new_job(db_session, budget_micros=500_000)
    _pod(db_session, job_id, PodRole.GPU, start=T0, minutes=None, rate=SECURE_4090)
    assert not exceeds_job_budget(db_session, job_id, now=T0 + 30 * MIN)  # $0.345
    assert exceeds_job_budget(db_session, job_id, now=T0 + 60 * MIN)  # $0.69


# -- users, team, months, budgets --------------------------------------------------------------------------------


def _finished_job(session: Session, user_id: int, start: dt.datetime, minutes: int, rate: int) -> int:
    job_id = new_job(session, user_id=user_id, now=start)
    _pod(session, job_id, PodRole.GPU, start=start, minutes=minutes, rate=rate)
    session.get_one(Job, job_id).status = JobStatus.SUCCEEDED  # set-up: the job's history is not under test here
    session.flush()
    return job_id


def test_totals_per_user_per_month_and_for_the_team(db_session: Session) -> None:
    december = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    _finished_job(db_session, ALICE, T0, 60, SECURE_4090)
    _finished_job(db_session, ALICE, december, 30, COMMUNITY_4090)
    _finished_job(db_session, BOB, T0, 60, COMMUNITY_4090)
    now = december + 60 * MIN

    assert user_month_cost(db_session, ALICE, "2026-11", now=now).total_micros == 690_000
    assert user_month_cost(db_session, ALICE, "2026-12", now=now).total_micros == 220_000
    assert user_month_cost(db_session, BOB, "2026-12", now=now).total_micros == 0
    assert team_month_cost(db_session, "2026-11", now=now).gpu_pod_micros == 1_130_000
    by_user = month_cost_by_user(db_session, "2026-11", now=now)
    assert {user: cost.total_micros for user, cost in by_user.items()} == {ALICE: 690_000, BOB: 440_000}


def test_a_new_job_is_checked_against_the_users_budget(db_session: Session) -> None:
    _finished_job(db_session, ALICE, T0, 60, SECURE_4090)  # $0.69 spent
    set_budget(db_session, user_id=ALICE, month="2026-11", limit_micros=1_000_000)
    now = T0 + 2 * 60 * MIN

    fits = would_exceed(db_session, ALICE, "2026-11", 300_000, now=now)
    assert fits.allowed and fits.reason is None and fits.user_committed_micros == 690_000
    over = would_exceed(db_session, ALICE, "2026-11", 400_000, now=now)
    assert not over.allowed
    assert over.reason == (
        "this job (about $0.40) would take your 2026-11 spending to $1.09, over your budget of $1.00 ($0.31 left)"
    )
    assert remaining_budget(db_session, ALICE, "2026-11", now=now) == 310_000
    assert remaining_budget(db_session, BOB, "2026-11", now=now) is None  # no limit anywhere


def test_jobs_still_running_reserve_their_estimate(db_session: Session) -> None:
    """Five queued jobs must not each pass the check alone: an unfinished job counts at least its estimate."""
    new_job(db_session, user_id=ALICE, estimate_micros=750_000)
    check = would_exceed(db_session, ALICE, "2026-11", 750_000, now=T0, default_user_limit_micros=1_000_000)
    assert not check.allowed and check.user_committed_micros == 750_000
    assert remaining_budget(db_session, ALICE, "2026-11", now=T0, default_limit_micros=1_000_000) == 250_000


def test_the_team_budget_applies_to_everyone(db_session: Session) -> None:
    _finished_job(db_session, BOB, T0, 60, SECURE_4090)
    set_budget(db_session, user_id=None, month="*", limit_micros=1_000_000)
    check = would_exceed(db_session, ALICE, "2026-11", 400_000, now=T0 + 2 * 60 * MIN)
    assert not check.allowed and check.reason is not None and "team budget of $1.00" in check.reason
    assert (check.team_committed_micros, check.team_limit_micros, check.user_limit_micros) == (690_000, 1_000_000, None)
