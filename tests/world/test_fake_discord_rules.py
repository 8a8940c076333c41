"""Each Discord limit the fake enforces, proven by a payload real Discord would reject (HTTP 400, code 50035,
"Invalid Form Body", errors at the offending field) next to the payload at the limit that it accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from tests.world.fake_discord import FakeDiscord
from tests.world.fake_discord.raw_client import RawBot, RawResponse

pytestmark = pytest.mark.timeout(20)
Json = dict[str, Any]


@pytest_asyncio.fixture
async def raw(fake_discord: FakeDiscord) -> AsyncIterator[RawBot]:
    async with RawBot(fake_discord) as client:
        yield client


def assert_invalid_form_body(response: RawResponse, path: str) -> None:
    assert response.status == 400, response
    assert response.body["code"] == 50035 and response.body["message"] == "Invalid Form Body", response
    assert path in response.error_paths(), f"expected an error at {path!r}, got {response.error_paths()}"


# ---------------------------------------------------------------- application commands


def option(name: str, kind: int = 3, **extra: Any) -> Json:
    return {"name": name, "description": f"the {name}", "type": kind, **extra}


def command(**overrides: Any) -> Json:
    base: Json = {
        "name": "train",
        "description": "Train a LoRA",
        "type": 1,
        "options": [option("dataset", 11, required=True), option("preset", choices=[{"name": "A", "value": "a"}])],
    }
    base.update(overrides)
    return base


def with_option(index: int, **changes: Any) -> Callable[[Json], None]:
    def apply(cmd: Json) -> None:
        cmd["options"][index].update(changes)

    return apply


COMMAND_CASES: list[tuple[str, Callable[[Json], None], str]] = [
    ("name longer than 32", lambda c: c.update(name="t" * 33), "0.name"),
    ("empty name", lambda c: c.update(name=""), "0.name"),
    ("uppercase name", lambda c: c.update(name="Train"), "0.name"),
    ("name with a space", lambda c: c.update(name="train now"), "0.name"),
    ("empty description", lambda c: c.update(description=""), "0.description"),
    ("description over 100", lambda c: c.update(description="d" * 101), "0.description"),
    ("26 options", lambda c: c.update(options=[option(f"o{i}") for i in range(26)]), "0.options"),
    (
        "required after optional",
        lambda c: c.update(options=[option("a"), option("b", required=True)]),
        "0.options.1.required",
    ),
    (
        "26 choices",
        with_option(1, choices=[{"name": f"c{i}", "value": f"c{i}"} for i in range(26)]),
        "0.options.1.choices",
    ),
    ("choice name over 100", with_option(1, choices=[{"name": "n" * 101, "value": "a"}]), "0.options.1.choices.0.name"),
    (
        "string choice value over 100",
        with_option(1, choices=[{"name": "a", "value": "v" * 101}]),
        "0.options.1.choices.0.value",
    ),
    (
        "integer choice with a string value",
        lambda c: c.update(options=[option("epochs", 4, choices=[{"name": "ten", "value": "10"}])]),
        "0.options.0.choices.0.value",
    ),
    ("unknown option type", with_option(1, type=12), "0.options.1.type"),
    ("option name in capitals", with_option(1, name="Preset"), "0.options.1.name"),
    ("option description over 100", with_option(1, description="d" * 101), "0.options.1.description"),
    ("autocomplete with choices", with_option(1, autocomplete=True), "0.options.1.autocomplete"),
    ("autocomplete on an attachment", with_option(0, autocomplete=True), "0.options.0.autocomplete"),
    (
        "choices on a boolean",
        lambda c: c.update(options=[option("b", 5, choices=[{"name": "y", "value": 1}])]),
        "0.options.0.choices",
    ),
    ("duplicate option names", lambda c: c.update(options=[option("a"), option("a")]), "0.options.1.name"),
    (
        "sub-command next to a plain option",
        lambda c: c.update(options=[option("sub", 1), option("a")]),
        "0.options",
    ),
    ("user command with a description", lambda c: c.update(type=2, name="Inspect", options=[]), "0.description"),
]


@pytest.mark.parametrize(("case", "mutate", "path"), COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
async def test_command_sync_rejects(raw: RawBot, case: str, mutate: Callable[[Json], None], path: str) -> None:
    bad = command()
    mutate(bad)
    assert_invalid_form_body(await raw.sync([bad]), path)


async def test_command_at_every_limit_is_accepted(raw: RawBot, fake_discord: FakeDiscord) -> None:
    """32-char names, 100-char descriptions, 25 options (required first), 25 choices of 100 chars."""
    options = [option(f"r{i}", required=True) for i in range(3)]
    options += [option("p" * 30 + f"{i:02d}", description="d" * 100) for i in range(21)]
    options.append(option("choice", choices=[{"name": "n" * 100, "value": f"{i:0>100}"} for i in range(3)]))
    options[-1]["choices"] += [{"name": f"c{i}", "value": f"v{i}"} for i in range(22)]
    at_limits = command(name="t" * 32, description="d" * 100, options=options)
    response = await raw.sync([at_limits, command(name="ünïcode-ok_1")])
    assert response.status == 200, response
    assert [c.name for c in fake_discord.commands] == ["t" * 32, "ünïcode-ok_1"]


async def test_more_than_100_global_commands_are_rejected(raw: RawBot) -> None:
    response = await raw.sync([command(name=f"cmd{i}") for i in range(101)])
    assert_invalid_form_body(response, "")
    assert (await raw.sync([command(name=f"cmd{i}") for i in range(100)])).status == 200


async def test_duplicate_command_names_are_rejected(raw: RawBot) -> None:
    assert_invalid_form_body(await raw.sync([command(), command()]), "1.name")


async def test_one_command_over_4000_characters_is_rejected(raw: RawBot) -> None:
    choices = [{"name": "n" * 100, "value": "v" * 100} for _ in range(25)]
    response = await raw.sync([command(options=[option(f"o{i}", choices=choices) for i in range(2)])])
    assert_invalid_form_body(response, "0")


async def test_a_resync_keeps_command_ids(raw: RawBot) -> None:
    first = await raw.sync([command()])
    second = await raw.sync([command(description="Train a LoRA on a 4090")])
    assert first.body[0]["id"] == second.body[0]["id"]


# ---------------------------------------------------------------- messages


def button(custom_id: str, **extra: Any) -> Json:
    return {"type": 2, "style": 1, "label": "Go", "custom_id": custom_id, **extra}


def row(*children: Json) -> Json:
    return {"type": 1, "components": list(children)}


def embed(**fields: Any) -> Json:
    return {"title": "Plan", **fields}


MESSAGE_CASES: list[tuple[str, Json, str]] = [
    ("content over 2000", {"content": "x" * 2001}, "content"),
    ("11 embeds", {"embeds": [embed() for _ in range(11)]}, "embeds"),
    ("embed title over 256", {"embeds": [embed(title="t" * 257)]}, "embeds.0.title"),
    ("embed description over 4096", {"embeds": [embed(description="d" * 4097)]}, "embeds.0.description"),
    ("26 embed fields", {"embeds": [embed(fields=[{"name": "n", "value": "v"}] * 26)]}, "embeds.0.fields"),
    ("field name over 256", {"embeds": [embed(fields=[{"name": "n" * 257, "value": "v"}])]}, "embeds.0.fields.0.name"),
    (
        "field value over 1024",
        {"embeds": [embed(fields=[{"name": "n", "value": "v" * 1025}])]},
        "embeds.0.fields.0.value",
    ),
    ("footer over 2048", {"embeds": [embed(footer={"text": "f" * 2049})]}, "embeds.0.footer.text"),
    ("author over 256", {"embeds": [embed(author={"name": "a" * 257})]}, "embeds.0.author.name"),
    (
        "embeds over 6000 characters in total",
        {"embeds": [embed(title=None, description="d" * 3001), embed(title=None, description="d" * 3000)]},
        "embeds",
    ),
    ("6 action rows", {"components": [row(button(f"b{i}")) for i in range(6)]}, "components"),
    ("6 buttons in a row", {"components": [row(*[button(f"b{i}") for i in range(6)])]}, "components.0.components"),
    ("custom_id over 100", {"components": [row(button("c" * 101))]}, "components.0.components.0.custom_id"),
    (
        "button with custom_id and url",
        {"components": [row(button("b", url="https://example.com"))]},
        "components.0.components.0",
    ),
    (
        "button with neither custom_id nor url",
        {"components": [row({"type": 2, "style": 1, "label": "?"})]},
        "components.0.components.0",
    ),
    (
        "link button with a custom_id",
        {"components": [row({"type": 2, "style": 5, "label": "LoRA", "url": "https://x.y", "custom_id": "c"})]},
        "components.0.components.0",
    ),
    ("a button outside an action row", {"components": [button("b")]}, "components.0.type"),
    ("duplicate custom_ids", {"components": [row(button("b"), button("b"))]}, "components.0.components.1.custom_id"),
]


@pytest.mark.parametrize(("case", "body", "path"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES])
async def test_channel_message_rejects(
    raw: RawBot, fake_discord: FakeDiscord, case: str, body: Json, path: str
) -> None:
    response = await raw.request("POST", f"/channels/{fake_discord.channel.id}/messages", json_body=body)
    assert_invalid_form_body(response, path)
    assert fake_discord.messages_in(fake_discord.channel) == []


async def test_message_at_every_limit_is_accepted(raw: RawBot, fake_discord: FakeDiscord) -> None:
    """2000 chars, 10 embeds totalling 6000, 25 fields, 5 rows × 5 buttons with 100-char ids, 10 files."""
    embeds = [embed(title="t" * 256, description="d" * 344) for _ in range(10)]
    embeds[0]["fields"] = [{"name": "n", "value": "v"} for _ in range(25)]
    embeds[0]["description"] = "d" * 294
    rows = [row(*[button(f"{r}{b}".rjust(100, "x")) for b in range(5)]) for r in range(5)]
    body = {"content": "c" * 2000, "embeds": embeds, "components": rows}
    files = [(f"sample-{i:02d}.png", b"\x89PNG" + bytes([i])) for i in range(10)]
    response = await raw.request("POST", f"/channels/{fake_discord.channel.id}/messages", json_body=body, files=files)
    assert response.status == 200, response
    [message] = fake_discord.messages_in(fake_discord.channel)
    assert len(message.attachments) == 10 and message.file("sample-09.png").read_bytes() == b"\x89PNG\x09"
    assert len(message.custom_ids()) == 25


async def test_more_than_10_attachments_are_rejected(raw: RawBot, fake_discord: FakeDiscord) -> None:
    files = [(f"f{i}.txt", b"x") for i in range(11)]
    response = await raw.request(
        "POST", f"/channels/{fake_discord.channel.id}/messages", json_body={"content": "hi"}, files=files
    )
    assert_invalid_form_body(response, "attachments")


async def test_uploads_over_the_guild_limit_are_413(raw: RawBot, fake_discord: FakeDiscord) -> None:
    """Total bytes of all files over the guild's attachment_size_limit → 413, code 40005."""
    fake_discord.set_attachment_size_limit(1000)
    path = f"/channels/{fake_discord.channel.id}/messages"
    response = await raw.request("POST", path, json_body={}, files=[("a.bin", b"x" * 600), ("b.bin", b"x" * 401)])
    assert response.status == 413
    assert response.body == {"message": "Request entity too large", "code": 40005}
    ok = await raw.request("POST", path, json_body={}, files=[("a.bin", b"x" * 600), ("b.bin", b"x" * 400)])
    assert ok.status == 200


async def test_an_empty_message_is_rejected(raw: RawBot, fake_discord: FakeDiscord) -> None:
    response = await raw.request("POST", f"/channels/{fake_discord.channel.id}/messages", json_body={"content": ""})
    assert (response.status, response.body) == (400, {"message": "Cannot send an empty message", "code": 50006})


async def test_edits_are_held_to_the_same_limits(raw: RawBot, fake_discord: FakeDiscord) -> None:
    path = f"/channels/{fake_discord.channel.id}/messages"
    created = await raw.request("POST", path, json_body={"content": "ok"})
    edit = await raw.request("PATCH", f"{path}/{created.body['id']}", json_body={"content": "x" * 2001})
    assert_invalid_form_body(edit, "content")
    assert fake_discord.messages_in(fake_discord.channel)[0].content == "ok"


async def test_thread_names_and_archive_durations_are_checked(raw: RawBot, fake_discord: FakeDiscord) -> None:
    path = f"/channels/{fake_discord.channel.id}/threads"
    assert_invalid_form_body(await raw.request("POST", path, json_body={"name": "n" * 101, "type": 11}), "name")
    bad_duration = {"name": "j1", "type": 11, "auto_archive_duration": 30}
    assert_invalid_form_body(await raw.request("POST", path, json_body=bad_duration), "auto_archive_duration")
    assert fake_discord.threads == []


async def test_a_message_gets_one_thread_only(raw: RawBot, fake_discord: FakeDiscord) -> None:
    created = await raw.request("POST", f"/channels/{fake_discord.channel.id}/messages", json_body={"content": "j1"})
    path = f"/channels/{fake_discord.channel.id}/messages/{created.body['id']}/threads"
    assert (await raw.request("POST", path, json_body={"name": "j1"})).status == 201
    again = await raw.request("POST", path, json_body={"name": "j1 again"})
    assert (again.status, again.body["code"]) == (400, 160004)


# ---------------------------------------------------------------- interactions


@pytest_asyncio.fixture
async def slash(raw: RawBot, fake_discord: FakeDiscord) -> Callable[..., Any]:
    """Sync /train, connect the raw gateway, and return `send()` → the INTERACTION_CREATE payload."""
    assert (
        await raw.sync([command(), command(name="pick", options=[option("model", autocomplete=True)])])
    ).status == 200
    await raw.connect()

    async def send(name: str = "train", options: Json | None = None, focused: str | None = None) -> Json:
        if focused is not None:
            await fake_discord.send_autocomplete(name, options or {}, focused)
        else:
            await fake_discord.send_slash(name, options if options is not None else {"dataset": ("d.zip", b"PK")})
        return (await raw.next_dispatch("INTERACTION_CREATE"))["d"]

    return send


async def test_interaction_payload_has_what_discord_py_needs(
    slash: Callable[..., Any], raw: RawBot, fake_discord: FakeDiscord
) -> None:
    interaction = await slash()
    assert (await raw.callback(interaction, {"type": 5})).status == 200
    assert interaction["type"] == 2 and interaction["attachment_size_limit"] == 10 * 1024 * 1024
    [attachment_option] = interaction["data"]["options"]
    attachment = interaction["data"]["resolved"]["attachments"][attachment_option["value"]]
    assert attachment["filename"] == "d.zip" and attachment["url"].startswith(fake_discord.origin)
    assert interaction["member"]["user"]["username"] == "alice"
    assert interaction["guild_id"] == str(fake_discord.guild.id)


async def test_a_callback_after_3_seconds_is_unknown_and_a_failure(
    slash: Callable[..., Any], raw: RawBot, fake_discord: FakeDiscord
) -> None:
    interaction = await slash()
    fake_discord.clock.advance(3.1)
    response = await raw.callback(interaction, {"type": 5})
    assert (response.status, response.body) == (404, {"message": "Unknown interaction", "code": 10062})
    [failure] = fake_discord.clear_failures()
    assert failure.kind == "did_not_respond" and "The application did not respond" in failure.message


async def test_an_interaction_never_answered_is_a_failure(slash: Callable[..., Any], fake_discord: FakeDiscord) -> None:
    await slash()
    assert fake_discord.failures == []  # still within its 3 s
    fake_discord.clock.advance(3.5)
    [failure] = fake_discord.clear_failures()
    assert "/train" in failure.message


async def test_a_second_callback_is_already_acknowledged(slash: Callable[..., Any], raw: RawBot) -> None:
    interaction = await slash()
    assert (await raw.callback(interaction, {"type": 5})).status == 200
    again = await raw.callback(interaction, {"type": 4, "data": {"content": "hi"}})
    assert (again.status, again.body) == (400, {"message": "Interaction has already been acknowledged.", "code": 40060})


async def test_followups_after_15_minutes_are_401(
    slash: Callable[..., Any], raw: RawBot, fake_discord: FakeDiscord
) -> None:
    interaction = await slash()
    await raw.callback(interaction, {"type": 5})
    fake_discord.clock.advance(14 * 60)
    assert (await raw.followup(interaction, {"content": "epoch 1"})).status == 200
    fake_discord.clock.advance(61)
    late = await raw.followup(interaction, {"content": "epoch 2"})
    assert (late.status, late.body) == (401, {"message": "Invalid Webhook Token", "code": 50027})


async def test_a_followup_before_the_callback_is_an_unknown_webhook(slash: Callable[..., Any], raw: RawBot) -> None:
    interaction = await slash()
    early = await raw.followup(interaction, {"content": "too soon"})
    assert (early.status, early.body["code"]) == (404, 10015)
    assert (await raw.callback(interaction, {"type": 4, "data": {"content": "ok"}})).status == 200


async def test_the_first_followup_after_a_defer_fills_the_thinking_message(
    slash: Callable[..., Any], raw: RawBot, fake_discord: FakeDiscord
) -> None:
    interaction = await slash()
    deferred = await raw.callback(interaction, {"type": 5})
    assert deferred.body["interaction"]["response_message_loading"] is True
    loading_id = deferred.body["resource"]["message"]["id"]
    first = await raw.followup(interaction, {"content": "plan"})
    second = await raw.followup(interaction, {"content": "queued"})
    assert first.body["id"] == loading_id and second.body["id"] != loading_id
    assert [m.content for m in fake_discord.messages_in(fake_discord.channel)] == ["plan", "queued"]


async def test_callback_types_must_fit_the_interaction(slash: Callable[..., Any], raw: RawBot) -> None:
    """An autocomplete result (8) or a message update (7) cannot answer a slash command."""
    interaction = await slash()
    for kind in (8, 7, 6):
        assert_invalid_form_body(await raw.callback(interaction, {"type": kind, "data": {}}), "type")
    assert (await raw.callback(interaction, {"type": 4, "data": {"content": "ok"}})).status == 200


async def test_callback_messages_are_held_to_message_limits(slash: Callable[..., Any], raw: RawBot) -> None:
    interaction = await slash()
    assert_invalid_form_body(await raw.callback(interaction, {"type": 4, "data": {"content": "x" * 2001}}), "content")
    # A rejected callback does not count as an answer: the bot may still answer within its 3 s.
    assert (await raw.callback(interaction, {"type": 4, "data": {"content": "x" * 2000}})).status == 200


async def test_callback_uploads_over_the_interaction_limit_are_413(
    slash: Callable[..., Any], raw: RawBot, fake_discord: FakeDiscord
) -> None:
    fake_discord.set_attachment_size_limit(100)
    interaction = await slash()
    response = await raw.callback(interaction, {"type": 4, "data": {"content": "lora"}}, files=[("x.bin", b"x" * 101)])
    assert (response.status, response.body["code"]) == (413, 40005)
    assert (await raw.callback(interaction, {"type": 5})).status == 200


async def test_autocomplete_results_over_25_choices_are_rejected(slash: Callable[..., Any], raw: RawBot) -> None:
    interaction = await slash("pick", {"model": "xl"}, focused="model")
    assert interaction["type"] == 4 and interaction["data"]["options"][0]["focused"] is True
    choices = [{"name": f"m{i}", "value": f"m{i}"} for i in range(26)]
    assert_invalid_form_body(await raw.callback(interaction, {"type": 8, "data": {"choices": choices}}), "data.choices")
    long_name = [{"name": "n" * 101, "value": "v"}]
    response = await raw.callback(interaction, {"type": 8, "data": {"choices": long_name}})
    assert_invalid_form_body(response, "data.choices.0.name")
    assert (await raw.callback(interaction, {"type": 8, "data": {"choices": choices[:25]}})).status == 200


async def test_modals_need_a_title_of_at_most_45(slash: Callable[..., Any], raw: RawBot) -> None:
    interaction = await slash()
    modal = {
        "custom_id": "m",
        "title": "t" * 46,
        "components": [row({"type": 4, "custom_id": "x", "label": "x", "style": 1})],
    }
    assert_invalid_form_body(await raw.callback(interaction, {"type": 9, "data": modal}), "data.title")
    modal["title"] = "t" * 45
    assert (await raw.callback(interaction, {"type": 9, "data": modal})).status == 200


# ---------------------------------------------------------------- what the Discord client would not send


async def test_send_slash_only_sends_what_the_discord_client_allows(
    slash: Callable[..., Any], fake_discord: FakeDiscord
) -> None:
    with pytest.raises(LookupError, match="not a registered command"):
        await fake_discord.send_slash("cost", {})
    with pytest.raises(ValueError, match="required option 'dataset'"):
        await fake_discord.send_slash("train", {})
    with pytest.raises(ValueError, match="no option"):
        await fake_discord.send_slash("train", {"dataset": b"PK", "epochs": 3})
    with pytest.raises(ValueError, match="must be one of"):
        await fake_discord.send_slash("train", {"dataset": b"PK", "preset": "b"})


def test_everyone_and_here_ping_the_server_unless_allowed_mentions_leaves_everyone_out() -> None:
    from tests.world.fake_discord.state import _pings_everyone

    assert _pings_everyone("look @everyone", None) is True
    assert _pings_everyone("look @here", {"parse": ["everyone"]}) is True
    assert _pings_everyone("look @everyone", {"parse": ["users"]}) is False
    assert _pings_everyone("look @everyone", {"parse": []}) is False
    assert _pings_everyone("nobody here", None) is False
