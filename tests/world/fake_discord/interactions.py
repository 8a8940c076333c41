"""Builds INTERACTION_CREATE payloads the way Discord's client would: only for synced commands, with options
typed by the registered option types, attachments in `resolved`, and the member's roles and permissions.

A request the Discord client would never send (unknown command or option, missing required option, a value
outside the choices, clicking a button that is not on the message) raises ValueError/LookupError in the test.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from . import rules
from .files import guess_content_type
from .models import (
    ChannelRecord,
    CommandRecord,
    GuildRecord,
    InteractionRecord,
    JsonDict,
    MessageRecord,
    RoleRecord,
    StoredFile,
    UserRecord,
    new_snowflake,
)
from .state import World

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE = 2, 3, 4
AttachmentSource = StoredFile | JsonDict | Path | bytes | tuple[str, bytes | Path]


class InteractionFactory:
    def __init__(self, world: World) -> None:
        self.world = world

    # ------------------------------------------------------------ public builders

    def slash(
        self,
        name: str,
        options: dict[str, Any],
        *,
        user: UserRecord,
        channel: ChannelRecord,
        roles: list[str | RoleRecord] | None,
        focused: str | None = None,
    ) -> InteractionRecord:
        command = self.find_command(name, channel)
        guild = self._guild_of(channel)
        role_ids = self._role_ids(guild, user, roles)
        self._check_may_use(command, guild, user, role_ids, name)
        resolved: JsonDict = {}
        data: JsonDict = {"id": str(command.id), "name": command.name, "type": command.type}
        data["options"] = self._options_tree(name, command, options, channel, resolved, focused)
        if resolved:
            data["resolved"] = resolved
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        kind = AUTOCOMPLETE if focused is not None else APPLICATION_COMMAND
        return self._record(kind, data, user, channel, role_ids, command_name=name)

    def click(
        self,
        message: MessageRecord,
        custom_id: str,
        *,
        user: UserRecord,
        values: list[str] | None,
    ) -> InteractionRecord:
        if message.deleted:
            raise LookupError(f"message {message.id} was deleted; nobody can click on it")
        component = message.component(custom_id)
        if component is None:
            raise LookupError(
                f"message {message.id} has no component {custom_id!r}; its custom_ids: {message.custom_ids()}"
            )
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled: the Discord client cannot click it")
        data: JsonDict = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            if values is None:
                raise ValueError(f"{custom_id!r} is a select menu: pass values=[...]")
            data["values"] = list(values)
        channel = self.world.channel(message.channel_id)
        guild = self._guild_of(channel)
        role_ids = self._role_ids(guild, user, None)
        return self._record(MESSAGE_COMPONENT, data, user, channel, role_ids, message=message)

    # ------------------------------------------------------------ commands and options

    def find_command(self, name: str, channel: ChannelRecord) -> CommandRecord:
        top = name.split()[0]
        candidates = list(self.world.global_commands)
        if channel.guild_id is not None:
            candidates = self.world.guild_commands.get(channel.guild_id, []) + candidates
        for command in candidates:
            if command.name == top and command.type == 1:
                return command
        known = sorted({c.name for c in candidates})
        raise LookupError(f"/{top} is not a registered command here (sync the command tree first); known: {known}")

    def _check_may_use(
        self, command: CommandRecord, guild: GuildRecord | None, user: UserRecord, role_ids: list[int], name: str
    ) -> None:
        payload = command.payload
        if guild is None:
            contexts = payload.get("contexts")
            allowed = 1 in contexts if contexts else payload.get("dm_permission", True) is not False
            if not allowed:
                raise ValueError(f"/{name} is not available in DMs (contexts={contexts})")
            return
        required = payload.get("default_member_permissions")
        if required is not None:
            have = guild.permissions_of(user.id, role_ids)
            if int(required) & have != int(required):
                raise ValueError(
                    f"{user.username} lacks default_member_permissions={required} for /{name}: "
                    "the Discord client hides the command from them"
                )

    def _options_tree(
        self,
        name: str,
        command: CommandRecord,
        given: dict[str, Any],
        channel: ChannelRecord,
        resolved: JsonDict,
        focused: str | None,
    ) -> list[JsonDict]:
        """Nest the options under "group sub" the way Discord does for sub-commands."""
        path = name.split()[1:]
        declared = command.options
        chain: list[JsonDict] = []
        for part in path:
            sub = next((o for o in declared if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise LookupError(f"/{command.name} has no sub-command {part!r}")
            chain.append(sub)
            declared = sub.get("options", [])
        if any(o.get("type") in (1, 2) for o in declared):
            subs = [o["name"] for o in declared]
            raise ValueError(f"/{name} needs a sub-command: one of {subs}")
        leaf = self._leaf_options(name, declared, given, channel, resolved, focused)
        for sub in reversed(chain):
            leaf = [{"name": sub["name"], "type": sub["type"], "options": leaf}]
        return leaf

    def _leaf_options(
        self,
        name: str,
        declared: list[JsonDict],
        given: dict[str, Any],
        channel: ChannelRecord,
        resolved: JsonDict,
        focused: str | None,
    ) -> list[JsonDict]:
        by_name = {o["name"]: o for o in declared}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise ValueError(f"/{name} has no option(s) {unknown}; it has {sorted(by_name)}")
        if focused is not None and focused not in by_name:
            raise ValueError(f"/{name} has no option {focused!r} to focus")
        out = []
        for option in declared:
            key = option["name"]
            if key == focused:
                # While typing, Discord sends the raw text of the focused option, whatever its type.
                out.append({"name": key, "type": option["type"], "value": str(given.get(key, "")), "focused": True})
                continue
            if key not in given:
                if option.get("required") and focused is None:
                    raise ValueError(f"/{name} needs its required option {key!r}")
                continue
            value = self._typed_value(name, option, given[key], channel, resolved)
            out.append({"name": key, "type": option["type"], "value": value})
        return out

    def _typed_value(self, name: str, option: JsonDict, value: Any, channel: ChannelRecord, resolved: JsonDict) -> Any:
        kind, key = option["type"], option["name"]
        where = f"/{name} option {key!r}"
        if kind == rules.STRING:
            if not isinstance(value, str):
                raise ValueError(f"{where} is a string, got {value!r}")
            low, high = option.get("min_length") or 0, option.get("max_length") or 6000
            if not low <= len(value) <= high:
                raise ValueError(f"{where} must be {low}-{high} characters long")
        elif kind == rules.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where} is an integer, got {value!r}")
        elif kind == rules.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where} is a number, got {value!r}")
        elif kind == rules.BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError(f"{where} is a boolean, got {value!r}")
        elif kind == rules.ATTACHMENT:
            stored = self.to_stored_file(value, channel)
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.attachment_payload(ephemeral=True)
            return str(stored.id)
        elif kind in (rules.USER, rules.MENTIONABLE) and isinstance(value, UserRecord):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            guild = self._guild_of(channel)
            if guild is not None and value.id in guild.members:
                member = guild.member_payload(value)
                member.pop("user")
                resolved.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        elif kind in (rules.ROLE, rules.MENTIONABLE) and isinstance(value, RoleRecord):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        elif kind == rules.CHANNEL and isinstance(value, ChannelRecord):
            data = value.payload()
            data["permissions"] = str(bot_permissions(self.world, value))
            resolved.setdefault("channels", {})[str(value.id)] = data
            return str(value.id)
        else:
            raise ValueError(f"{where} has type {kind}: pass a matching record, got {value!r}")
        if kind in (rules.INTEGER, rules.NUMBER):
            low, high = option.get("min_value"), option.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{where} must be within [{low}, {high}], got {value}")
        choices = option.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"{where} must be one of {[c['value'] for c in choices]}, got {value!r}")
        return value

    def to_stored_file(self, value: AttachmentSource, channel: ChannelRecord) -> StoredFile:
        files = self.world.files
        if isinstance(value, StoredFile):
            return value
        if isinstance(value, dict):
            stored = files.files.get(int(value["id"]))
            if stored is None:
                raise LookupError(f"attachment {value.get('id')} was not made by add_attachment()")
            return stored
        if isinstance(value, Path):
            return files.add_path(value, value.name, guess_content_type(value.name), channel.id)
        if isinstance(value, bytes):
            return files.add_bytes(value, "file.bin", "application/octet-stream", channel.id)
        if isinstance(value, tuple) and len(value) == 2:
            filename, content = value
            if isinstance(content, Path):
                return files.add_path(content, filename, guess_content_type(filename), channel.id)
            return files.add_bytes(content, filename, guess_content_type(filename), channel.id)
        raise ValueError(f"cannot attach {value!r}: pass a Path, bytes, (filename, bytes|Path) or add_attachment()")

    # ------------------------------------------------------------ the envelope

    def _guild_of(self, channel: ChannelRecord) -> GuildRecord | None:
        return self.world.guilds[channel.guild_id] if channel.guild_id is not None else None

    def _role_ids(self, guild: GuildRecord | None, user: UserRecord, roles: list[str | RoleRecord] | None) -> list[int]:
        if guild is None:
            return []
        if user.id not in guild.members:
            raise LookupError(f"{user.username} is not a member of guild {guild.name!r}")
        if roles is None:
            return list(guild.members[user.id])
        ids = []
        for role in roles:
            if isinstance(role, RoleRecord):
                ids.append(role.id)
            else:
                try:
                    ids.append(guild.role_named(role).id)
                except KeyError:
                    ids.append(self.world.add_role(guild, role).id)
        return ids

    def _record(
        self,
        kind: int,
        data: JsonDict,
        user: UserRecord,
        channel: ChannelRecord,
        role_ids: list[int],
        *,
        command_name: str | None = None,
        message: MessageRecord | None = None,
    ) -> InteractionRecord:
        world = self.world
        guild = self._guild_of(channel)
        interaction_id = new_snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        limit = guild.attachment_size_limit if guild else world.default_attachment_size_limit
        payload: JsonDict = {
            "id": str(interaction_id),
            "application_id": str(world.app_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": channel.payload(world.users),
            "app_permissions": str(bot_permissions(world, channel)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": limit,
        }
        if guild is not None:
            payload.update(
                {
                    "guild_id": str(guild.id),
                    "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
                    "guild_locale": "en-US",
                    "member": guild.member_payload(user, role_ids),
                    "authorizing_integration_owners": {"0": str(guild.id)},
                    "context": 0,
                }
            )
        else:
            payload.update(
                {"user": user.payload(), "authorizing_integration_owners": {"1": str(user.id)}, "context": 1}
            )
        if message is not None:
            payload["message"] = dict(message.payload)
        return InteractionRecord(
            interaction_id,
            token,
            kind,
            payload,
            world.clock.now(),
            channel.id,
            guild.id if guild else None,
            user.id,
            limit,
            command_name=command_name,
        )


def bot_permissions(world: World, channel: ChannelRecord) -> int:
    if channel.guild_id is None:
        return 0
    return world.guilds[channel.guild_id].permissions_of(world.bot.id)
