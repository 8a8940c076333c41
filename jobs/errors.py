"""The one shape of a refusal the user reads: a stable `code` for programs and tests, str() for people."""

from __future__ import annotations


class UserFacingError(Exception):
    """Refused input or a failed fetch. The message names what was wrong and never carries a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message
