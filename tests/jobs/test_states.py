"""The job state machine as a table: which statuses are final, which moves are legal, which notice each makes."""

from __future__ import annotations

import pytest

import jobs.states
from jobs.states import (
    ALLOWED_TRANSITIONS,
    JobStatus,
    NoticeKind,
    PodStatus,
    allowed_sources,
    default_notice_kind,
)

S = JobStatus
FAILURES = {
    S.FAILED_DATASET,
    S.FAILED_NO_CAPACITY,
    S.FAILED_TRAINER,
    S.FAILED_BUDGET,
    S.FAILED_TIMEOUT,
    S.FAILED_INTERNAL,
}


def test_statuses_split_into_active_and_terminal() -> None:
    assert JobStatus.terminal_statuses() == FAILURES | {S.SUCCEEDED, S.CANCELLED}
    assert JobStatus.failure_statuses() == FAILURES
    assert JobStatus.active_statuses() == {
        S.QUEUED, S.PREPARING, S.TRAINING, S.INTERRUPTED, S.COLLECTING, S.CANCELLING
    }  # fmt: skip
    assert JobStatus.active_statuses().isdisjoint(JobStatus.terminal_statuses())
    assert all(status.is_terminal() for status in JobStatus.terminal_statuses())
    assert not any(status.is_failed() for status in JobStatus if status not in FAILURES)


def test_every_status_has_a_row_in_the_transition_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        (S.QUEUED, {S.PREPARING, S.TRAINING, S.CANCELLING, S.CANCELLED} | FAILURES),
        (S.PREPARING, {S.TRAINING, S.SUCCEEDED, S.CANCELLING} | FAILURES),
        (S.TRAINING, {S.COLLECTING, S.INTERRUPTED, S.CANCELLING} | FAILURES),
        (S.INTERRUPTED, {S.TRAINING, S.CANCELLING} | FAILURES),
        (S.COLLECTING, {S.SUCCEEDED, S.CANCELLING} | FAILURES),
        (S.CANCELLING, {S.CANCELLED}),
        (S.SUCCEEDED, set()),
        (S.CANCELLED, {S.QUEUED}),
        *[(failure, {S.QUEUED}) for failure in sorted(FAILURES)],
    ],
)
def test_legal_moves_from_each_status(source: JobStatus, targets: set[JobStatus]) -> None:
    assert ALLOWED_TRANSITIONS[source] == targets


def test_only_retry_leaves_a_terminal_status_and_succeeded_is_final() -> None:
    for status in JobStatus.terminal_statuses():
        assert ALLOWED_TRANSITIONS[status] <= {S.QUEUED}
    assert ALLOWED_TRANSITIONS[S.SUCCEEDED] == frozenset()


def test_no_status_moves_to_itself() -> None:
    assert all(status not in targets for status, targets in ALLOWED_TRANSITIONS.items())


def test_allowed_sources_is_the_table_read_backwards() -> None:
    assert allowed_sources(S.SUCCEEDED) == {S.COLLECTING, S.PREPARING}  # PREPARING: a /caption job
    assert allowed_sources(S.CANCELLED) == {S.QUEUED, S.CANCELLING}
    assert allowed_sources(S.QUEUED) == FAILURES | {S.CANCELLED}
    assert allowed_sources(S.FAILED_TRAINER) == {S.QUEUED, S.PREPARING, S.TRAINING, S.INTERRUPTED, S.COLLECTING}
    for target in JobStatus:
        for source in allowed_sources(target):
            assert target in ALLOWED_TRANSITIONS[source]


def test_the_module_diagram_names_every_status() -> None:
    doc = jobs.states.__doc__ or ""
    for status in JobStatus:
        if not status.is_failed():
            assert status.name in doc
    assert "FAILED_*" in doc and "FAILED_NO_CAPACITY" in doc


def test_stored_values_are_stable_lowercase_names() -> None:
    assert [status.value for status in JobStatus] == [status.name.lower() for status in JobStatus]
    assert JobStatus("failed_trainer") is S.FAILED_TRAINER


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (S.PREPARING, NoticeKind.PREPARING),
        (S.INTERRUPTED, NoticeKind.INTERRUPTED),
        (S.SUCCEEDED, NoticeKind.SUCCEEDED),
        (S.CANCELLED, NoticeKind.CANCELLED),
        (S.FAILED_BUDGET, NoticeKind.FAILED),
        (S.FAILED_INTERNAL, NoticeKind.FAILED),
        (S.TRAINING, NoticeKind.INFO),
        (S.QUEUED, NoticeKind.INFO),
    ],
)
def test_each_transition_announces_a_fitting_notice(target: JobStatus, kind: NoticeKind) -> None:
    assert default_notice_kind(target) is kind


def test_only_terminated_pods_are_no_longer_live() -> None:
    assert [status for status in PodStatus if not status.is_live()] == [PodStatus.TERMINATED]
