"""Keeps secrets out of every line the agent logs or uploads.

Values of env vars whose names look secret are replaced, and so are presigned URL query strings (they are
credentials for as long as they live).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
URL_QUERY = re.compile(r"(\bhttps?://[^\s?#\"'<>]+)\?[^\s\"'<>]*")
MASK = "***"
# Shorter values would mask ordinary words such as "1" or "true" everywhere in a log.
MIN_SECRET_LENGTH = 4


class Redactor:
    def __init__(self, env: Mapping[str, str], extra: Iterable[str] = ()) -> None:
        values = {value for name, value in env.items() if SECRET_NAME.search(name)}
        values.update(extra)
        # Longest first, so a secret that contains another one is masked whole.
        self._secrets = sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)

    def add(self, secret: str) -> None:
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return URL_QUERY.sub(lambda m: f"{m.group(1)}?{MASK}", text)
