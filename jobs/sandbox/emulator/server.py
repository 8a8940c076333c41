"""RunPod's GraphQL endpoint and REST v2 API (`rest.py`) over HTTP: an aiohttp app on 127.0.0.1 running in a
thread of its own. Both fronts share the key check, the injected faults and the request records.

A thread, so that synchronous clients (the runpod SDK uses `requests`) can call it from a test's or the
bot's event loop without blocking the very loop that would answer them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from jobs.sandbox.emulator.operations import execute
from jobs.sandbox.emulator.rest import PROBLEM_JSON, RestFront, problem
from jobs.sandbox.emulator.state import Account

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.02
FAULT_KINDS = (500, 502, 503, "timeout", "disconnect")


@dataclass(frozen=True)
class RequestRecord:
    """One API call as the emulator saw it (no query text or variables: they may carry secrets)."""

    sim_time: float
    operation: str
    http_status: int
    errors: tuple[str, ...]


class EmulatorServer:
    def __init__(self, account: Account, api_key: str, hang_seconds: float = 35.0) -> None:
        self.account = account
        self.api_key = api_key
        # A "timeout" fault holds the request this long (the SDK gives up after 30 s).
        self.hang_seconds = hang_seconds
        self.requests: list[RequestRecord] = []
        self.failures: list[str] = []
        # (fault, operationId or None for any call); an operation-bound fault waits for that REST operation.
        self._faults: list[tuple[int | str, str | None]] = []
        self._rate_limits: list[int] = []  # Retry-After seconds of the next rate-limited REST calls
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    # ----- knobs -----
    def fail_next(self, count: int = 1, status: int | str = 500, operation: str | None = None) -> None:
        if status not in FAULT_KINDS:
            raise ValueError(f"status must be one of {FAULT_KINDS}, got {status!r}")
        with self._lock:
            self._faults.extend([(status, operation)] * count)

    def rate_limit_next(self, count: int = 1, retry_after_s: int = 1) -> None:
        with self._lock:
            self._rate_limits.extend([retry_after_s] * count)

    def take_fault(self, operation: str | None = None) -> int | str | None:
        """The next fault for a call of `operation` (None: a GraphQL call, which only takes unbound faults)."""
        with self._lock:
            for index, (fault, bound) in enumerate(self._faults):
                if bound is None or bound == operation:
                    del self._faults[index]
                    return fault
            return None

    def take_rate_limit(self) -> int | None:
        with self._lock:
            return self._rate_limits.pop(0) if self._rate_limits else None

    # ----- lifecycle -----
    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # surfaced to start()'s caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="runpod-emulator", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if errors:
            raise RuntimeError("the RunPod emulator could not start") from errors[0]
        if not self.port:
            raise RuntimeError("the RunPod emulator did not start within 10 s")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    async def _serve(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/graphql", self._graphql)
        for method, path, handler in RestFront(self).routes():
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server's sockets
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._closing = asyncio.Event()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _shutdown(self) -> None:
        assert self._closing is not None and self._runner is not None
        self._closing.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._runner.cleanup()

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.account.tick()
            except Exception:  # a tick must never die quietly: record it and keep pods moving
                log.exception("emulator tick failed")
                self.failures.append("emulator tick raised an exception (see log)")
            await asyncio.sleep(TICK_INTERVAL_S)

    # ----- HTTP -----
    def record(self, operation: str, status: int, errors: list[str]) -> None:
        self.requests.append(RequestRecord(self.account.clock.now(), operation, status, tuple(errors)))

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        fault = self.take_fault()
        if fault is not None:
            return await self.inject(request, fault)
        if not self._authorized(request):
            self.record("?", 401, ["unauthorized"])
            return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            payload: Any = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            self.record("?", 400, ["body is not JSON"])
            return web.json_response(
                {"errors": [{"message": "POST body sent invalid JSON.", "extensions": {"code": "BAD_REQUEST"}}]},
                status=400,
            )
        if not isinstance(payload, dict):
            payload = {}
        try:
            # Runs inline: a request only changes records; processes start and stop in the ticker.
            outcome = execute(self.account, payload.get("query"), payload.get("variables"))
        except Exception:
            log.exception("emulator failed to execute a GraphQL request")
            self.failures.append("emulator raised while executing a request (see log)")
            self.record("?", 500, ["internal error"])
            return web.json_response(
                {
                    "errors": [
                        {
                            "message": "Something went wrong. Please try again later or contact support.",
                            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                        }
                    ]
                },
                status=500,
            )
        self.failures.extend(f"unsupported request: {problem}" for problem in outcome.unsupported)
        self.record(outcome.operation, outcome.status, outcome.errors)
        return web.json_response(outcome.body, status=outcome.status)

    def bearer_authorized(self, request: web.Request) -> bool:
        # REST v2 takes the key only as `Authorization: Bearer <key>`.
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[len("Bearer ") :] == self.api_key

    def _authorized(self, request: web.Request) -> bool:
        # The SDK 1.12 sends `Authorization: Bearer <key>`; older clients and RunPod's docs use `?api_key=`.
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[len("Bearer ") :] == self.api_key:
            return True
        return request.query.get("api_key") == self.api_key

    async def inject(
        self, request: web.Request, fault: int | str, *, rest: bool = False, operation: str = "?"
    ) -> web.StreamResponse:
        self.record(operation, fault if isinstance(fault, int) else 0, [f"injected fault {fault}"])
        if fault == "timeout":
            assert self._closing is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hang_seconds):
                    await self._closing.wait()
            return web.Response(status=504, text="upstream request timeout")
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault == 502:
            # What Cloudflare in front of RunPod answers: HTML, not JSON.
            return web.Response(
                status=502, content_type="text/html", text="<html><body><h1>502 Bad Gateway</h1></body></html>"
            )
        assert isinstance(fault, int)
        if rest:
            body = problem(fault, "Something went wrong. Please try again later or contact support.").body
            return web.json_response(body, status=fault, content_type=PROBLEM_JSON)
        return web.json_response(
            {
                "errors": [
                    {
                        "message": "Something went wrong. Please try again later or contact support.",
                        "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                    }
                ]
            },
            status=fault,
        )
