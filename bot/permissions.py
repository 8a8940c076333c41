"""Who may do what: a role allow-list for /train, an admin role for other people's jobs, no DMs.

Plain functions over role names and ids so they are unit-tested without Discord; the cogs pass
`interaction.user` (a `discord.Member` in a guild) through `role_names`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import discord

from jobs.config import DiscordSettings

DM_REFUSAL = "lorabot works in a server channel, not in direct messages: run the command in your team's server."


def role_names(user: discord.abc.User) -> list[str]:
    """The user's role names in the guild where the interaction happened (none in a DM)."""
    if isinstance(user, discord.Member):
        return [role.name for role in user.roles]
    return []


def _has_any(roles: Iterable[str], allowed: Sequence[str]) -> bool:
    wanted = {name.casefold() for name in allowed}
    return any(name.casefold() in wanted for name in roles)


def is_admin(roles: Iterable[str], settings: DiscordSettings) -> bool:
    return _has_any(roles, settings.admin_roles)


def train_refusal(roles: Sequence[str], settings: DiscordSettings) -> str | None:
    """None when the user may /train; else the sentence that says which role is needed."""
    if not settings.train_roles or _has_any(roles, settings.train_roles) or is_admin(roles, settings):
        return None
    needed = ", ".join(f"`{r}`" for r in settings.train_roles)
    return f"Training needs one of these roles: {needed}. Ask an admin to add you."


def owner_or_admin_refusal(owner_id: int, user_id: int, roles: Sequence[str], settings: DiscordSettings) -> str | None:
    """None when `user_id` owns the job or is an admin; else a polite refusal."""
    if owner_id == user_id or is_admin(roles, settings):
        return None
    return "Only the person who started this job (or an admin) can do that."
