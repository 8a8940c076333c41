"""Who may /train and who may touch a job."""

from __future__ import annotations

from bot.permissions import owner_or_admin_refusal, train_refusal
from jobs.config import DiscordSettings


def test_everyone_may_train_when_no_role_is_required() -> None:
    assert train_refusal([], DiscordSettings(train_roles=[])) is None


def test_the_role_allow_list_names_the_roles_and_admins_pass() -> None:
    settings = DiscordSettings(train_roles=["trainers"], admin_roles=["lorabot-admin"])
    assert train_refusal(["Trainers"], settings) is None  # role names compare case-insensitively
    assert train_refusal(["lorabot-admin"], settings) is None
    refusal = train_refusal(["artists"], settings)
    assert refusal is not None and "`trainers`" in refusal


def test_only_the_owner_or_an_admin_may_act_on_a_job() -> None:
    settings = DiscordSettings(admin_roles=["mods"])
    assert owner_or_admin_refusal(1, 1, [], settings) is None
    assert owner_or_admin_refusal(1, 2, ["mods"], settings) is None
    assert owner_or_admin_refusal(1, 2, ["artists"], settings) is not None
