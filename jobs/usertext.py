"""User text inside our messages: one way to shorten and escape it, so a reason always fits beside it.

A refusal quotes what the user gave (a file name, an option key, a trigger). Quoted raw, a 60,000-character name
makes a message that Discord cuts before the reason, and control characters or bidi overrides garble the terminal
and the thread. Every message that carries user text goes through `shown`.
"""

from __future__ import annotations

import unicodedata

# Long enough for any sensible file name or option, short enough that several fit in one Discord message.
DEFAULT_LIMIT = 60
_ELLIPSIS = "…"
# Categories shown as escapes: controls (C0, C1, DEL), format characters (bidi overrides, zero-width joiners), lone
# surrogates, unassigned and private-use code points, and line or paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED_ESCAPES = {"'": "\\'", "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` quoted for a message: at most ``limit`` characters of it (its start and its end, which keeps a file
    name's extension), every invisible or control character written as an escape, and Discord's markdown and
    mentions disarmed by the quotes and escapes."""
    return "'" + "".join(_escape(ch) for ch in _shortened(str(value), limit)) + "'"


def drawn(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` for text drawn into an image (a contact sheet's labels): shortened like `shown`, invisible and
    control characters written as escapes, but no quotes or Discord escapes (markdown and mentions mean nothing in
    pixels, and a zero-width space would draw as a box)."""
    return "".join(_escape_invisible(ch) for ch in _shortened(str(value), limit))


def clipped(value: object, limit: int = 3 * DEFAULT_LIMIT) -> str:
    """Text that merely *contains* user text (a library's error message quoting a file name): shortened, with
    invisible and control characters escaped and mentions and code spans disarmed, but not quoted itself."""
    return "".join(_escape(ch) if ch not in "'\\" else ch for ch in _shortened(str(value), limit))


def _shortened(text: str, limit: int) -> str:
    """At most ``limit`` characters: the start and the end, with an ellipsis between."""
    if len(text) <= limit:
        return text
    head = (limit * 2) // 3
    tail = limit - head - 1
    return text[:head] + _ELLIPSIS + (text[-tail:] if tail > 0 else "")


def _escape(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if ch == "`":
        return "\\`"  # would open a Discord code span
    if ch == "@":
        return "@\u200b"  # an @everyone or <@id> in a name must not ping anyone
    if ch == "\u200b":
        return ch
    return _escape_invisible(ch)


def _escape_invisible(ch: str) -> str:
    if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
        code = ord(ch)
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch
