"""The upload ledger on the volume: what is already in the bucket, so a restarted agent never uploads it twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .fsutil import atomic_write


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self.entries = loaded
            except ValueError:
                self.entries = {}  # a torn ledger only costs re-uploads, never a wrong skip

    def has(self, key: str) -> bool:
        return key in self.entries

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry
        atomic_write(self.path, json.dumps(self.entries, sort_keys=True, indent=1).encode())

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)
