"""The fake Discord's world: every record, the rules for changing them, and a signal for waiters.

REST handlers and the test driver both change the world only through these methods, so what the bot did and
what the test set up land in one place, and every change wakes `wait_until()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from typing import Any

from .clock import FakeClock
from .errors import DiscordError
from .files import FileStore, Upload
from .models import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DM,
    FLAG_EPHEMERAL,
    FLAG_HAS_THREAD,
    FLAG_LOADING,
    GUILD_TEXT,
    PUBLIC_THREAD,
    ChannelRecord,
    CommandRecord,
    Failure,
    GuildRecord,
    InteractionRecord,
    JsonDict,
    MessageRecord,
    RequestRecord,
    RoleRecord,
    UserRecord,
    iso,
    new_snowflake,
)

Dispatch = Callable[[str, JsonDict, int | None], None]
MESSAGE_FIELDS = ("content", "embeds", "components", "tts", "sticker_ids", "poll", "nonce")
NONCE_WINDOW_S = 5 * 60
ATTACHMENT_SCHEME = "attachment://"
THREAD_CREATED = 18


class World:
    def __init__(self, clock: FakeClock, *, attachment_size_limit: int, bot_name: str = "lorabot") -> None:
        self.clock = clock
        self.files = FileStore()
        self.app_id = new_snowflake()
        self.bot = UserRecord(self.app_id, bot_name, bot=True)
        self.owner = UserRecord(new_snowflake(), "owner")
        self.users: dict[int, UserRecord] = {self.bot.id: self.bot, self.owner.id: self.owner}
        self.guilds: dict[int, GuildRecord] = {}
        self.channels: dict[int, ChannelRecord] = {}
        self.messages: dict[int, MessageRecord] = {}
        self.channel_messages: dict[int, list[int]] = {}
        self.global_commands: list[CommandRecord] = []
        self.guild_commands: dict[int, list[CommandRecord]] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.requests: list[RequestRecord] = []
        self.failures: list[Failure] = []
        self.dispatch: Dispatch = lambda event, data, guild_id: None
        self._changed = asyncio.Event()
        self.default_attachment_size_limit = attachment_size_limit
        self.guild = self.add_guild("Test Guild", attachment_size_limit=attachment_size_limit)
        self.text_channel = self.add_text_channel("general", self.guild)

    # ------------------------------------------------------------ waiting

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Return the first truthy `predicate()`, re-checked after every change, or fail after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.25))

    def record_failure(self, kind: str, message: str) -> None:
        self.failures.append(Failure(kind, message, self.clock.now()))
        self.changed()

    # ------------------------------------------------------------ guilds, users, channels

    def add_guild(self, name: str, *, attachment_size_limit: int | None = None) -> GuildRecord:
        guild_id = new_snowflake()
        limit = attachment_size_limit or self.default_attachment_size_limit
        guild = GuildRecord(guild_id, name, self.owner.id, limit)
        guild.roles[guild_id] = RoleRecord(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, position=0)
        bot_role = RoleRecord(new_snowflake(), self.bot.username, DEFAULT_BOT_PERMISSIONS, position=1)
        guild.roles[bot_role.id] = bot_role
        self.guilds[guild_id] = guild
        self.add_member(guild, self.owner)
        self.add_member(guild, self.bot, [bot_role.id])
        return guild

    def add_member(self, guild: GuildRecord, user: UserRecord, role_ids: list[int] | None = None) -> None:
        guild.members[user.id] = list(role_ids or [])
        guild.joined_at[user.id] = self.clock.utcnow()

    def add_role(self, guild: GuildRecord, name: str, permissions: int = 0) -> RoleRecord:
        role = RoleRecord(new_snowflake(), name, permissions, position=len(guild.roles))
        guild.roles[role.id] = role
        return role

    def add_user(self, name: str, guild: GuildRecord, role_names: list[str]) -> UserRecord:
        user = UserRecord(new_snowflake(), name)
        self.users[user.id] = user
        role_ids = []
        for role_name in role_names:
            try:
                role_ids.append(guild.role_named(role_name).id)
            except KeyError:
                role_ids.append(self.add_role(guild, role_name).id)
        self.add_member(guild, user, role_ids)
        return user

    def add_text_channel(self, name: str, guild: GuildRecord) -> ChannelRecord:
        channel = ChannelRecord(
            new_snowflake(), GUILD_TEXT, name, guild_id=guild.id, position=len(self.guild_channels(guild))
        )
        self.channels[channel.id] = channel
        return channel

    def dm_channel(self, user: UserRecord) -> ChannelRecord:
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient_id == user.id:
                return channel
        channel = ChannelRecord(new_snowflake(), DM, None, recipient_id=user.id)
        self.channels[channel.id] = channel
        return channel

    def guild_channels(self, guild: GuildRecord) -> list[ChannelRecord]:
        return [c for c in self.channels.values() if c.guild_id == guild.id]

    def channel(self, channel_id: int) -> ChannelRecord:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DiscordError.unknown("Channel") from None

    def upload_limit(self, channel: ChannelRecord) -> int:
        if channel.guild_id is None:
            return self.default_attachment_size_limit
        return self.guilds[channel.guild_id].attachment_size_limit

    def guild_payload(self, guild: GuildRecord) -> JsonDict:
        channels = self.guild_channels(guild)
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(guild.members),
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "joined_at": iso(guild.joined_at[self.bot.id]),
            "members": [guild.member_payload(self.users[uid]) for uid in guild.members],
            "channels": [c.payload() for c in channels if not c.is_thread],
            "threads": [c.payload() for c in channels if c.is_thread and not c.archived],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ------------------------------------------------------------ messages

    def message(self, channel_id: int, message_id: int) -> MessageRecord:
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or msg.channel_id != channel_id:
            raise DiscordError.unknown("Message")
        return msg

    def messages_in(self, channel_id: int) -> list[MessageRecord]:
        return [self.messages[m] for m in self.channel_messages.get(channel_id, []) if not self.messages[m].deleted]

    def create_message(
        self,
        channel: ChannelRecord,
        author: UserRecord,
        body: JsonDict,
        uploads: list[Upload],
        *,
        interaction: InteractionRecord | None = None,
        flags: int = 0,
        message_type: int = 0,
    ) -> MessageRecord:
        if channel.is_thread and channel.archived:
            if channel.locked:
                raise DiscordError.thread_locked()
            channel.archived = False  # Discord unarchives an unlocked thread when someone posts in it
        message_id = new_snowflake()
        payload: JsonDict = {
            "id": str(message_id),
            "type": message_type,
            "channel_id": str(channel.id),
            "author": author.payload(),
            "content": "",
            "timestamp": iso(self.clock.utcnow()),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": flags,
        }
        if channel.guild_id is not None:
            payload["guild_id"] = str(channel.guild_id)
        if interaction is not None:
            payload["webhook_id"] = str(self.app_id)
            payload["application_id"] = str(self.app_id)
            payload["interaction_metadata"] = self._interaction_metadata(interaction)
        msg = MessageRecord(
            message_id,
            channel.id,
            author.id,
            payload,
            interaction_id=interaction.id if interaction else None,
            created_at=self.clock.now(),
        )
        self._apply_message_body(msg, body, uploads, replace_attachments=True)
        self.messages[message_id] = msg
        self.channel_messages.setdefault(channel.id, []).append(message_id)
        channel.last_message_id = message_id
        channel.message_count += 1
        if not msg.ephemeral:
            self.dispatch("MESSAGE_CREATE", copy.deepcopy(msg.payload), channel.guild_id)
        self.changed()
        return msg

    def message_with_nonce(self, channel: ChannelRecord, author: UserRecord, nonce: str) -> MessageRecord | None:
        horizon = self.clock.now() - NONCE_WINDOW_S
        for msg in self.messages_in(channel.id):
            if msg.author_id == author.id and str(msg.payload.get("nonce")) == nonce and msg.created_at >= horizon:
                return msg
        return None

    def edit_message(self, msg: MessageRecord, body: JsonDict, uploads: list[Upload]) -> MessageRecord:
        self._apply_message_body(msg, body, uploads, replace_attachments=False)
        msg.payload["edited_timestamp"] = iso(self.clock.utcnow())
        msg.payload["flags"] = msg.flags & ~FLAG_LOADING
        msg.edits += 1
        channel = self.channels[msg.channel_id]
        if not msg.ephemeral:
            self.dispatch("MESSAGE_UPDATE", copy.deepcopy(msg.payload), channel.guild_id)
        self.changed()
        return msg

    def delete_message(self, msg: MessageRecord) -> None:
        msg.deleted = True
        channel = self.channels[msg.channel_id]
        event: JsonDict = {"id": str(msg.id), "channel_id": str(channel.id)}
        if channel.guild_id is not None:
            event["guild_id"] = str(channel.guild_id)
        self.dispatch("MESSAGE_DELETE", event, channel.guild_id)
        self.changed()

    def _apply_message_body(
        self, msg: MessageRecord, body: JsonDict, uploads: list[Upload], *, replace_attachments: bool
    ) -> None:
        for key in MESSAGE_FIELDS:
            if key in body and body[key] is not None:
                msg.payload[key] = copy.deepcopy(body[key])
        if "flags" in body and body["flags"] is not None:
            # Only these flags can be set by a sender; EPHEMERAL sticks for the life of the message.
            settable = 4 | 4096 | (1 << 15)
            msg.payload["flags"] = (msg.flags & ~settable) | (int(body["flags"]) & settable) | (msg.flags & 64)
        if "content" in body:
            content, allowed = str(body.get("content") or ""), body.get("allowed_mentions")
            msg.payload["mention_everyone"] = _pings_everyone(content, allowed)
        kept = [] if replace_attachments else self._kept_files(msg, body)
        msg.files = kept + [u.stored for u in sorted(uploads, key=lambda u: u.index)]
        msg.payload["attachments"] = [f.attachment_payload(ephemeral=msg.ephemeral) for f in msg.files]
        self._resolve_attachment_urls(msg)

    @staticmethod
    def _resolve_attachment_urls(msg: MessageRecord) -> None:
        """Discord rewrites embed images given as attachment://<filename> to the uploaded file's CDN url."""
        by_name = {f.filename: f for f in msg.files}
        for embed in msg.payload.get("embeds", []):
            for key in ("image", "thumbnail"):
                media = embed.get(key)
                url = media.get("url") if isinstance(media, dict) else None
                if isinstance(url, str) and url.startswith(ATTACHMENT_SCHEME):
                    stored = by_name.get(url[len(ATTACHMENT_SCHEME) :])
                    if stored is not None:
                        media.update({"url": stored.url, "proxy_url": stored.url})

    @staticmethod
    def _kept_files(msg: MessageRecord, body: JsonDict) -> list[Any]:
        """On edit, `attachments` lists the existing attachments to keep (absent = keep them all)."""
        entries = body.get("attachments")
        if entries is None:
            return list(msg.files)
        keep_ids = {int(e["id"]) for e in entries if isinstance(e, dict) and str(e.get("id", "")).isdigit()}
        return [f for f in msg.files if f.id in keep_ids]

    @staticmethod
    def kept_attachment_count(msg: MessageRecord | None, body: JsonDict) -> int:
        if msg is None:
            return 0
        return len(World._kept_files(msg, body))

    def _interaction_metadata(self, interaction: InteractionRecord) -> JsonDict:
        user = self.users[interaction.user_id]
        owners = {"0": str(interaction.guild_id)} if interaction.guild_id else {"1": str(user.id)}
        data: JsonDict = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": user.payload(),
            "authorizing_integration_owners": owners,
        }
        if interaction.command_name:
            data["name"] = interaction.command_name
        if interaction.response and interaction.response.message_id and interaction.original_message_id:
            data["original_response_message_id"] = str(interaction.original_message_id)
        message = interaction.payload.get("message")
        if message:
            data["interacted_message_id"] = message["id"]
        return data

    # ------------------------------------------------------------ threads

    def create_thread(
        self,
        parent: ChannelRecord,
        body: JsonDict,
        owner: UserRecord,
        *,
        starter: MessageRecord | None = None,
    ) -> ChannelRecord:
        if parent.type not in (GUILD_TEXT, 5) or parent.guild_id is None:
            raise DiscordError.wrong_channel_type()
        if starter is not None and starter.flags & FLAG_HAS_THREAD:
            raise DiscordError.thread_exists()
        kind = PUBLIC_THREAD if starter is not None else int(body.get("type") or 12)
        if starter is not None and parent.type == 5:
            kind = 10
        thread = ChannelRecord(
            starter.id if starter is not None else new_snowflake(),  # a thread from a message takes its id
            kind,
            str(body["name"]),
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=owner.id,
            auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
            created_at=self.clock.utcnow(),
            member_ids={owner.id},
        )
        self.channels[thread.id] = thread
        event = thread.payload()
        event["newly_created"] = True
        self.dispatch("THREAD_CREATE", event, parent.guild_id)
        if starter is not None:
            starter.payload["flags"] = starter.flags | FLAG_HAS_THREAD
            starter.payload["thread"] = thread.payload()
        elif kind == PUBLIC_THREAD:
            # Discord announces a public thread started without a message in its parent channel.
            notice = {"content": thread.name or "", "message_reference": {"channel_id": str(thread.id)}}
            self.create_message(parent, owner, notice, [], message_type=THREAD_CREATED)
        self.changed()
        return thread

    # ------------------------------------------------------------ commands

    def commands_for(self, guild_id: int | None) -> list[CommandRecord]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.setdefault(guild_id, [])

    def overwrite_commands(self, guild_id: int | None, payloads: list[JsonDict]) -> list[CommandRecord]:
        """Bulk overwrite: a command keeps its id when its name and type stay the same, as on Discord."""
        old = {(c.name, c.type): c for c in self.commands_for(guild_id)}
        new = []
        for payload in payloads:
            previous = old.get((payload["name"], payload.get("type", 1)))
            command_id = previous.id if previous else new_snowflake()
            new.append(CommandRecord(command_id, self.command_payload(command_id, payload, guild_id), guild_id))
        if guild_id is None:
            self.global_commands = new
        else:
            self.guild_commands[guild_id] = new
        self.changed()
        return new

    def upsert_command(self, guild_id: int | None, payload: JsonDict) -> tuple[CommandRecord, bool]:
        commands = self.commands_for(guild_id)
        for index, existing in enumerate(commands):
            if (existing.name, existing.type) == (payload["name"], payload.get("type", 1)):
                commands[index] = CommandRecord(
                    existing.id, self.command_payload(existing.id, payload, guild_id), guild_id
                )
                self.changed()
                return commands[index], False
        command = CommandRecord(new_snowflake(), self.command_payload(0, payload, guild_id), guild_id)
        command.payload["id"] = str(command.id)
        commands.append(command)
        self.changed()
        return command, True

    def command_payload(self, command_id: int, payload: JsonDict, guild_id: int | None) -> JsonDict:
        data = copy.deepcopy(payload)
        data.setdefault("type", 1)
        data.setdefault("description", "")
        data.setdefault("options", [])
        data.setdefault("default_member_permissions", None)
        data.setdefault("nsfw", False)
        data.update({"id": str(command_id), "application_id": str(self.app_id), "version": str(new_snowflake())})
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data

    # ------------------------------------------------------------ interactions

    def interaction_by_token(self, token: str) -> InteractionRecord | None:
        for record in self.interactions.values():
            if record.token == token:
                return record
        return None

    def flag_unanswered(self, ack_deadline_s: float) -> None:
        """Record "The application did not respond" for every interaction left unanswered past its deadline."""
        now = self.clock.now()
        for record in self.interactions.values():
            if record.response is None and not record.did_not_respond and now - record.created_at > ack_deadline_s:
                self.mark_did_not_respond(record, f"no response within {ack_deadline_s:g} s")

    def mark_did_not_respond(self, record: InteractionRecord, detail: str) -> None:
        record.did_not_respond = True
        self.record_failure(
            "did_not_respond",
            f"The application did not respond: {record.label} (interaction {record.id}): {detail}",
        )


def ephemeral_flag(flags: int) -> int:
    return flags & FLAG_EPHEMERAL


def _pings_everyone(content: str, allowed_mentions: Any) -> bool:
    """Discord pings the whole server for @everyone or @here in the content unless the sender's
    `allowed_mentions.parse` leaves "everyone" out (absent `allowed_mentions` means everything is parsed)."""
    if "@everyone" not in content and "@here" not in content:
        return False
    if not isinstance(allowed_mentions, dict):
        return True
    return "everyone" in (allowed_mentions.get("parse") or [])
