"""The fake Discord's HTTP side: REST under /api/v10, the attachment CDN and the gateway endpoint.

Every answer is what discord.py 2.7.1 expects: JSON with Content-Type exactly `application/json`, error bodies
`{"message", "code", "errors"?}`, 204 where Discord sends no body. Unknown routes answer 404 like Discord and are
recorded as failures, so a bot calling something the fake does not know fails its test.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from . import rules
from .errors import DiscordError, FormErrors
from .files import ParsedBody, read_body
from .gateway import Gateway
from .knobs import Knobs
from .models import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    CallbackRecord,
    ChannelRecord,
    InteractionRecord,
    JsonDict,
    MessageRecord,
    RequestRecord,
)
from .state import World

API = "/api/v10"
GATEWAY_PATH = "/gateway-ws/"
# Interaction types → callback types Discord accepts for them.
ALLOWED_CALLBACKS = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}
CHAT_INPUT_COMMAND_MESSAGE = 20
BODY_KEY = web.RequestKey("fake_discord_body", object)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # aiohttp's json_response adds "; charset=utf-8", which makes discord.py treat the body as text.
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def _field_error(path: tuple[str | int, ...], code: str, message: str) -> DiscordError:
    errors = FormErrors()
    errors.add(path, code, message)
    return DiscordError.invalid_form_body(errors)


def _int(value: str, what: str) -> int:
    if not value.isdigit():
        raise _field_error((what,), "NUMBER_TYPE_COERCE", f"Value {value!r} is not snowflake.")
    return int(value)


class RestServer:
    def __init__(
        self,
        world: World,
        gateway: Gateway,
        knobs: Knobs,
        *,
        bot_token: str,
        ack_deadline_s: float,
        token_lifetime_s: float,
    ) -> None:
        self.world = world
        self.gateway = gateway
        self.knobs = knobs
        self.bot_token = bot_token
        self.ack_deadline_s = ack_deadline_s
        self.token_lifetime_s = token_lifetime_s

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**4)
        r = app.router
        r.add_get(GATEWAY_PATH, self.gateway.handle)
        r.add_get("/attachments/{channel_id}/{file_id}/{filename}", self.cdn)
        a = API
        r.add_get(a + "/gateway", self.get_gateway)
        r.add_get(a + "/gateway/bot", self.get_gateway_bot)
        r.add_get(a + "/users/@me", self.get_me)
        r.add_post(a + "/users/@me/channels", self.create_dm)
        r.add_get(a + "/users/{user_id}", self.get_user)
        r.add_get(a + "/oauth2/applications/@me", self.get_application)
        r.add_get(a + "/applications/@me", self.get_application)
        for base in ("/applications/{app_id}/commands", "/applications/{app_id}/guilds/{guild_id}/commands"):
            r.add_get(a + base, self.list_commands)
            r.add_put(a + base, self.overwrite_commands)
            r.add_post(a + base, self.upsert_command)
            r.add_get(a + base + "/{command_id}", self.get_command)
            r.add_patch(a + base + "/{command_id}", self.edit_command)
            r.add_delete(a + base + "/{command_id}", self.delete_command)
        r.add_get(a + "/guilds/{guild_id}", self.get_guild)
        r.add_get(a + "/guilds/{guild_id}/channels", self.get_guild_channels)
        r.add_get(a + "/guilds/{guild_id}/roles", self.get_guild_roles)
        r.add_get(a + "/guilds/{guild_id}/members", self.list_members)
        r.add_get(a + "/guilds/{guild_id}/members/{user_id}", self.get_member)
        r.add_get(a + "/guilds/{guild_id}/threads/active", self.active_threads)
        r.add_get(a + "/channels/{channel_id}", self.get_channel)
        r.add_patch(a + "/channels/{channel_id}", self.edit_channel)
        r.add_post(a + "/channels/{channel_id}/typing", self.typing)
        r.add_get(a + "/channels/{channel_id}/messages", self.list_messages)
        r.add_post(a + "/channels/{channel_id}/messages", self.create_message)
        r.add_get(a + "/channels/{channel_id}/messages/{message_id}", self.get_message)
        r.add_patch(a + "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        r.add_delete(a + "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        r.add_post(a + "/channels/{channel_id}/threads", self.create_thread)
        r.add_post(a + "/channels/{channel_id}/messages/{message_id}/threads", self.create_thread_from_message)
        r.add_put(a + "/channels/{channel_id}/thread-members/{user_id}", self.join_thread)
        r.add_delete(a + "/channels/{channel_id}/thread-members/{user_id}", self.leave_thread)
        r.add_post(a + "/interactions/{interaction_id}/{token}/callback", self.interaction_callback)
        r.add_post(a + "/webhooks/{app_id}/{token}", self.followup)
        r.add_get(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message)
        r.add_patch(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self.edit_webhook_message)
        r.add_delete(a + "/webhooks/{app_id}/{token}/messages/{message_id}", self.delete_webhook_message)
        r.add_route("*", "/{tail:.*}", self.unknown_route)
        return app

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == GATEWAY_PATH:
            return await handler(request)
        started, t0 = self.world.clock.now(), time.perf_counter()
        api_path = request.path[len(API) :] if request.path.startswith(API) else request.path
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        response: web.StreamResponse
        try:
            knob = self.knobs.take(request.method, api_path)
            if knob is not None:
                await _drain(request)
                response = knob.response()
            else:
                if self._needs_bot_token(api_path) and request.headers.get("Authorization") != f"Bot {self.bot_token}":
                    raise DiscordError.unauthorized()
                response = await handler(request)
        except DiscordError as exc:
            await _drain(request)
            response = json_response(exc.body(), exc.status)
        except Exception as exc:  # a bug in the fake must fail the test, not hang the bot
            self.world.record_failure("fake_error", f"{request.method} {api_path} crashed the fake: {exc!r}")
            response = json_response({"message": "500: Internal Server Error", "code": 0}, 500)
        self.world.requests.append(
            RequestRecord(
                request.method,
                api_path,
                route[len(API) :] if route.startswith(API) else route,
                response.status,
                started,
                time.perf_counter() - t0,
                dict(request.query),
                request.get(BODY_KEY),
            )
        )
        self.world.changed()
        return response

    @staticmethod
    def _needs_bot_token(api_path: str) -> bool:
        # Interaction callbacks and interaction webhooks authenticate by the token in the URL.
        return not api_path.startswith(("/interactions/", "/webhooks/", "/attachments/"))

    async def _body(self, request: web.Request, channel: ChannelRecord | None, upload_limit: int) -> ParsedBody:
        body = await read_body(
            request, self.world.files, channel_id=channel.id if channel else 0, upload_limit=upload_limit
        )
        request[BODY_KEY] = body.record()
        return body

    async def _json_object(self, request: web.Request) -> JsonDict:
        return _message_payload(await self._body(request, None, 0))

    def _check_app(self, request: web.Request) -> None:
        if request.match_info["app_id"] != str(self.world.app_id):
            raise DiscordError(403, 50001, "Missing Access")

    def _guild_id(self, request: web.Request) -> int | None:
        raw = request.match_info.get("guild_id")
        if raw is None:
            return None
        guild_id = _int(raw, "guild_id")
        if guild_id not in self.world.guilds:
            raise DiscordError.unknown("Guild")
        return guild_id

    def _channel(self, request: web.Request) -> ChannelRecord:
        return self.world.channel(_int(request.match_info["channel_id"], "channel_id"))

    # ------------------------------------------------------------ misc

    async def unknown_route(self, request: web.Request) -> web.Response:
        self.world.record_failure(
            "unknown_route", f"{request.method} {request.path} is not a route the fake Discord knows"
        )
        raise DiscordError.route_not_found()

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self.world.files.files.get(_int(request.match_info["file_id"], "file_id"))
        if stored is None or str(stored.path) == "" or not stored.path.exists():
            return web.Response(status=404, text="Not Found")
        # FileResponse streams from disk with Content-Length (and Range), so big files are never read whole.
        return web.FileResponse(stored.path, headers={"Content-Type": stored.content_type})

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway.url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.gateway.url, "shards": 1, "session_start_limit": limit})

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response(self.world.bot.payload())

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.world.users.get(_int(request.match_info["user_id"], "user_id"))
        if user is None:
            raise DiscordError.unknown("User")
        return json_response(user.payload())

    async def create_dm(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        user = self.world.users.get(int(str(body.get("recipient_id", "0"))))
        if user is None:
            raise DiscordError.unknown("User")
        return json_response(self.world.dm_channel(user).payload(self.world.users))

    async def get_application(self, request: web.Request) -> web.Response:
        world = self.world
        return json_response(
            {
                "id": str(world.app_id),
                "name": world.bot.username,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": world.owner.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": world.bot.payload(),
                "summary": "",
                "rpc_origins": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
            }
        )

    # ------------------------------------------------------------ application commands

    async def list_commands(self, request: web.Request) -> web.Response:
        self._check_app(request)
        return json_response([c.payload for c in self.world.commands_for(self._guild_id(request))])

    async def overwrite_commands(self, request: web.Request) -> web.Response:
        self._check_app(request)
        guild_id = self._guild_id(request)
        body = await self._body(request, None, 0)
        rules.validate_command_list(body.json).raise_if_any()
        commands = self.world.overwrite_commands(guild_id, body.json)
        return json_response([c.payload for c in commands])

    async def upsert_command(self, request: web.Request) -> web.Response:
        self._check_app(request)
        guild_id = self._guild_id(request)
        payload = await self._json_object(request)
        rules.validate_command(payload).raise_if_any()
        existing = {(c.name, c.type) for c in self.world.commands_for(guild_id)}
        kind = payload.get("type", 1)
        same_type = sum(1 for c in self.world.commands_for(guild_id) if c.type == kind)
        if (payload["name"], kind) not in existing and same_type >= rules.MAX_COMMANDS_PER_TYPE[kind]:
            raise DiscordError(400, 30032, "Maximum number of application commands reached")
        command, created = self.world.upsert_command(guild_id, payload)
        return json_response(command.payload, 201 if created else 200)

    def _command(self, request: web.Request) -> Any:
        self._check_app(request)
        command_id = _int(request.match_info["command_id"], "command_id")
        for command in self.world.commands_for(self._guild_id(request)):
            if command.id == command_id:
                return command
        raise DiscordError.unknown("application command")

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._command(request).payload)

    async def edit_command(self, request: web.Request) -> web.Response:
        command = self._command(request)
        patch = await self._json_object(request)
        merged = {**command.payload, **patch}
        rules.validate_command(
            {k: v for k, v in merged.items() if k in ("name", "description", "options", "type")}
        ).raise_if_any()
        command.payload.update(patch)
        self.world.changed()
        return json_response(command.payload)

    async def delete_command(self, request: web.Request) -> web.Response:
        command = self._command(request)
        self.world.commands_for(command.guild_id).remove(command)
        self.world.changed()
        return no_content()

    # ------------------------------------------------------------ guilds

    async def get_guild(self, request: web.Request) -> web.Response:
        guild_id = self._guild_id(request)
        assert guild_id is not None
        payload = self.world.guild_payload(self.world.guilds[guild_id])
        for key in ("members", "channels", "threads", "voice_states", "presences", "joined_at", "large"):
            payload.pop(key, None)
        return json_response(payload)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild_id = self._guild_id(request)
        guild = self.world.guilds[guild_id or 0]
        return json_response([c.payload() for c in self.world.guild_channels(guild) if not c.is_thread])

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        guild = self.world.guilds[self._guild_id(request) or 0]
        return json_response([r.payload() for r in guild.roles.values()])

    async def list_members(self, request: web.Request) -> web.Response:
        guild = self.world.guilds[self._guild_id(request) or 0]
        limit = int(request.query.get("limit", "1"))
        after = int(request.query.get("after", "0"))
        ids = sorted(uid for uid in guild.members if uid > after)[:limit]
        return json_response([guild.member_payload(self.world.users[uid]) for uid in ids])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self.world.guilds[self._guild_id(request) or 0]
        user_id = _int(request.match_info["user_id"], "user_id")
        if user_id not in guild.members:
            raise DiscordError.unknown("Member")
        return json_response(guild.member_payload(self.world.users[user_id]))

    async def active_threads(self, request: web.Request) -> web.Response:
        guild = self.world.guilds[self._guild_id(request) or 0]
        threads = [c for c in self.world.guild_channels(guild) if c.is_thread and not c.archived]
        return json_response({"threads": [t.payload() for t in threads], "members": []})

    # ------------------------------------------------------------ channels and messages

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload(self.world.users))

    async def edit_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        patch = await self._json_object(request)
        errors = FormErrors()
        if "name" in patch:
            rules.check_length(errors, ("name",), patch["name"], 1, 100)
        errors.raise_if_any()
        if "name" in patch:
            channel.name = patch["name"]
        if channel.is_thread:
            channel.archived = bool(patch.get("archived", channel.archived))
            channel.locked = bool(patch.get("locked", channel.locked))
            channel.auto_archive_duration = int(patch.get("auto_archive_duration", channel.auto_archive_duration))
            self.world.dispatch("THREAD_UPDATE", channel.payload(), channel.guild_id)
        self.world.changed()
        return json_response(channel.payload(self.world.users))

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request)
        return no_content()

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 100:
            raise _field_error(("limit",), "NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")
        messages = self.world.messages_in(channel.id)
        before, after = request.query.get("before"), request.query.get("after")
        if before:
            messages = [m for m in messages if m.id < int(before)]
        if after:
            messages = [m for m in messages if m.id > int(after)]
            messages = messages[:limit]
        messages = sorted(messages, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([m.payload for m in messages if not m.ephemeral])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body = await self._body(request, channel, self.world.upload_limit(channel))
        payload = _message_payload(body)
        _check_message(payload, len(body.uploads))
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            # Discord returns the earlier message instead of posting a duplicate (discord.py always enforces).
            earlier = self.world.message_with_nonce(channel, self.world.bot, str(nonce))
            if earlier is not None:
                return json_response(earlier.payload)
        msg = self.world.create_message(channel, self.world.bot, payload, body.uploads)
        return json_response(msg.payload)

    async def get_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        msg = self.world.message(channel.id, _int(request.match_info["message_id"], "message_id"))
        return json_response(msg.payload)

    async def edit_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        msg = self.world.message(channel.id, _int(request.match_info["message_id"], "message_id"))
        if msg.author_id != self.world.bot.id:
            raise DiscordError.cannot_edit_others()
        body = await self._body(request, channel, self.world.upload_limit(channel))
        payload = _message_payload(body)
        count = self.world.kept_attachment_count(msg, payload) + len(body.uploads)
        rules.validate_message(payload, attachment_count=count).raise_if_any()
        return json_response(self.world.edit_message(msg, payload, body.uploads).payload)

    async def delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        msg = self.world.message(channel.id, _int(request.match_info["message_id"], "message_id"))
        self.world.delete_message(msg)
        return no_content()

    # ------------------------------------------------------------ threads

    async def create_thread(self, request: web.Request) -> web.Response:
        parent = self._channel(request)
        payload = await self._json_object(request)
        if "message" in payload:  # forum posts: not modelled
            raise DiscordError.wrong_channel_type()
        rules.validate_thread(payload).raise_if_any()
        thread = self.world.create_thread(parent, payload, self.world.bot)
        return json_response(thread.payload(), 201)

    async def create_thread_from_message(self, request: web.Request) -> web.Response:
        parent = self._channel(request)
        starter = self.world.message(parent.id, _int(request.match_info["message_id"], "message_id"))
        payload = await self._json_object(request)
        rules.validate_thread(payload).raise_if_any()
        thread = self.world.create_thread(parent, payload, self.world.bot, starter=starter)
        return json_response(thread.payload(), 201)

    async def join_thread(self, request: web.Request) -> web.Response:
        thread = self._channel(request)
        if not thread.is_thread:
            raise DiscordError.wrong_channel_type()
        raw = request.match_info["user_id"]
        thread.member_ids.add(self.world.bot.id if raw == "@me" else _int(raw, "user_id"))
        self.world.changed()
        return no_content()

    async def leave_thread(self, request: web.Request) -> web.Response:
        thread = self._channel(request)
        raw = request.match_info["user_id"]
        thread.member_ids.discard(self.world.bot.id if raw == "@me" else _int(raw, "user_id"))
        self.world.changed()
        return no_content()

    # ------------------------------------------------------------ interactions

    async def interaction_callback(self, request: web.Request) -> web.Response:
        world = self.world
        record = world.interactions.get(_int(request.match_info["interaction_id"], "interaction_id"))
        if record is None or record.token != request.match_info["token"]:
            raise DiscordError.unknown("interaction")
        if record.response is not None:
            raise DiscordError.already_acknowledged()
        now = world.clock.now()
        delay = now - record.created_at
        if record.did_not_respond or delay > self.ack_deadline_s:
            if not record.did_not_respond:
                world.mark_did_not_respond(record, f"the callback came {delay:.2f} s after the interaction")
            raise DiscordError.unknown("interaction")
        channel = world.channel(record.channel_id)
        body = await self._body(request, channel, record.attachment_size_limit)
        payload = body.json if isinstance(body.json, dict) else {}
        kind = payload.get("type")
        raw_data = payload.get("data")
        data: JsonDict = raw_data if isinstance(raw_data, dict) else {}
        if kind not in ALLOWED_CALLBACKS.get(record.type, set()):
            raise _field_error(
                ("type",),
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Callback type {kind!r} is not valid for interaction type {record.type}",
            )
        message = self._answer_callback(record, channel, int(kind), data, body)
        # The callback is recorded only once it is accepted: a rejected one leaves the interaction unanswered.
        record.response = CallbackRecord(int(kind), data, now, delay, message.id if message else None)
        world.changed()
        summary: JsonDict = {"id": str(record.id), "type": record.type}
        resource: JsonDict = {"type": kind}
        if message is not None and kind in (4, 5, 7):
            summary.update(
                {
                    "response_message_id": str(message.id),
                    "response_message_loading": bool(message.flags & FLAG_LOADING),
                    "response_message_ephemeral": message.ephemeral,
                }
            )
            resource["message"] = message.payload
        return json_response({"interaction": summary, "resource": resource})

    def _answer_callback(
        self, record: InteractionRecord, channel: ChannelRecord, kind: int, data: JsonDict, body: ParsedBody
    ) -> MessageRecord | None:
        world = self.world
        message_type = CHAT_INPUT_COMMAND_MESSAGE if record.type == 2 else 0
        clicked = record.payload.get("message")
        if kind == 4:
            _check_message(data, len(body.uploads))
            flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            msg = world.create_message(
                channel, world.bot, data, body.uploads, interaction=record, flags=flags, message_type=message_type
            )
            record.original_message_id = msg.id
            return msg
        if kind == 5:
            flags = (int(data.get("flags") or 0) & FLAG_EPHEMERAL) | FLAG_LOADING
            msg = world.create_message(
                channel, world.bot, {}, [], interaction=record, flags=flags, message_type=message_type
            )
            record.original_message_id = msg.id
            return msg
        if kind in (6, 7):
            if clicked is None:
                raise _field_error(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update")
            target = world.message(int(clicked["channel_id"]), int(clicked["id"]))
            record.original_message_id = target.id
            if kind == 6:
                return None
            count = world.kept_attachment_count(target, data) + len(body.uploads)
            rules.validate_message(data, attachment_count=count).raise_if_any()
            return world.edit_message(target, data, body.uploads)
        if kind == 8:
            rules.validate_autocomplete_choices(data).raise_if_any()
            return None
        rules.validate_modal(data).raise_if_any()
        return None

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        if request.match_info["app_id"] != str(self.world.app_id):
            raise DiscordError.unknown("Webhook")
        record = self.world.interaction_by_token(request.match_info["token"])
        if record is None or record.response is None:
            # The interaction's webhook exists only once the interaction has been acknowledged.
            raise DiscordError.unknown("Webhook")
        if self.world.clock.now() - record.created_at > self.token_lifetime_s:
            raise DiscordError.invalid_webhook_token()
        return record

    def _webhook_message(self, record: InteractionRecord, raw_id: str) -> MessageRecord:
        if raw_id == "@original":
            message_id = record.original_message_id
        else:
            message_id = _int(raw_id, "message_id")
            if message_id != record.original_message_id and message_id not in {m.id for m in record.followups}:
                raise DiscordError.unknown("Message")
        msg = self.world.messages.get(message_id or 0)
        if msg is None or msg.deleted:
            raise DiscordError.unknown("Message")
        return msg

    async def followup(self, request: web.Request) -> web.Response:
        world = self.world
        record = self._webhook_interaction(request)
        channel = world.channel(record.channel_id)
        body = await self._body(request, channel, record.attachment_size_limit)
        payload = _message_payload(body)
        _check_message(payload, len(body.uploads))
        original = world.messages.get(record.original_message_id or 0)
        if original is not None and original.loading and record.response and record.response.type == 5:
            # The first followup after a deferred "thinking" response replaces that message, as on Discord.
            msg = world.edit_message(original, payload, body.uploads)
        else:
            flags = int(payload.get("flags") or 0) & FLAG_EPHEMERAL
            message_type = CHAT_INPUT_COMMAND_MESSAGE if record.type == 2 else 0
            msg = world.create_message(
                channel, world.bot, payload, body.uploads, interaction=record, flags=flags, message_type=message_type
            )
        record.followups.append(msg)
        world.changed()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(msg.payload)
        return no_content()

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        return json_response(self._webhook_message(record, request.match_info["message_id"]).payload)

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        msg = self._webhook_message(record, request.match_info["message_id"])
        channel = self.world.channel(msg.channel_id)
        body = await self._body(request, channel, record.attachment_size_limit)
        payload = _message_payload(body)
        count = self.world.kept_attachment_count(msg, payload) + len(body.uploads)
        rules.validate_message(payload, attachment_count=count).raise_if_any()
        return json_response(self.world.edit_message(msg, payload, body.uploads).payload)

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        self.world.delete_message(self._webhook_message(record, request.match_info["message_id"]))
        return no_content()


def _message_payload(body: ParsedBody) -> JsonDict:
    """The body's JSON object; Discord answers 50035 for an array or a scalar where an object belongs."""
    if not isinstance(body.json, dict):
        raise _field_error((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    return body.json


def _check_message(payload: JsonDict, upload_count: int) -> None:
    rules.validate_message(payload, attachment_count=upload_count).raise_if_any()
    if rules.is_empty_message(payload, attachment_count=upload_count):
        raise DiscordError.empty_message()


async def _drain(request: web.Request) -> None:
    """Read what is left of a rejected body so the client sees our answer rather than a reset connection."""
    if request.body_exists and not request.content.at_eof():
        while await request.content.readany():
            pass
