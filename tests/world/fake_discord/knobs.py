"""Faults on demand: answer the next N requests of a route with 429 or a 5xx, the way Discord does."""

from __future__ import annotations

import fnmatch
import json
import math
import time
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Knob:
    pattern: str
    times: int
    status: int
    retry_after: float = 0.0
    is_global: bool = False
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        """`"POST /channels/*/messages"` matches method and path; a pattern starting with "/" any method."""
        target = f"{method} {path}" if " " in self.pattern else path
        return fnmatch.fnmatchcase(target, self.pattern)

    def response(self) -> web.Response:
        if self.status == 429:
            return self._rate_limited()
        body = {"message": f"{self.status}: Server Error", "code": 0}
        return web.Response(
            status=self.status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )

    def _rate_limited(self) -> web.Response:
        # discord.py treats a 429 without `Via` (or without a JSON body) as a Cloudflare ban and gives up.
        body = {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": self.is_global}
        headers = {
            "Content-Type": "application/json",
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
            "X-RateLimit-Bucket": "fake" + format(abs(hash(self.pattern)), "x"),
            "X-RateLimit-Scope": "global" if self.is_global else "user",
        }
        if self.is_global:
            headers["X-RateLimit-Global"] = "true"
        return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)


class Knobs:
    def __init__(self) -> None:
        self.pending: list[Knob] = []

    def add(self, knob: Knob) -> Knob:
        if knob.times < 1:
            raise ValueError(f"times must be at least 1, got {knob.times}")
        self.pending.append(knob)
        return knob

    def take(self, method: str, path: str) -> Knob | None:
        for knob in self.pending:
            if knob.fired < knob.times and knob.matches(method, path):
                knob.fired += 1
                return knob
        return None
