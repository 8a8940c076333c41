"""Discord's payload limits, as pure validators that return a `FormErrors` tree (empty when the payload is fine).

The limits are the documented ones (facts/discord-test-world.md); the error codes and messages copy what Discord
answers, so a bot that breaks a rule fails here exactly as it would in production.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FormErrors, JsonDict

Path = tuple[str | int, ...]

# Discord's `^[-_\p{L}\p{N}]{1,32}$`: Python's \w is Unicode letters, digits and "_".
CHAT_INPUT_NAME = re.compile(r"^[-\w]{1,32}$")
COMMAND_TYPES = {1: "CHAT_INPUT", 2: "USER", 3: "MESSAGE"}
MAX_COMMANDS_PER_TYPE = {1: 100, 2: 15, 3: 15}
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
OPTION_TYPES = range(1, 12)
CHOICE_TYPES = {STRING, INTEGER, NUMBER}
MAX_SAFE_INTEGER = 2**53
MAX_COMMAND_TEXT = 4000

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ATTACHMENTS = 10
MAX_ACTION_ROWS = 5
MAX_ROW_WIDTH = 5
MAX_CUSTOM_ID = 100
BUTTON, SELECT_TYPES, TEXT_INPUT, ACTION_ROW = 2, {3, 5, 6, 7, 8}, 4, 1
LINK_STYLE, PREMIUM_STYLE = 5, 6
THREAD_ARCHIVE_DURATIONS = {60, 1440, 4320, 10080}


def check_length(errors: FormErrors, path: Path, value: Any, low: int, high: int, *, required: bool = True) -> None:
    if value is None:
        if required:
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return
    if not isinstance(value, str):
        errors.add(path, "BASE_TYPE_STRING", "Must be a string.")
        return
    if not low <= len(value) <= high:
        if low == 0:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
        else:
            errors.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _max_items(errors: FormErrors, path: Path, items: Any, high: int) -> list[Any]:
    if items is None:
        return []
    if not isinstance(items, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return []
    if len(items) > high:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
    return items


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- application commands


def validate_command_list(commands: Any) -> FormErrors:
    """A bulk overwrite (PUT): every command valid, names unique per type, at most 100/15/15 per type."""
    errors = FormErrors()
    if not isinstance(commands, list):
        errors.add((), "BASE_TYPE_ARRAY", "Must be an array.")
        return errors
    seen: set[tuple[int, str]] = set()
    per_type: dict[int, int] = {}
    for index, command in enumerate(commands):
        errors.extend((index,), validate_command(command))
        if not isinstance(command, dict):
            continue
        kind = command.get("type", 1)
        per_type[kind] = per_type.get(kind, 0) + 1
        key = (kind, str(command.get("name", "")).lower())
        if key in seen:
            errors.add(
                (index, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique"
            )
        seen.add(key)
    for kind, count in per_type.items():
        limit = MAX_COMMANDS_PER_TYPE.get(kind)
        if limit is not None and count > limit:
            errors.add(
                (),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {limit} or fewer {COMMAND_TYPES[kind]} application commands (got {count}).",
            )
    return errors


def validate_command(command: Any) -> FormErrors:
    errors = FormErrors()
    if not isinstance(command, dict):
        errors.add((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return errors
    kind = command.get("type", 1)
    if kind not in COMMAND_TYPES:
        errors.add(("type",), "BASE_TYPE_CHOICES", f"Value must be one of {sorted(COMMAND_TYPES)}.")
        return errors
    name = command.get("name")
    if kind == 1:
        _command_name(errors, ("name",), name)
        check_length(errors, ("description",), command.get("description"), 1, 100)
        options = _max_items(errors, ("options",), command.get("options"), 25)
        _validate_options(errors, ("options",), options, depth=0)
        if _command_text_length(command) > MAX_COMMAND_TEXT:
            errors.add(
                (),
                "APPLICATION_COMMAND_TOO_LARGE",
                f"Command exceeds maximum size ({MAX_COMMAND_TEXT})",
            )
    else:
        # User and message commands: free-form names (spaces and capitals allowed), no description, no options.
        check_length(errors, ("name",), name, 1, 32)
        if command.get("description") not in (None, ""):
            errors.add(("description",), "BASE_TYPE_MAX_LENGTH", "Must be 0 or fewer in length.")
        if command.get("options"):
            errors.add(("options",), "BASE_TYPE_MAX_LENGTH", "Must be 0 or fewer in length.")
    return errors


def _command_name(errors: FormErrors, path: Path, name: Any) -> None:
    check_length(errors, path, name, 1, 32)
    if isinstance(name, str) and 1 <= len(name) <= 32:
        if not CHAT_INPUT_NAME.match(name):
            errors.add(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")
        elif name != name.lower():
            errors.add(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name must be lowercase: {name!r}")


def _command_text_length(command: JsonDict) -> int:
    """Discord caps the summed names, descriptions and choice names/values of one command at 4000."""

    def option_text(option: JsonDict) -> int:
        total = len(str(option.get("name", ""))) + len(str(option.get("description", "")))
        for choice in option.get("choices") or []:
            if isinstance(choice, dict):
                total += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
        return total + sum(option_text(o) for o in option.get("options") or [] if isinstance(o, dict))

    return option_text(command)


def _validate_options(errors: FormErrors, path: Path, options: list[Any], *, depth: int) -> None:
    names: set[str] = set()
    seen_optional = False
    kinds = [o.get("type") for o in options if isinstance(o, dict)]
    has_sub = any(k in (SUB_COMMAND, SUB_COMMAND_GROUP) for k in kinds)
    if has_sub and any(k not in (SUB_COMMAND, SUB_COMMAND_GROUP) for k in kinds):
        errors.add(
            path,
            "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
            "Sub-command and sub-command group option types are mutually exclusive to all other types",
        )
    for index, option in enumerate(options):
        here = (*path, index)
        if not isinstance(option, dict):
            errors.add(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        kind = option.get("type")
        if not isinstance(kind, int) or isinstance(kind, bool) or kind not in OPTION_TYPES:
            errors.add((*here, "type"), "BASE_TYPE_CHOICES", f"Value must be one of {list(OPTION_TYPES)}.")
            continue
        _command_name(errors, (*here, "name"), option.get("name"))
        check_length(errors, (*here, "description"), option.get("description"), 1, 100)
        name = option.get("name")
        if isinstance(name, str):
            if name in names:
                errors.add(
                    (*here, "name"),
                    "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                    "Option names must be unique",
                )
            names.add(name)
        if kind in (SUB_COMMAND, SUB_COMMAND_GROUP):
            _validate_sub_command(errors, here, option, kind, depth)
            continue
        if option.get("required", False):
            if seen_optional:
                errors.add(
                    (*here, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        _validate_option_value_rules(errors, here, option, kind)


def _validate_sub_command(errors: FormErrors, here: Path, option: JsonDict, kind: int, depth: int) -> None:
    if option.get("required"):
        errors.add((*here, "required"), "BASE_TYPE_CHOICES", "Sub-commands cannot be required")
    children = _max_items(errors, (*here, "options"), option.get("options"), 25)
    child_kinds = {c.get("type") for c in children if isinstance(c, dict)}
    if kind == SUB_COMMAND_GROUP and (depth > 0 or child_kinds - {SUB_COMMAND}):
        errors.add(
            (*here, "options"),
            "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
            "A sub-command group may only sit at the top level and may only contain sub-commands",
        )
    if kind == SUB_COMMAND and child_kinds & {SUB_COMMAND, SUB_COMMAND_GROUP}:
        errors.add(
            (*here, "options"),
            "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
            "A sub-command cannot contain sub-commands",
        )
    _validate_options(errors, (*here, "options"), children, depth=depth + 1)


def _validate_option_value_rules(errors: FormErrors, here: Path, option: JsonDict, kind: int) -> None:
    choices = option.get("choices")
    if choices is not None:
        if kind not in CHOICE_TYPES:
            errors.add((*here, "choices"), "BASE_TYPE_MAX_LENGTH", "Only string, integer and number take choices")
        items = _max_items(errors, (*here, "choices"), choices, 25)
        for c_index, choice in enumerate(items):
            _validate_choice(errors, (*here, "choices", c_index), choice, kind)
    if option.get("autocomplete"):
        if kind not in CHOICE_TYPES:
            errors.add(
                (*here, "autocomplete"),
                "APPLICATION_COMMAND_OPTION_AUTOCOMPLETE_TYPE_INVALID",
                "Autocomplete is only allowed on string, integer and number options",
            )
        if choices:
            errors.add(
                (*here, "autocomplete"),
                "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                "Autocomplete cannot be set when choices are present",
            )
    for key in ("min_length", "max_length"):
        if key in option and option[key] is not None:
            value = option[key]
            low = 0 if key == "min_length" else 1
            if kind != STRING or not _is_int(value) or not low <= value <= 6000:
                errors.add((*here, key), "BASE_TYPE_BAD_INT", f"{key} must be an integer {low}-6000 on a string")
    for key in ("min_value", "max_value"):
        if key in option and option[key] is not None:
            value = option[key]
            if kind not in (INTEGER, NUMBER) or isinstance(value, bool) or not isinstance(value, int | float):
                errors.add((*here, key), "BASE_TYPE_NUMBER", f"{key} is only allowed on integer and number")
    if option.get("channel_types") and kind != CHANNEL:
        errors.add((*here, "channel_types"), "BASE_TYPE_MAX_LENGTH", "channel_types is only allowed on channel")


def _validate_choice(errors: FormErrors, path: Path, choice: Any, kind: int) -> None:
    if not isinstance(choice, dict):
        errors.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return
    check_length(errors, (*path, "name"), choice.get("name"), 1, 100)
    value = choice.get("value")
    if kind == STRING:
        check_length(errors, (*path, "value"), value, 1, 100)
    elif kind == INTEGER:
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_SAFE_INTEGER:
            errors.add((*path, "value"), "NUMBER_TYPE_COERCE", f"Value {value!r} is not int.")
    elif kind == NUMBER and (isinstance(value, bool) or not isinstance(value, int | float)):
        errors.add((*path, "value"), "NUMBER_TYPE_COERCE", f"Value {value!r} is not a number.")


def validate_autocomplete_choices(data: Any) -> FormErrors:
    """The `data` of an autocomplete result (callback type 8)."""
    errors = FormErrors()
    if not isinstance(data, dict):
        errors.add(("data",), "BASE_TYPE_REQUIRED", "This field is required")
        return errors
    choices = _max_items(errors, ("data", "choices"), data.get("choices"), 25)
    for index, choice in enumerate(choices):
        if not isinstance(choice, dict):
            errors.add(("data", "choices", index), "DICT_TYPE_CONVERT", "Only dictionaries may be used")
            continue
        check_length(errors, ("data", "choices", index, "name"), choice.get("name"), 1, 100)
        value = choice.get("value")
        if isinstance(value, str):
            check_length(errors, ("data", "choices", index, "value"), value, 1, 100)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.add(("data", "choices", index, "value"), "BASE_TYPE_REQUIRED", "Must be a string or number")
    return errors


# ---------------------------------------------------------------- messages


def embed_text_length(embed: JsonDict) -> int:
    """The characters Discord counts towards the 6000 per message (title, description, fields, footer, author)."""
    total = len(str(embed.get("title") or "")) + len(str(embed.get("description") or ""))
    for field in embed.get("fields") or []:
        if isinstance(field, dict):
            total += len(str(field.get("name") or "")) + len(str(field.get("value") or ""))
    footer, author = embed.get("footer"), embed.get("author")
    if isinstance(footer, dict):
        total += len(str(footer.get("text") or ""))
    if isinstance(author, dict):
        total += len(str(author.get("name") or ""))
    return total


def validate_embeds(embeds: Any, prefix: Path = ("embeds",)) -> FormErrors:
    errors = FormErrors()
    items = _max_items(errors, prefix, embeds, MAX_EMBEDS)
    total = 0
    for index, embed in enumerate(items):
        here = (*prefix, index)
        if not isinstance(embed, dict):
            errors.add(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        check_length(errors, (*here, "title"), embed.get("title"), 0, 256, required=False)
        check_length(errors, (*here, "description"), embed.get("description"), 0, 4096, required=False)
        fields = _max_items(errors, (*here, "fields"), embed.get("fields"), 25)
        for f_index, field in enumerate(fields):
            f_path = (*here, "fields", f_index)
            if not isinstance(field, dict):
                errors.add(f_path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
                continue
            check_length(errors, (*f_path, "name"), field.get("name"), 1, 256)
            check_length(errors, (*f_path, "value"), field.get("value"), 1, 1024)
        footer, author = embed.get("footer"), embed.get("author")
        if isinstance(footer, dict):
            check_length(errors, (*here, "footer", "text"), footer.get("text"), 1, 2048)
        if isinstance(author, dict):
            check_length(errors, (*here, "author", "name"), author.get("name"), 1, 256)
        color = embed.get("color")
        if color is not None and (not _is_int(color) or not 0 <= color <= 0xFFFFFF):
            errors.add((*here, "color"), "NUMBER_TYPE_MAX", "int value should be <= 16777215 and >= 0.")
        total += embed_text_length(embed)
    if total > MAX_EMBED_TOTAL:
        errors.add(prefix, "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")
    return errors


def validate_components(components: Any, prefix: Path = ("components",)) -> FormErrors:
    """Classic message components: ≤ 5 action rows, ≤ 5 buttons or one select per row, custom_id ≤ 100."""
    errors = FormErrors()
    rows = _max_items(errors, prefix, components, MAX_ACTION_ROWS)
    custom_ids: set[str] = set()
    for r_index, row in enumerate(rows):
        r_path = (*prefix, r_index)
        if not isinstance(row, dict) or row.get("type") != ACTION_ROW:
            errors.add(
                (*r_path, "type"),
                "UNION_TYPE_CHOICES",
                "Top-level components must be action rows (type 1) without the IS_COMPONENTS_V2 flag",
            )
            continue
        children = row.get("components")
        if not isinstance(children, list) or not children:
            errors.add((*r_path, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
            continue
        width = 0
        for c_index, child in enumerate(children):
            c_path = (*r_path, "components", c_index)
            if not isinstance(child, dict):
                errors.add(c_path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
                continue
            kind = child.get("type")
            if kind == BUTTON:
                width += 1
                _validate_button(errors, c_path, child)
            elif kind in SELECT_TYPES:
                width += MAX_ROW_WIDTH
                _validate_select(errors, c_path, child)
            else:
                errors.add(
                    (*c_path, "type"),
                    "COMPONENT_TYPE_INVALID",
                    f"Component type {kind!r} is not allowed in a message action row",
                )
            custom_id = child.get("custom_id")
            if isinstance(custom_id, str):
                if custom_id in custom_ids:
                    errors.add(
                        (*c_path, "custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                custom_ids.add(custom_id)
        if width > MAX_ROW_WIDTH:
            errors.add(
                (*r_path, "components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            )
    return errors


def _validate_button(errors: FormErrors, path: Path, button: JsonDict) -> None:
    style = button.get("style")
    if style not in range(1, 7):
        errors.add((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
        return
    has_id, has_url = button.get("custom_id") is not None, button.get("url") is not None
    if style == LINK_STYLE:
        if not has_url or has_id:
            errors.add(path, "BUTTON_COMPONENT_URL_REQUIRED", "A link button needs a url and no custom_id")
    elif style == PREMIUM_STYLE:
        if not button.get("sku_id"):
            errors.add(path, "BUTTON_COMPONENT_SKU_ID_REQUIRED", "A premium button needs a sku_id")
    elif not has_id or has_url:
        errors.add(path, "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A non-link button needs a custom_id and no url")
    if has_id:
        check_length(errors, (*path, "custom_id"), button.get("custom_id"), 1, MAX_CUSTOM_ID)
    check_length(errors, (*path, "label"), button.get("label"), 0, 80, required=False)
    if has_url:
        check_length(errors, (*path, "url"), button.get("url"), 1, 512)


def _validate_select(errors: FormErrors, path: Path, select: JsonDict) -> None:
    check_length(errors, (*path, "custom_id"), select.get("custom_id"), 1, MAX_CUSTOM_ID)
    check_length(errors, (*path, "placeholder"), select.get("placeholder"), 0, 150, required=False)
    if select.get("type") == 3:
        options = select.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= 25:
            errors.add((*path, "options"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
    for key, low in (("min_values", 0), ("max_values", 1)):
        value = select.get(key)
        if value is not None and (not _is_int(value) or not low <= value <= 25):
            errors.add((*path, key), "NUMBER_TYPE_MAX", f"{key} must be between {low} and 25")


def validate_message(payload: JsonDict, *, attachment_count: int) -> FormErrors:
    """Content, embeds, components and attachment count of a message create or edit (fields may be absent)."""
    errors = FormErrors()
    content = payload.get("content")
    if content is not None:
        check_length(errors, ("content",), content, 0, MAX_CONTENT)
    if payload.get("embeds") is not None:
        errors.extend((), validate_embeds(payload.get("embeds")))
    if payload.get("components") is not None:
        if int(payload.get("flags") or 0) & (1 << 15):
            errors.add(
                ("flags",),
                "FAKE_DISCORD_UNSUPPORTED",
                "IS_COMPONENTS_V2 messages are not modelled by the fake Discord",
            )
        else:
            errors.extend((), validate_components(payload.get("components")))
    nonce = payload.get("nonce")
    if isinstance(nonce, str) and len(nonce) > 25:
        errors.add(("nonce",), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    if attachment_count > MAX_ATTACHMENTS:
        errors.add(("attachments",), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
    return errors


def is_empty_message(payload: JsonDict, *, attachment_count: int) -> bool:
    return not (
        payload.get("content")
        or payload.get("embeds")
        or payload.get("components")
        or payload.get("sticker_ids")
        or payload.get("poll")
        or attachment_count
    )


def validate_modal(data: Any) -> FormErrors:
    errors = FormErrors()
    if not isinstance(data, dict):
        errors.add(("data",), "BASE_TYPE_REQUIRED", "This field is required")
        return errors
    check_length(errors, ("data", "custom_id"), data.get("custom_id"), 1, MAX_CUSTOM_ID)
    check_length(errors, ("data", "title"), data.get("title"), 1, 45)
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= 5:
        errors.add(("data", "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    return errors


def validate_thread(payload: Any) -> FormErrors:
    errors = FormErrors()
    if not isinstance(payload, dict):
        errors.add((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return errors
    check_length(errors, ("name",), payload.get("name"), 1, 100)
    duration = payload.get("auto_archive_duration")
    if duration is not None and duration not in THREAD_ARCHIVE_DURATIONS:
        errors.add(
            ("auto_archive_duration",),
            "BASE_TYPE_CHOICES",
            f"Value must be one of {sorted(THREAD_ARCHIVE_DURATIONS)}.",
        )
    kind = payload.get("type")
    if kind is not None and kind not in (10, 11, 12):
        errors.add(("type",), "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
    return errors
