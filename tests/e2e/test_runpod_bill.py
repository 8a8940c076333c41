"""RunPod's own bill beside the ledger, end to end: a job runs on the emulator, the orchestrator's tick fetches its
pods' billing records from `/v2/billing/pods` once the job has ended, and the stored bill equals the ledger within
1 %, container disk included on both sides."""

from __future__ import annotations

from sqlalchemy import select

from bot import render
from jobs import ledger
from jobs.billing_sync import job_bill
from jobs.states import JobStatus
from storage.db import session_scope
from storage.models import RunpodBill, RunpodBillSync
from tests.world.lorabot_world import LorabotWorld
from tests.world.money import assert_ledger_matches_runpod, record_total, runpod_bills


async def test_a_finished_jobs_runpod_bill_is_stored_and_equals_the_ledger(lorabot_world: LorabotWorld):
    world = lorabot_world
    job_id = world.submit(images=3, epochs=2)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90, what="the job")
    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    pods = world.pods(job_id)
    await world.run_until(lambda: _settled_pods(world) == {p.id for p in pods}, timeout=30, what="RunPod's bill")

    with session_scope(world.sessions) as s:
        cost = ledger.job_cost(s, job_id, now=world.now())
        bill = job_bill(s, job_id, cost)
        stored = s.scalars(select(RunpodBill).order_by(RunpodBill.pod_id, RunpodBill.start)).all()
        stored_by_pod = {p.runpod_pod_id: [(r.start, r.total_micros, r.disk_micros) for r in stored if r.pod_id == p.id]
                         for p in pods}  # fmt: skip
    # What was stored is what RunPod answers, record for record.
    answered = runpod_bills(world, job_id)
    assert stored_by_pod == {
        pod_id: [(r.start, record_total(r), r.disk_micros) for r in records] for pod_id, records in answered.items()
    }
    # Both sides hold container disk, and RunPod's whole bill equals the ledger's pod lines within 1 %.
    assert cost.disk_micros > 0 and sum(r.disk_micros for r in stored) > 0
    assert bill is not None and bill.complete and bill.pods == len(pods)
    assert bill.ledger_micros == cost.cpu_pod_micros + cost.gpu_pod_micros
    assert abs(bill.runpod_micros - bill.ledger_micros) * 100 <= bill.ledger_micros, bill
    assert not bill.differs
    assert_ledger_matches_runpod(world, job_id)
    text = render.job_cost_text(cost, bill)
    assert "incl. disk" in text and "RunPod's own bill for the pods agrees" in text


def _settled_pods(world: LorabotWorld) -> set[int]:
    with session_scope(world.sessions) as s:
        return set(s.scalars(select(RunpodBillSync.pod_id).where(RunpodBillSync.settled_at.is_not(None))))
