"""The real discord.py against the fake Discord: login, command sync, slash commands, buttons, autocomplete,
retries on 429/5xx and gateway resume. These are the round trips every later end-to-end test builds on."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.world.fake_discord import FakeDiscord, run_bot

pytestmark = pytest.mark.timeout(30)


class EchoBot(commands.Bot):
    """A minimal bot in the shape lorabot's will have: app commands, a persistent button, an autocomplete."""

    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.clicks: list[str] = []

    async def setup_hook(self) -> None:
        self.tree.add_command(measure)
        self.tree.add_command(pick_model)
        self.tree.add_command(confirm)
        self.add_view(ConfirmView())
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every re-IDENTIFY; tests need not."""


@app_commands.command(description="Defers, reads the attachment and answers with a file")
@app_commands.describe(dataset="a file to measure", note="free text")
async def measure(interaction: discord.Interaction, dataset: discord.Attachment, note: str = "") -> None:
    await interaction.response.defer(thinking=True)
    data = await dataset.read()
    report = f"{dataset.filename}: {len(data)} bytes {note}".strip()
    await interaction.followup.send(report, file=discord.File(io.BytesIO(report.encode()), "report.txt"))


MODELS = ["illustrious-xl", "pony-xl", "sdxl-base", "flux-dev"]


async def model_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]


@app_commands.command(name="pick", description="Pick a base model")
@app_commands.autocomplete(model=model_choices)
async def pick_model(interaction: discord.Interaction, model: str, epochs: int = 10) -> None:
    await interaction.response.send_message(f"{model} for {epochs} epochs", ephemeral=True)


class ConfirmView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success, custom_id="lorabot:confirm")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        assert isinstance(interaction.client, EchoBot)
        interaction.client.clicks.append(interaction.user.name)
        await interaction.response.edit_message(content=f"Confirmed by {interaction.user.name}", view=None)


@app_commands.command(description="Asks for confirmation with a button")
async def confirm(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("Train kanachan for $0.42?", view=ConfirmView())


async def test_bot_logs_in_syncs_and_answers_a_slash_command_with_a_file(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    """Login, sync, /measure with an attachment → defer → followup carrying report.txt."""
    dataset = tmp_path / "kana.zip"
    dataset.write_bytes(b"PK" + b"\0" * 4094)
    async with run_bot(fake_discord, EchoBot()):
        assert {c.name for c in fake_discord.commands} == {"measure", "pick", "confirm"}
        interaction = await fake_discord.send_slash("measure", {"dataset": dataset, "note": "ok"})
        reply = await fake_discord.wait_for_reply(interaction)

    assert interaction.response is not None and interaction.response.type == 5
    assert interaction.response.delay_s < 3
    assert reply.content == "kana.zip: 4096 bytes ok"
    assert reply.file("report.txt").read_bytes() == b"kana.zip: 4096 bytes ok"
    assert [m.id for m in fake_discord.messages_in(fake_discord.channel)] == [reply.id]
    routes = [f"{r.method} {r.route}" for r in fake_discord.requests]
    assert routes[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert "PUT /applications/{app_id}/commands" in routes


async def test_button_click_round_trip_edits_the_message(fake_discord: FakeDiscord) -> None:
    """/confirm posts a button; bob clicks it; the bot's edit_message replaces content and removes the view."""
    bob = fake_discord.add_user("bob", roles=["trainers"])
    async with run_bot(fake_discord, EchoBot()) as bot:
        asked = await fake_discord.send_slash("confirm", {})
        prompt = await fake_discord.wait_for_reply(asked)
        assert prompt.custom_ids() == ["lorabot:confirm"]
        click = await fake_discord.click(prompt, "lorabot:confirm", user=bob)
        await fake_discord.wait_for_response(click)

    assert click.response is not None and click.response.type == 7
    assert bot.clicks == ["bob"]
    assert prompt.content == "Confirmed by bob"
    assert prompt.components == []


async def test_autocomplete_returns_the_bots_choices(fake_discord: FakeDiscord) -> None:
    async with run_bot(fake_discord, EchoBot()):
        choices = await fake_discord.autocomplete("pick", {"model": "xl"}, focused="model")
        done = await fake_discord.send_slash("pick", {"model": "pony-xl", "epochs": 6})
        reply = await fake_discord.wait_for_reply(done)

    assert [c["value"] for c in choices] == ["illustrious-xl", "pony-xl", "sdxl-base"]
    assert reply.content == "pony-xl for 6 epochs" and reply.ephemeral


async def test_discord_py_waits_out_a_429_and_succeeds(fake_discord: FakeDiscord) -> None:
    """Two 429s (retry_after 0.05 s, Via + X-RateLimit-* headers) on the followup: discord.py retries."""
    fake_discord.rate_limit_next("POST /webhooks/*", times=2, retry_after=0.05)
    async with run_bot(fake_discord, EchoBot()):
        interaction = await fake_discord.send_slash("measure", {"dataset": ("a.bin", b"123")})
        reply = await fake_discord.wait_for_reply(interaction)

    assert reply.content == "a.bin: 3 bytes"
    statuses = [r.status for r in fake_discord.requests_to("POST /webhooks/*")]
    assert statuses == [429, 429, 200]


async def test_discord_py_waits_out_a_global_429_on_the_rest_api(fake_discord: FakeDiscord) -> None:
    fake_discord.rate_limit_next("PUT /applications/*/commands", times=1, retry_after=0.05, is_global=True)
    async with run_bot(fake_discord, EchoBot()):
        pass
    assert [r.status for r in fake_discord.requests_to("PUT /applications/*/commands")] == [429, 200]


async def test_discord_py_retries_a_5xx_and_succeeds(fake_discord: FakeDiscord) -> None:
    """discord.py sleeps 1 s after a 500/502/504 and retries."""
    fake_discord.fail_next("PUT /applications/*/commands", status=502, times=1)
    started = time.monotonic()
    async with run_bot(fake_discord, EchoBot()):
        pass
    assert [r.status for r in fake_discord.requests_to("PUT /applications/*/commands")] == [502, 200]
    assert time.monotonic() - started < 5


async def test_a_wrong_token_is_a_login_failure(fake_discord: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with run_bot(fake_discord, EchoBot(), token="not-the-token"):
            pass
    assert [(r.route, r.status) for r in fake_discord.requests] == [("/users/@me", 401)]


async def test_gateway_reconnect_resumes_without_losing_an_interaction(fake_discord: FakeDiscord) -> None:
    """After op 7 the client RESUMEs on the same session; a slash command sent meanwhile still arrives."""
    async with run_bot(fake_discord, EchoBot()):
        fake_discord.request_reconnect()
        interaction = await fake_discord.send_slash("pick", {"model": "flux-dev"})
        reply = await fake_discord.wait_for_reply(interaction)
        await fake_discord.wait_for(lambda: fake_discord.gateway.resumes == 1, what="a RESUME")

    assert reply.content == "flux-dev for 10 epochs"
    assert fake_discord.gateway.identifies == 1


async def test_invalid_session_makes_the_client_identify_again(fake_discord: FakeDiscord) -> None:
    async with run_bot(fake_discord, EchoBot()):
        fake_discord.invalidate_sessions()
        await fake_discord.wait_for(lambda: fake_discord.gateway.identifies == 2, what="a second IDENTIFY")
        interaction = await fake_discord.send_slash("pick", {"model": "sdxl-base", "epochs": 1})
        reply = await fake_discord.wait_for_reply(interaction)
    assert reply.content == "sdxl-base for 1 epochs"


async def test_bot_may_create_a_thread_and_post_in_it(fake_discord: FakeDiscord) -> None:
    """The thread-per-job flow: the bot replies, starts a thread on its message, and posts there."""
    async with run_bot(fake_discord, EchoBot()) as bot:
        channel = bot.get_channel(fake_discord.channel.id)
        assert isinstance(channel, discord.TextChannel)
        starter = await channel.send("Job j42 queued")
        thread = await starter.create_thread(name="j42 kanachan")
        await thread.send("epoch 1/10", file=discord.File(io.BytesIO(b"\x89PNG"), "sample-00.png"))
        fetched = await channel.fetch_message(starter.id)
        await asyncio.sleep(0)

    record = fake_discord.thread_named("j42 kanachan")
    assert record.id == starter.id and record.parent_id == fake_discord.channel.id
    assert fetched.thread is not None and fetched.thread.id == record.id
    [posted] = fake_discord.messages_in(record)
    assert posted.content == "epoch 1/10"
    assert posted.file("sample-00.png").read_bytes() == b"\x89PNG"


async def test_a_slow_acknowledgement_is_unknown_to_discord_py_and_a_failure(fake_discord: FakeDiscord) -> None:
    """A bot that blocks for 3.5 s before defer() gets 404 Unknown interaction (10062), and the fake records
    "The application did not respond" (the fixture would fail the test if it were not cleared here)."""
    bot = EchoBot()
    codes: list[int] = []

    @bot.tree.command(name="slow", description="Blocks before acknowledging")
    async def slow(interaction: discord.Interaction) -> None:
        fake_discord.clock.advance(3.5)  # as if the event loop had been blocked for 3.5 s
        try:
            await interaction.response.defer()
        except discord.NotFound as exc:
            codes.append(exc.code)

    async with run_bot(fake_discord, bot):
        await fake_discord.send_slash("slow")
        await fake_discord.wait_for(lambda: codes, what="the bot to hear about the late defer")

    assert codes == [10062]
    [failure] = fake_discord.clear_failures()
    assert failure.kind == "did_not_respond" and "/slow" in failure.message


async def test_nonce_makes_a_resent_notice_a_no_op(fake_discord: FakeDiscord) -> None:
    """discord.py sends enforce_nonce with a nonce: a retried send returns the first message, as on Discord."""
    async with run_bot(fake_discord, EchoBot()) as bot:
        channel = bot.get_channel(fake_discord.channel.id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("epoch 3/10 done", nonce="j42-epoch-3")
        again = await channel.send("epoch 3/10 done", nonce="j42-epoch-3")
        other = await channel.send("epoch 4/10 done", nonce="j42-epoch-4")

    assert first.id == again.id != other.id
    assert [m.content for m in fake_discord.messages_in(fake_discord.channel)] == ["epoch 3/10 done", "epoch 4/10 done"]


async def test_embed_images_may_point_at_uploaded_files(fake_discord: FakeDiscord) -> None:
    async with run_bot(fake_discord, EchoBot()) as bot:
        channel = bot.get_channel(fake_discord.channel.id)
        assert isinstance(channel, discord.TextChannel)
        gallery = discord.Embed(title="Epoch 1 — loss 0.091").set_image(url="attachment://grid.png")
        sent = await channel.send(embed=gallery, file=discord.File(io.BytesIO(b"\x89PNG grid"), "grid.png"))

    [message] = fake_discord.messages_in(fake_discord.channel)
    assert message.embeds[0]["image"]["url"] == message.file("grid.png").url
    assert sent.embeds[0].image.url == message.file("grid.png").url
