"""The fake Discord as a server: lifecycle and cleanliness, wire details discord.py depends on, the CDN,
fault knobs, the gateway protocol, and failures recorded for bots that misbehave."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.world.fake_discord import FakeDiscord, FakeDiscordFailures
from tests.world.fake_discord.raw_client import RawBot

pytestmark = pytest.mark.timeout(30)


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_stops_with_a_client_still_connected_and_leaves_nothing_behind() -> None:
    """Stop does not wait for a connected gateway client to leave; no task, port or temp folder remains.
    (How fast start + stop is belongs to a benchmark; the 10 s bound here only tells a hang from a stop.)"""
    tasks_before = asyncio.all_tasks()
    fake = await FakeDiscord().start()
    port, temp_dir = fake.port, fake.temp_dir
    assert temp_dir is not None and temp_dir.is_dir() and port_is_open(port)
    async with RawBot(fake) as raw:
        await raw.connect()
        await raw.request("POST", f"/channels/{fake.channel.id}/messages", json_body={}, files=[("a.txt", b"a")])
        async with asyncio.timeout(10):
            await fake.stop()

    assert not port_is_open(port)
    assert not temp_dir.exists()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - tasks_before == set()


async def test_json_answers_have_exactly_application_json(fake_discord: FakeDiscord) -> None:
    """discord.py parses JSON only for `application/json` without a charset."""
    async with RawBot(fake_discord) as raw:
        me = await raw.request("GET", "/users/@me")
        typing = await raw.request("POST", f"/channels/{fake_discord.channel.id}/typing")
    assert me.headers["Content-Type"] == "application/json"
    assert me.body["id"] == str(fake_discord.app_id) and me.body["bot"] is True
    assert typing.status == 204


async def test_rest_calls_need_the_bot_token(fake_discord: FakeDiscord) -> None:
    async with RawBot(fake_discord, token="wrong") as raw:
        response = await raw.request("GET", "/users/@me")
    assert (response.status, response.body) == (401, {"message": "401: Unauthorized", "code": 0})
    assert fake_discord.failures == []


async def test_unknown_routes_answer_404_and_fail_the_test(fake_discord: FakeDiscord) -> None:
    async with RawBot(fake_discord) as raw:
        response = await raw.request("GET", "/guilds/1/audit-logs")
        wrong_method = await raw.request("DELETE", "/users/@me")
    assert (response.status, response.body) == (404, {"message": "404: Not Found", "code": 0})
    assert wrong_method.status == 404
    with pytest.raises(FakeDiscordFailures, match="audit-logs") as raised:
        fake_discord.assert_no_failures()
    assert "DELETE /api/v10/users/@me" in str(raised.value)
    assert len(fake_discord.clear_failures()) == 2


async def test_every_request_is_recorded(fake_discord: FakeDiscord) -> None:
    async with RawBot(fake_discord) as raw:
        sent = time.perf_counter()
        await raw.request("POST", f"/channels/{fake_discord.channel.id}/messages", json_body={"content": "hi"})
        answered = time.perf_counter() - sent
    [record] = fake_discord.requests
    assert (record.method, record.route, record.status) == ("POST", "/channels/{channel_id}/messages", 200)
    assert record.body == {"content": "hi"} and 0 < record.duration_s <= answered


async def test_rate_limit_knob_answers_like_discord(fake_discord: FakeDiscord) -> None:
    """429 with JSON retry_after, a Via header and X-RateLimit-*; only `times` requests are hit."""
    fake_discord.rate_limit_next("POST /channels/*/messages", times=2, retry_after=1.5)
    path = f"/channels/{fake_discord.channel.id}/messages"
    async with RawBot(fake_discord) as raw:
        answers = [await raw.request("POST", path, json_body={"content": str(i)}) for i in range(3)]
        other_route = await raw.request("GET", "/users/@me")
    limited = answers[0]
    assert [a.status for a in answers] == [429, 429, 200] and other_route.status == 200
    assert limited.body == {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}
    assert limited.headers["Via"] and limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset-After"] == "1.500" and limited.headers["X-RateLimit-Scope"] == "user"
    assert [m.content for m in fake_discord.messages_in(fake_discord.channel)] == ["2"]


async def test_fail_knob_answers_5xx_n_times(fake_discord: FakeDiscord) -> None:
    fake_discord.fail_next("/users/@me", status=503, times=1)
    async with RawBot(fake_discord) as raw:
        first, second = await raw.request("GET", "/users/@me"), await raw.request("GET", "/users/@me")
    assert (first.status, first.body["code"], second.status) == (503, 0, 200)
    with pytest.raises(ValueError, match="5xx"):
        fake_discord.fail_next("/users/@me", status=404)


async def test_cdn_streams_a_200_mb_attachment_from_disk(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    """A 200 MB file is served with Content-Length, in chunks, without the fake holding it in memory."""
    big = tmp_path / "dataset.zip"
    with big.open("wb") as sink:
        sink.truncate(200 * 1024 * 1024)  # sparse: costs no disk and no time to create
    attachment = fake_discord.add_attachment(big)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = rss_before
    received = 0
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as response:
        assert response.headers["Content-Length"] == str(200 * 1024 * 1024)
        async for chunk in response.content.iter_chunked(1024 * 1024):
            received += len(chunk)
            peak = max(peak, process.memory_info().rss)
    assert received == 200 * 1024 * 1024
    assert attachment["size"] == received and attachment["filename"] == "dataset.zip"
    assert peak - rss_before < 64 * 1024 * 1024


async def test_cdn_serves_ranges_and_404s_unknown_files(fake_discord: FakeDiscord) -> None:
    attachment = fake_discord.add_attachment(b"0123456789", "digits.txt")
    async with aiohttp.ClientSession() as session:
        async with session.get(attachment["url"], headers={"Range": "bytes=2-4"}) as partial:
            assert (partial.status, await partial.read()) == (206, b"234")
        async with session.get(f"{fake_discord.origin}/attachments/1/2/nothing.txt") as missing:
            assert missing.status == 404
    assert attachment["content_type"] == "text/plain"


async def test_uploads_from_the_bot_are_kept_on_disk(fake_discord: FakeDiscord) -> None:
    payload = b"\x00" * (3 * 1024 * 1024)
    async with RawBot(fake_discord) as raw:
        path = f"/channels/{fake_discord.channel.id}/messages"
        sent = await raw.request("POST", path, json_body={"content": "lora"}, files=[("kana.safetensors", payload)])
    [message] = fake_discord.messages_in(fake_discord.channel)
    stored = message.file("kana.safetensors")
    assert fake_discord.temp_dir is not None and stored.path.parent == fake_discord.temp_dir
    assert stored.read_bytes() == payload and sent.body["attachments"][0]["size"] == len(payload)


async def test_gateway_heartbeats_are_acknowledged(fake_discord: FakeDiscord) -> None:
    async with RawBot(fake_discord) as raw:
        ready = await raw.connect()
        guild = await raw.next_dispatch("GUILD_CREATE")
        assert raw.ws is not None
        await raw.ws.send_json({"op": 1, "d": None})
        ack = await raw.ws.receive_json(timeout=5)
    assert ack["op"] == 11
    assert ready["user"]["id"] == str(fake_discord.app_id) and ready["resume_gateway_url"] == fake_discord.gateway_url
    assert guild["d"]["channels"][0]["name"] == "general"


async def test_gateway_closes_4004_on_a_wrong_token(fake_discord: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(fake_discord.gateway_url) as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}})
        closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4004


async def test_resume_replays_the_events_missed_while_away(fake_discord: FakeDiscord) -> None:
    async with RawBot(fake_discord) as raw, aiohttp.ClientSession() as session:
        ready = await raw.connect()
        guild_create = await raw.next_dispatch("GUILD_CREATE")
        assert raw.ws is not None
        await raw.ws.close(code=4000)  # not 1000: a normal close would end the session
        await fake_discord.wait_for(lambda: fake_discord.gateway.current() is None, what="the socket to close")
        fake_discord.world.create_thread(fake_discord.channel, {"name": "j7", "type": 11}, fake_discord.bot_user)
        async with session.ws_connect(fake_discord.gateway_url) as ws:
            await ws.receive_json(timeout=5)
            resume = {"token": fake_discord.bot_token, "session_id": ready["session_id"], "seq": guild_create["s"]}
            await ws.send_json({"op": 6, "d": resume})
            replayed = [(await ws.receive_json(timeout=5))["t"] for _ in range(3)]
    assert replayed == ["THREAD_CREATE", "MESSAGE_CREATE", "RESUMED"]


async def test_dm_slash_commands_carry_a_user_and_respect_contexts(fake_discord: FakeDiscord) -> None:
    guild_only = {"name": "train", "description": "t", "contexts": [0]}
    async with RawBot(fake_discord) as raw:
        await raw.sync([{"name": "cost", "description": "c", "contexts": [0, 1]}, guild_only])
        await raw.connect()
        await fake_discord.send_slash("cost", guild=False)
        dm = (await raw.next_dispatch("INTERACTION_CREATE"))["d"]
        assert (await raw.callback(dm, {"type": 4, "data": {"content": "$0.42 this month"}})).status == 200
        with pytest.raises(ValueError, match="not available in DMs"):
            await fake_discord.send_slash("train", guild=False)
    assert "member" not in dm and dm["user"]["username"] == "alice" and dm["channel"]["type"] == 1
    assert dm["context"] == 1 and "guild_id" not in dm


async def test_roles_and_permissions_reach_the_member_payload(fake_discord: FakeDiscord) -> None:
    admin = fake_discord.add_role("lorabot-admin", permissions=1 << 3)
    bob = fake_discord.add_user("bob", roles=["trainers"])
    async with RawBot(fake_discord) as raw:
        await raw.sync([{"name": "cancel", "description": "c", "default_member_permissions": str(1 << 3)}])
        await raw.connect()
        with pytest.raises(ValueError, match="lacks default_member_permissions"):
            await fake_discord.send_slash("cancel", user=bob)
        await fake_discord.send_slash("cancel", user=bob, roles=["trainers", admin])
        interaction = (await raw.next_dispatch("INTERACTION_CREATE"))["d"]
        assert (await raw.callback(interaction, {"type": 4, "data": {"content": "cancelled"}})).status == 200
    member = interaction["member"]
    trainers = fake_discord.guild.role_named("trainers")
    assert member["roles"] == [str(trainers.id), str(admin.id)]
    assert int(member["permissions"]) & (1 << 3)


async def test_select_menus_are_clicked_with_values(fake_discord: FakeDiscord) -> None:
    select = {"type": 3, "custom_id": "lorabot:epoch", "options": [{"label": "6", "value": "6"}]}
    button = {"type": 2, "style": 2, "label": "Off", "custom_id": "off", "disabled": True}
    async with RawBot(fake_discord) as raw:
        await raw.connect()
        path = f"/channels/{fake_discord.channel.id}/messages"
        body = {
            "content": "Pick an epoch",
            "components": [{"type": 1, "components": [select]}, {"type": 1, "components": [button]}],
        }
        sent = await raw.request("POST", path, json_body=body)
        message = fake_discord.world.messages[int(sent.body["id"])]
        with pytest.raises(ValueError, match="pass values"):
            await fake_discord.click(message, "lorabot:epoch")
        with pytest.raises(ValueError, match="disabled"):
            await fake_discord.click(message, "off")
        with pytest.raises(LookupError, match="no component 'cancel'"):
            await fake_discord.click(message, "cancel")
        await fake_discord.click(message, "lorabot:epoch", values=["6"])
        clicked = (await raw.next_dispatch("INTERACTION_CREATE"))["d"]
    assert clicked["type"] == 3 and clicked["message"]["id"] == sent.body["id"]
    assert clicked["data"] == {"custom_id": "lorabot:epoch", "component_type": 3, "values": ["6"]}
    fake_discord.clock.advance(3.1)  # nobody answers this click: Discord shows "did not respond"
    assert [f.kind for f in fake_discord.clear_failures()] == ["did_not_respond"]


async def test_settle_turns_an_interaction_left_unanswered_into_a_failure() -> None:
    """What the fixture does at teardown: wait out the 3 s deadline of pending interactions, then report."""
    async with FakeDiscord(ack_deadline_s=0.2) as fake, RawBot(fake) as raw:
        await raw.sync([{"name": "status", "description": "s"}])
        await raw.connect()
        await fake.send_slash("status")
        fake.assert_no_failures()  # still inside its deadline
        await fake.settle()
        with pytest.raises(FakeDiscordFailures, match="did not respond: /status"):
            fake.assert_no_failures()
