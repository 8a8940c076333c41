"""A bare HTTP + gateway client for poking the fake with payloads discord.py would never build."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp

from .driver import FakeDiscord
from .models import JsonDict

GUILDS_AND_MESSAGES = (1 << 0) | (1 << 9)


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def error_paths(self) -> set[str]:
        """Dotted paths of every `_errors` entry in a 50035 body, e.g. {"0.options.1.required"}."""
        paths: set[str] = set()

        def walk(node: Any, path: tuple[str, ...]) -> None:
            if not isinstance(node, dict):
                return
            for key, value in node.items():
                if key == "_errors":
                    paths.add(".".join(path))
                else:
                    walk(value, (*path, key))

        walk(self.body.get("errors", {}) if isinstance(self.body, dict) else {}, ())
        return paths

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.body!r}>"


class RawBot:
    """`async with RawBot(fake) as raw:` → `await raw.request("POST", "/channels/1/messages", json=...)`."""

    def __init__(self, fake: FakeDiscord, *, token: str | None = None) -> None:
        self.fake = fake
        self.token = token or fake.bot_token
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> RawBot:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        files: list[tuple[str, bytes]] | None = None,
        auth: bool = True,
    ) -> RawResponse:
        """JSON body, or multipart (`payload_json` + `files[n]`) when `files` is given, like discord.py sends."""
        assert self.session is not None
        headers = {"Authorization": f"Bot {self.token}"} if auth else {}
        data: Any = None
        if files is not None:
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("payload_json", json.dumps(json_body or {}), content_type="application/json")
            for index, (filename, content) in enumerate(files):
                form.add_field(f"files[{index}]", content, filename=filename, content_type="application/octet-stream")
            data = form
        elif json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body)
        async with self.session.request(method, self.fake.api_base + path, data=data, headers=headers) as resp:
            text = await resp.text()
            body = json.loads(text) if resp.headers.get("Content-Type") == "application/json" else text
            return RawResponse(resp.status, dict(resp.headers), body)

    async def connect(self, *, intents: int = GUILDS_AND_MESSAGES) -> JsonDict:
        """Open the gateway, IDENTIFY, and return the READY payload."""
        assert self.session is not None
        self.ws = await self.session.ws_connect(self.fake.gateway_url + "?v=10&encoding=json")
        hello = await self.ws.receive_json(timeout=5)
        assert hello["op"] == 10, hello
        await self.ws.send_json({"op": 2, "d": {"token": self.token, "intents": intents, "properties": {}}})
        return (await self.next_dispatch("READY"))["d"]

    async def next_dispatch(self, event: str, timeout: float = 5.0) -> JsonDict:
        assert self.ws is not None
        while True:
            frame = await self.ws.receive_json(timeout=timeout)
            if frame.get("t") == event:
                return dict(frame)

    async def sync(self, commands: list[JsonDict]) -> RawResponse:
        return await self.request("PUT", f"/applications/{self.fake.app_id}/commands", json_body=commands)

    async def callback(
        self, interaction: JsonDict, body: JsonDict, files: list[tuple[str, bytes]] | None = None
    ) -> RawResponse:
        path = f"/interactions/{interaction['id']}/{interaction['token']}/callback?with_response=1"
        return await self.request("POST", path, json_body=body, files=files, auth=False)

    async def followup(self, interaction: JsonDict, body: JsonDict) -> RawResponse:
        path = f"/webhooks/{self.fake.app_id}/{interaction['token']}?wait=1"
        return await self.request("POST", path, json_body=body, auth=False)
