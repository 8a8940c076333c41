"""The test driver: start the fake Discord, set up its world, play the user, and read what the bot did.

async with FakeDiscord() as fake, patch_discord_py(fake):
    ...start a discord.py bot with fake.bot_token...
    interaction = await fake.send_slash("train", {"dataset": Path("data.zip"), "name": "kana"})
    reply = await fake.wait_for_reply(interaction)
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from .clock import FakeClock
from .files import guess_content_type
from .gateway import Gateway
from .interactions import AttachmentSource, InteractionFactory
from .knobs import Knob, Knobs
from .models import (
    CallbackRecord,
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
)
from .server import API, GATEWAY_PATH, RestServer
from .state import World

MiB = 1024 * 1024
ChannelLike = ChannelRecord | int


class FakeDiscordFailures(AssertionError):
    """Raised by `assert_no_failures()`: the bot did something real Discord would have punished."""


class FakeDiscord:
    def __init__(
        self,
        *,
        bot_token: str | None = None,
        attachment_size_limit: int = 10 * MiB,
        heartbeat_interval_ms: int = 41250,
        ack_deadline_s: float = 3.0,
        token_lifetime_s: float = 15 * 60,
    ) -> None:
        # A token shaped like Discord's (three dot-separated parts), random per fake so tests never share one.
        self.bot_token = (
            bot_token or f"FAKE{secrets.token_urlsafe(18)}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        )
        self.clock = FakeClock()
        self.world = World(self.clock, attachment_size_limit=attachment_size_limit)
        self.gateway = Gateway(self.world, self.bot_token, heartbeat_interval_ms=heartbeat_interval_ms)
        self.knobs = Knobs()
        self.ack_deadline_s = ack_deadline_s
        self._rest = RestServer(
            self.world,
            self.gateway,
            self.knobs,
            bot_token=self.bot_token,
            ack_deadline_s=ack_deadline_s,
            token_lifetime_s=token_lifetime_s,
        )
        self._factory = InteractionFactory(self.world)
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self.port = 0
        self.default_user = self.world.add_user("alice", self.world.guild, [])

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        if self._runner is not None:
            raise RuntimeError("this FakeDiscord is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.world.files.open(self.origin)
        self.gateway.url = self.gateway_url
        runner = web.AppRunner(self._rest.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.gateway.close()
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.world.files.close()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.origin + API

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{GATEWAY_PATH}"

    @property
    def temp_dir(self) -> Path | None:
        return self.world.files.root

    # ------------------------------------------------------------ the world

    @property
    def app_id(self) -> int:
        return self.world.app_id

    @property
    def bot_user(self) -> UserRecord:
        return self.world.bot

    @property
    def guild(self) -> GuildRecord:
        return self.world.guild

    @property
    def channel(self) -> ChannelRecord:
        """The default guild's text channel ("general")."""
        return self.world.text_channel

    def add_guild(self, name: str, *, attachment_size_limit: int | None = None) -> GuildRecord:
        """A new guild; a bot already connected gets no GUILD_CREATE for it (reconnect it to see it)."""
        return self.world.add_guild(name, attachment_size_limit=attachment_size_limit)

    def add_user(
        self, name: str, roles: list[str] | tuple[str, ...] = (), *, guild: GuildRecord | None = None
    ) -> UserRecord:
        """A member of `guild` (default guild) with these roles, created on demand by name."""
        return self.world.add_user(name, guild or self.guild, list(roles))

    def add_role(self, name: str, permissions: int = 0, *, guild: GuildRecord | None = None) -> RoleRecord:
        return self.world.add_role(guild or self.guild, name, permissions)

    def add_channel(self, name: str, *, guild: GuildRecord | None = None) -> ChannelRecord:
        return self.world.add_text_channel(name, guild or self.guild)

    def set_attachment_size_limit(self, limit: int, *, guild: GuildRecord | None = None) -> None:
        (guild or self.guild).attachment_size_limit = limit

    def add_attachment(
        self,
        source: Path | str | bytes,
        filename: str | None = None,
        content_type: str | None = None,
        *,
        channel: ChannelRecord | None = None,
    ) -> JsonDict:
        """Put a file on the CDN (a path is served from where it is, never copied) and return its
        attachment object, ready for `send_slash(..., {"dataset": attachment})`."""
        target = channel or self.channel
        files = self.world.files
        if isinstance(source, bytes):
            name = filename or "file.bin"
            stored = files.add_bytes(source, name, content_type or guess_content_type(name), target.id)
        else:
            path = Path(source)
            name = filename or path.name
            stored = files.add_path(path, name, content_type or guess_content_type(name), target.id)
        return stored.attachment_payload(ephemeral=True)

    # ------------------------------------------------------------ playing the user

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait until a bot has identified on the gateway (READY sent)."""
        await self.world.wait_until(lambda: self.gateway.current() is not None, timeout, "a bot to connect")

    async def send_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, AttachmentSource] | None = None,
        user: UserRecord | None = None,
        roles: list[str | RoleRecord] | None = None,
        channel: ChannelRecord | None = None,
        guild: bool = True,
    ) -> InteractionRecord:
        """Run `/name` (or "group sub") as `user`. Options are typed by the synced command; attachment options
        take a Path, bytes, (filename, bytes|Path) or an `add_attachment()` result (also via `attachments=`)."""
        await self.wait_until_connected()
        who = user or self.default_user
        where = channel or (self.channel if guild else self.world.dm_channel(who))
        merged = {**(options or {}), **(attachments or {})}
        record = self._factory.slash(name, merged, user=who, channel=where, roles=roles)
        return self._send(record)

    async def send_autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: UserRecord | None = None,
        channel: ChannelRecord | None = None,
        guild: bool = True,
    ) -> InteractionRecord:
        """Send an autocomplete interaction (type 4) for option `focused`, whose typed text is `options[focused]`."""
        await self.wait_until_connected()
        who = user or self.default_user
        where = channel or (self.channel if guild else self.world.dm_channel(who))
        return self._send(self._factory.slash(name, options, user=who, channel=where, roles=None, focused=focused))

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: UserRecord | None = None,
        channel: ChannelRecord | None = None,
        guild: bool = True,
        timeout: float = 3.0,
    ) -> list[JsonDict]:
        """Type into option `focused` and return the choices the bot offers (callback type 8)."""
        record = await self.send_autocomplete(name, options, focused, user=user, channel=channel, guild=guild)
        response = await self.wait_for_response(record, timeout=timeout)
        if response.type != 8:
            raise AssertionError(f"autocomplete for /{name} got callback type {response.type}, expected 8")
        return list((response.data or {}).get("choices", []))

    async def click(
        self,
        message: MessageRecord | int,
        custom_id: str,
        *,
        user: UserRecord | None = None,
        values: list[str] | None = None,
    ) -> InteractionRecord:
        """Click the button (or pick `values` in the select) with this custom_id on `message`."""
        await self.wait_until_connected()
        target = message if isinstance(message, MessageRecord) else self.world.messages[message]
        record = self._factory.click(target, custom_id, user=user or self.default_user, values=values)
        return self._send(record)

    def _send(self, record: InteractionRecord) -> InteractionRecord:
        self.world.interactions[record.id] = record
        self.gateway.send_interaction(record.payload)
        self.world.changed()
        return record

    # ------------------------------------------------------------ reading what the bot did

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "a condition") -> Any:
        """Return the first truthy `predicate()`, re-evaluated on every change in the fake."""
        return await self.world.wait_until(predicate, timeout, what)

    async def wait_for_response(self, interaction: InteractionRecord, *, timeout: float = 5.0) -> CallbackRecord:
        def answered() -> CallbackRecord | None:
            return interaction.response

        response: CallbackRecord = await self.wait_for(
            answered, timeout=timeout, what=f"the bot to answer {interaction.label}"
        )
        return response

    async def wait_for_reply(self, interaction: InteractionRecord, *, timeout: float = 5.0) -> MessageRecord:
        """The message the user sees as the answer: the original response once it is no longer "thinking…"."""

        def reply() -> MessageRecord | None:
            msg = self.world.messages.get(interaction.original_message_id or 0)
            if msg is not None and not msg.loading and not msg.deleted:
                return msg
            return None

        message: MessageRecord = await self.wait_for(reply, timeout=timeout, what=f"the reply to {interaction.label}")
        return message

    async def wait_for_message(
        self,
        predicate: Callable[[MessageRecord], bool] = lambda m: True,
        *,
        channel: ChannelLike | None = None,
        timeout: float = 5.0,
    ) -> MessageRecord:
        """The first message (in `channel`, or anywhere) matching `predicate`; edits are seen too."""

        def find() -> MessageRecord | None:
            for msg in self._all_messages(channel):
                if not msg.loading and predicate(msg):
                    return msg
            return None

        message: MessageRecord = await self.wait_for(find, timeout=timeout, what="a matching message")
        return message

    def _all_messages(self, channel: ChannelLike | None) -> list[MessageRecord]:
        if channel is not None:
            return self.messages_in(channel)
        return [m for m in self.world.messages.values() if not m.deleted]

    def messages_in(self, channel: ChannelLike) -> list[MessageRecord]:
        """Messages of a channel or thread, oldest first (ephemeral ones included, flagged `.ephemeral`)."""
        channel_id = channel.id if isinstance(channel, ChannelRecord) else channel
        return self.world.messages_in(channel_id)

    def original_message(self, interaction: InteractionRecord) -> MessageRecord | None:
        return self.world.messages.get(interaction.original_message_id or 0)

    @property
    def threads(self) -> list[ChannelRecord]:
        return [c for c in self.world.channels.values() if c.is_thread]

    def thread_named(self, name: str) -> ChannelRecord:
        for thread in self.threads:
            if thread.name == name:
                return thread
        raise LookupError(f"no thread named {name!r}; threads: {[t.name for t in self.threads]}")

    @property
    def commands(self) -> list[CommandRecord]:
        """Every synced command, global ones first."""
        guild_commands = [c for commands in self.world.guild_commands.values() for c in commands]
        return [*self.world.global_commands, *guild_commands]

    def command(self, name: str) -> CommandRecord:
        for command in self.commands:
            if command.name == name:
                return command
        raise LookupError(f"/{name} is not synced; synced: {[c.name for c in self.commands]}")

    @property
    def interactions(self) -> list[InteractionRecord]:
        return list(self.world.interactions.values())

    @property
    def requests(self) -> list[RequestRecord]:
        return self.world.requests

    def requests_to(self, pattern: str) -> list[RequestRecord]:
        """Recorded requests matching a knob-style pattern, e.g. "POST /channels/*/messages"."""
        knob = Knob(pattern, 1, 0)
        return [r for r in self.requests if knob.matches(r.method, r.path)]

    # ------------------------------------------------------------ failures

    @property
    def failures(self) -> list[Failure]:
        self.world.flag_unanswered(self.ack_deadline_s)
        return list(self.world.failures)

    def clear_failures(self) -> list[Failure]:
        """Take the failures a test provoked on purpose, so teardown does not fail it."""
        failures = self.failures
        self.world.failures.clear()
        return failures

    async def settle(self) -> None:
        """Wait until every interaction is answered or past its 3 s deadline (then flagged as a failure)."""

        def settled() -> bool:
            now = self.clock.now()
            return all(
                r.response is not None or r.did_not_respond or now - r.created_at > self.ack_deadline_s
                for r in self.world.interactions.values()
            )

        await self.wait_for(settled, timeout=self.ack_deadline_s + 1, what="every interaction to be answered")

    def assert_no_failures(self) -> None:
        failures = self.failures
        if failures:
            lines = "\n".join(f"  - {f}" for f in failures)
            raise FakeDiscordFailures(f"the fake Discord recorded {len(failures)} failure(s):\n{lines}")

    # ------------------------------------------------------------ faults on demand

    def fail_next(self, route_pattern: str, status: int = 500, times: int = 1) -> Knob:
        """Answer the next `times` requests matching the pattern with `status` (e.g. 500, 502, 503)."""
        if not 500 <= status <= 599:
            raise ValueError(f"fail_next is for 5xx answers, got {status}")
        return self.knobs.add(Knob(route_pattern, times, status))

    def rate_limit_next(
        self, route_pattern: str, times: int = 1, retry_after: float = 0.05, *, is_global: bool = False
    ) -> Knob:
        """Answer the next `times` matching requests with 429 + `retry_after` (seconds) and Discord's headers."""
        return self.knobs.add(Knob(route_pattern, times, 429, retry_after, is_global))

    def request_reconnect(self) -> None:
        """Gateway op 7: the bot reconnects and RESUMEs; nothing dispatched meanwhile is lost."""
        self.gateway.request_reconnect()

    def invalidate_sessions(self) -> None:
        """Gateway op 9 (not resumable): the bot must IDENTIFY again with a new session."""
        self.gateway.invalidate_sessions()


@contextlib.contextmanager
def patch_discord_py(fake: FakeDiscord) -> Iterator[None]:
    """Point the real discord.py at `fake` (REST base and gateway URL), restoring both afterwards."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
