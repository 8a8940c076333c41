"""Who may touch a job, and links that cannot be stretched or forged.

Layer tested: the domain (`bot.permissions.owner_or_admin_refusal`, which the cogs call for cancel, links and
retry) and the URL signer behind the local store's links (`storage.signing.UrlSigner`, verified by
`storage/http.py`). The cogs themselves were not ready when this was written.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.permissions import owner_or_admin_refusal
from jobs.config import DiscordSettings
from storage.signing import InvalidSignature, LinkExpired, Operation, UrlSigner, WrongOperation

OWNER, STRANGER = 1001, 2002
SETTINGS = DiscordSettings(admin_roles=["lorabot-admin"])


@pytest.mark.parametrize("action", ["cancel", "see links of", "retry"])
def test_a_stranger_cannot_act_on_someone_elses_job_but_the_owner_and_an_admin_can(action: str) -> None:
    refusal = owner_or_admin_refusal(OWNER, STRANGER, ["artist"], SETTINGS)
    assert refusal is not None and "Only the person who started this job" in refusal
    assert owner_or_admin_refusal(OWNER, OWNER, [], SETTINGS) is None
    assert owner_or_admin_refusal(OWNER, STRANGER, ["LoRaBot-Admin"], SETTINGS) is None  # role names ignore case
    # A role merely named like the admin role, or a user id that looks like the owner's, is not enough.
    assert owner_or_admin_refusal(OWNER, STRANGER, ["lorabot-admin "], SETTINGS) is not None
    assert owner_or_admin_refusal(OWNER, int(str(OWNER) + "0"), [], SETTINGS) is not None


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _link_parts(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return parts.path.removeprefix("/artifacts/"), query


def test_a_link_from_a_notice_tampered_or_expired_is_refused() -> None:
    clock = Clock()
    signer = UrlSigner(b"s" * 32, clock=clock)
    url = signer.url("http://bot.local:8080", Operation.GET, "jobs/j1/final/kana.safetensors", 3600)
    key, q = _link_parts(url)
    assert signer.verify("GET", key, q["exp"], q["op"], q["sig"]) is Operation.GET

    with pytest.raises(InvalidSignature):  # another user's job, same signature
        signer.verify("GET", "jobs/j2/final/kana.safetensors", q["exp"], q["op"], q["sig"])
    with pytest.raises(InvalidSignature):  # stretched lifetime: a forged exp says "invalid", not "expired"
        signer.verify("GET", key, str(int(q["exp"]) + 86400), q["op"], q["sig"])
    with pytest.raises(InvalidSignature):  # a signature from another secret
        other = UrlSigner(b"t" * 32, clock=clock)
        _, forged = _link_parts(other.url("http://bot.local:8080", Operation.GET, key, 3600))
        signer.verify("GET", key, forged["exp"], forged["op"], forged["sig"])
    with pytest.raises(InvalidSignature):
        signer.verify("GET", key, q["exp"], q["op"], None)
    with pytest.raises((WrongOperation, InvalidSignature)):  # a download link can't upload
        signer.verify("PUT", key, q["exp"], q["op"], q["sig"])

    clock.now += dt.timedelta(seconds=3601)
    with pytest.raises(LinkExpired):
        signer.verify("GET", key, q["exp"], q["op"], q["sig"])
