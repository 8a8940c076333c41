"""Deterministic names: a job's public id (``j42``) and its pods' names (``lorabot-j42-gpu-2``).

Names are derived from the database id and never stored twice in different shapes, so the reaper can map any pod
it finds at RunPod back to its job, and a restarted orchestrator looks a pod up by name before creating it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.states import PodRole

POD_NAME_PREFIX = "lorabot-"

_PUBLIC_ID = re.compile(r"j([1-9][0-9]{0,17})")
_POD_NAME = re.compile(r"lorabot-j([1-9][0-9]{0,17})-(cpu|gpu|try)(?:-([2-9]|[1-9][0-9]+))?")


class InvalidJobId(ValueError):
    """A job id typed by a user (or found in a URL) that is not of the form ``j<number>``."""


def job_public_id(job_id: int) -> str:
    if job_id < 1:
        raise ValueError(f"job ids start at 1, got {job_id}")
    return f"j{job_id}"


def parse_job_public_id(text: str) -> int:
    """``"j42"`` (or ``"J42"``, or ``" j42 "``) → 42; anything else raises ``InvalidJobId`` saying what is expected."""
    cleaned = text.strip().lower()
    match = _PUBLIC_ID.fullmatch(cleaned)
    if match is None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidJobId(f"{shown!r} is not a job id: job ids look like j42 (the letter j and a number)")
    return int(match.group(1))


def pod_name(job_id: int, role: PodRole, attempt: int) -> str:
    """The first attempt has no suffix (``lorabot-j42-gpu``); later ones add it (``lorabot-j42-gpu-2``)."""
    if attempt < 1:
        raise ValueError(f"pod attempts start at 1, got {attempt}")
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{POD_NAME_PREFIX}{job_public_id(job_id)}-{role.value}{suffix}"


@dataclass(frozen=True)
class ParsedPodName:
    job_id: int
    role: PodRole
    attempt: int


def parse_pod_name(name: str) -> ParsedPodName | None:
    """The inverse of ``pod_name``; ``None`` for a pod lorabot did not name (never touch those)."""
    match = _POD_NAME.fullmatch(name)
    if match is None:
        return None
    attempt = int(match.group(3)) if match.group(3) else 1
    return ParsedPodName(job_id=int(match.group(1)), role=PodRole(match.group(2)), attempt=attempt)
