"""In-memory records of the fake Discord: users, roles, guilds, channels, messages, files, interactions.

Each record knows how to render itself as the JSON object Discord would send (`payload()`); the shapes follow
discord.py 2.7.1's parsers (state.py, guild.py, channel.py, threads.py, message.py, interactions.py).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

JsonDict = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
_increment = itertools.count(1)

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
DEFAULT_EVERYONE_PERMISSIONS = (
    (1 << 6)  # add reactions
    | (1 << 10)  # view channel
    | (1 << 11)  # send messages
    | (1 << 14)  # embed links
    | (1 << 15)  # attach files
    | (1 << 16)  # read message history
    | (1 << 18)  # use external emojis
    | (1 << 31)  # use application commands
    | (1 << 35)  # create public threads
    | (1 << 38)  # send messages in threads
)
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | (1 << 34) | (1 << 13)  # manage threads, manage messages

GUILD_TEXT, DM, ANNOUNCEMENT, ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD = 0, 1, 5, 10, 11, 12
THREAD_TYPES = {ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD}

# Message flags.
FLAG_HAS_THREAD, FLAG_EPHEMERAL, FLAG_LOADING = 1 << 5, 1 << 6, 1 << 7


def new_snowflake() -> int:
    """A real-looking snowflake: discord.py derives `created_at` from the top bits."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_increment) & 0x3FFFFF)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class UserRecord:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> JsonDict:
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.username,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
        }


@dataclass
class RoleRecord:
    id: int
    name: str
    permissions: int = 0
    position: int = 1

    def payload(self) -> JsonDict:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class GuildRecord:
    id: int
    name: str
    owner_id: int
    attachment_size_limit: int
    roles: dict[int, RoleRecord] = field(default_factory=dict)
    # user id -> role ids (the @everyone role is implicit, as in Discord's member objects)
    members: dict[int, list[int]] = field(default_factory=dict)
    joined_at: dict[int, datetime] = field(default_factory=dict)

    @property
    def everyone(self) -> RoleRecord:
        return self.roles[self.id]

    def role_named(self, name: str) -> RoleRecord:
        for role in self.roles.values():
            if role.name == name:
                return role
        raise KeyError(f"no role named {name!r} in guild {self.name!r}; known: {[r.name for r in self.roles.values()]}")

    def permissions_of(self, user_id: int, role_ids: list[int] | None = None) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        ids = self.members.get(user_id, []) if role_ids is None else role_ids
        value = self.everyone.permissions
        for role_id in ids:
            value |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def member_payload(self, user: UserRecord, role_ids: list[int] | None = None) -> JsonDict:
        roles = self.members.get(user.id, []) if role_ids is None else role_ids
        joined = self.joined_at.get(user.id)
        return {
            "user": user.payload(),
            "roles": [str(r) for r in roles],
            "joined_at": iso(joined) if joined else None,
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": str(self.permissions_of(user.id, role_ids)),
        }


@dataclass
class ChannelRecord:
    id: int
    type: int
    name: str | None
    guild_id: int | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    recipient_id: int | None = None
    position: int = 0
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    created_at: datetime | None = None
    message_count: int = 0
    last_message_id: int | None = None
    member_ids: set[int] = field(default_factory=set)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    def payload(self, users: dict[int, UserRecord] | None = None) -> JsonDict:
        data: JsonDict = {
            "id": str(self.id),
            "type": self.type,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "flags": 0,
        }
        if self.type == DM:
            recipient = (users or {}).get(self.recipient_id or 0)
            data["recipients"] = [recipient.payload()] if recipient else []
            return data
        data.update({"guild_id": str(self.guild_id), "name": self.name, "rate_limit_per_user": 0, "nsfw": False})
        if self.is_thread:
            created = iso(self.created_at) if self.created_at else None
            data.update(
                {
                    "parent_id": str(self.parent_id),
                    "owner_id": str(self.owner_id),
                    "message_count": self.message_count,
                    "total_message_sent": self.message_count,
                    "member_count": len(self.member_ids),
                    "thread_metadata": {
                        "archived": self.archived,
                        "auto_archive_duration": self.auto_archive_duration,
                        "archive_timestamp": created,
                        "locked": self.locked,
                        "invitable": True,
                        "create_timestamp": created,
                    },
                }
            )
        else:
            data.update(
                {
                    "position": self.position,
                    "parent_id": None,
                    "topic": None,
                    "permission_overwrites": [],
                    "default_auto_archive_duration": 1440,
                }
            )
        return data


@dataclass
class StoredFile:
    """A file the CDN serves: one the test attached, or one the bot uploaded (kept on disk, not in memory)."""

    id: int
    filename: str
    content_type: str
    size: int
    path: Path
    url: str
    description: str | None = None

    def attachment_payload(self, *, ephemeral: bool = False) -> JsonDict:
        data: JsonDict = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if ephemeral:
            data["ephemeral"] = True
        return data

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class MessageRecord:
    """One message as Discord holds it: `payload` is the current message object, `files` its stored uploads."""

    id: int
    channel_id: int
    author_id: int
    payload: JsonDict
    files: list[StoredFile] = field(default_factory=list)
    interaction_id: int | None = None
    deleted: bool = False
    edits: int = 0
    created_at: float = 0.0

    @property
    def content(self) -> str:
        return str(self.payload.get("content", ""))

    @property
    def embeds(self) -> list[JsonDict]:
        return list(self.payload.get("embeds", []))

    @property
    def components(self) -> list[JsonDict]:
        return list(self.payload.get("components", []))

    @property
    def attachments(self) -> list[JsonDict]:
        return list(self.payload.get("attachments", []))

    @property
    def flags(self) -> int:
        return int(self.payload.get("flags", 0))

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "is thinking…" message not yet filled in."""
        return bool(self.flags & FLAG_LOADING)

    def buttons(self) -> list[JsonDict]:
        return [c for row in self.components for c in row.get("components", []) if c.get("type") == 2]

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components for c in row.get("components", []) if "custom_id" in c]

    def component(self, custom_id: str) -> JsonDict | None:
        for row in self.components:
            for child in row.get("components", []):
                if child.get("custom_id") == custom_id:
                    return dict(child)
        return None

    def file(self, filename: str) -> StoredFile:
        for stored in self.files:
            if stored.filename == filename:
                return stored
        raise KeyError(f"message {self.id} has no file {filename!r}; it has {[f.filename for f in self.files]}")

    def text(self) -> str:
        """Content plus every embed's visible text, handy for `in` assertions."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [str(embed.get("title") or ""), str(embed.get("description") or "")]
            for item in embed.get("fields") or []:
                parts += [str(item.get("name") or ""), str(item.get("value") or "")]
            parts.append(str((embed.get("footer") or {}).get("text") or ""))
            parts.append(str((embed.get("author") or {}).get("name") or ""))
        return "\n".join(p for p in parts if p)


@dataclass
class CommandRecord:
    id: int
    payload: JsonDict
    guild_id: int | None = None

    @property
    def name(self) -> str:
        return str(self.payload["name"])

    @property
    def type(self) -> int:
        return int(self.payload.get("type", 1))

    @property
    def options(self) -> list[JsonDict]:
        return list(self.payload.get("options", []))


@dataclass
class CallbackRecord:
    """The bot's initial response to an interaction (POST …/callback)."""

    type: int
    data: JsonDict | None
    at: float
    delay_s: float
    message_id: int | None = None

    @property
    def deferred(self) -> bool:
        return self.type in (5, 6)


@dataclass
class InteractionRecord:
    id: int
    token: str
    type: int
    payload: JsonDict
    created_at: float
    channel_id: int
    guild_id: int | None
    user_id: int
    attachment_size_limit: int
    command_name: str | None = None
    response: CallbackRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    original_message_id: int | None = None
    did_not_respond: bool = False

    @property
    def label(self) -> str:
        if self.command_name:
            return f"/{self.command_name}"
        custom_id = (self.payload.get("data") or {}).get("custom_id")
        return f"component {custom_id!r}" if custom_id else f"interaction type {self.type}"


@dataclass
class RequestRecord:
    method: str
    path: str
    route: str
    status: int
    at: float
    duration_s: float
    query: dict[str, str]
    body: Any = None


@dataclass
class Failure:
    kind: str
    message: str
    at: float

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"
