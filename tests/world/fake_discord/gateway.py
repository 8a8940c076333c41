"""The JSON websocket gateway: HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE, RESUME, and dispatches.

Frames are plain JSON text whatever `compress=` the client asks for (discord.py decompresses only binary
frames). Opcodes and close codes follow https://discord.com/developers/docs/topics/opcodes-and-status-codes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import JsonDict
from .state import World

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11
CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR, CLOSE_NOT_AUTHENTICATED = 4001, 4002, 4003
CLOSE_AUTH_FAILED, CLOSE_ALREADY_AUTHENTICATED = 4004, 4005
INTENT_GUILDS, INTENT_GUILD_MESSAGES, INTENT_DIRECT_MESSAGES = 1 << 0, 1 << 9, 1 << 12
MAX_REPLAY = 1000


class Connection:
    """One websocket plus its outbox; a single writer task sends frames in the order they were queued."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.outbox: asyncio.Queue[JsonDict] = asyncio.Queue()

    @property
    def open(self) -> bool:
        return not self.ws.closed

    def send(self, frame: JsonDict) -> None:
        self.outbox.put_nowait(frame)

    async def write_forever(self) -> None:
        while True:
            frame = await self.outbox.get()
            if self.ws.closed:
                return
            await self.ws.send_str(json.dumps(frame))


@dataclass
class Session:
    """A gateway session; it outlives its socket so that a RESUME can replay what was missed."""

    session_id: str
    intents: int
    seq: int = 0
    sent: list[JsonDict] = field(default_factory=list)
    conn: Connection | None = None
    identify: JsonDict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.conn is not None and self.conn.open

    def dispatch(self, event: str, data: JsonDict) -> None:
        self.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.sent.append(frame)
        del self.sent[:-MAX_REPLAY]
        if self.conn is not None:
            self.conn.send(frame)


class Gateway:
    def __init__(self, world: World, bot_token: str, *, heartbeat_interval_ms: int) -> None:
        self.world = world
        self.bot_token = bot_token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.url = ""
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        world.dispatch = self.dispatch

    # ------------------------------------------------------------ sessions

    def current(self) -> Session | None:
        """The newest live, identified session."""
        live = [s for s in self.sessions.values() if s.live]
        return live[-1] if live else None

    def newest(self) -> Session | None:
        """The newest session, live or waiting to RESUME: the one Discord sends interactions to."""
        return list(self.sessions.values())[-1] if self.sessions else None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.add(conn)
        writer = asyncio.get_running_loop().create_task(conn.write_forever())
        session: Session | None = None
        try:
            conn.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None})
            async for message in ws:
                frame: Any = None
                if message.type == WSMsgType.TEXT:
                    try:
                        frame = json.loads(message.data)
                    except ValueError:
                        frame = None
                if not isinstance(frame, dict):
                    await ws.close(code=CLOSE_DECODE_ERROR, message=b"Error while decoding payload.")
                    break
                session = await self._on_frame(conn, session, frame)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self.connections.discard(conn)
            if session is not None and session.conn is conn:
                session.conn = None
                if ws.close_code in (1000, 1001):
                    # A client that closes normally ends its session; only other closes may RESUME.
                    self.sessions.pop(session.session_id, None)
            self.world.changed()
        return ws

    async def _on_frame(self, conn: Connection, session: Session | None, frame: JsonDict) -> Session | None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self.heartbeats += 1
            conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None})
        elif op == IDENTIFY:
            if session is not None:
                await conn.ws.close(code=CLOSE_ALREADY_AUTHENTICATED, message=b"Already authenticated.")
                return session
            return await self._identify(conn, data if isinstance(data, dict) else {})
        elif op == RESUME:
            return await self._resume(conn, data if isinstance(data, dict) else {})
        elif op in (PRESENCE, VOICE, REQUEST_MEMBERS):
            if session is None:
                await conn.ws.close(code=CLOSE_NOT_AUTHENTICATED, message=b"Not authenticated.")
            elif op == REQUEST_MEMBERS:
                self._send_member_chunk(session, data if isinstance(data, dict) else {})
        else:
            await conn.ws.close(code=CLOSE_UNKNOWN_OPCODE, message=b"Unknown opcode.")
        return session

    async def _identify(self, conn: Connection, data: JsonDict) -> Session | None:
        if data.get("token") != self.bot_token:
            await conn.ws.close(code=CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return None
        self.identifies += 1
        session = Session(secrets.token_hex(16), int(data.get("intents") or 0), conn=conn, identify=data)
        self.sessions[session.session_id] = session
        world = self.world
        ready = {
            "v": 10,
            "user": world.bot.payload(),
            "guilds": [{"id": str(g), "unavailable": True} for g in world.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.url,
            "session_type": "normal",
            "application": {"id": str(world.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "geo_ordered_rtc_regions": [],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        session.dispatch("READY", ready)
        if session.intents & INTENT_GUILDS:
            for guild in world.guilds.values():
                session.dispatch("GUILD_CREATE", world.guild_payload(guild))
        world.changed()
        return session

    async def _resume(self, conn: Connection, data: JsonDict) -> Session | None:
        if data.get("token") != self.bot_token:
            await conn.ws.close(code=CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return None
        session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            conn.send({"op": INVALID_SESSION, "d": False, "s": None})
            return None
        self.resumes += 1
        if session.conn is not None and session.conn.open:
            await session.conn.ws.close(code=4000, message=b"Session resumed elsewhere.")
        session.conn = conn
        after = int(data.get("seq") or 0)
        for frame in [f for f in session.sent if f["s"] > after]:
            conn.send(frame)
        session.dispatch("RESUMED", {})
        self.world.changed()
        return session

    def _send_member_chunk(self, session: Session, data: JsonDict) -> None:
        guild = self.world.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        members = [guild.member_payload(self.world.users[uid]) for uid in guild.members]
        chunk: JsonDict = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------ sending

    def dispatch(self, event: str, data: JsonDict, guild_id: int | None) -> None:
        """Fan a world event out to every session whose intents ask for it; a disconnected but resumable
        session keeps it for the replay on RESUME."""
        needed = INTENT_GUILDS
        if event.startswith("MESSAGE_"):
            needed = INTENT_GUILD_MESSAGES if guild_id is not None else INTENT_DIRECT_MESSAGES
        for session in list(self.sessions.values()):
            if session.intents & needed:
                session.dispatch(event, data)

    def send_interaction(self, payload: JsonDict) -> None:
        session = self.newest()
        if session is None:
            raise RuntimeError("no bot is connected to the fake gateway: start the bot before sending interactions")
        session.dispatch("INTERACTION_CREATE", payload)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client must reconnect and RESUME."""
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.send({"op": RECONNECT, "d": None, "s": None})

    def invalidate_sessions(self) -> None:
        """Send op 9 INVALID_SESSION (not resumable) and forget every session: the client must IDENTIFY again."""
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.send({"op": INVALID_SESSION, "d": False, "s": None})
        self.sessions.clear()

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close(code=1001, message=b"Going away.")
