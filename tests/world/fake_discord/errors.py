"""Discord's error answers, in the exact JSON shapes Discord sends (and discord.py parses)."""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]


class FormErrors:
    """Collects field errors into Discord's nested `errors` tree.

    A path like ("embeds", 0, "title") becomes {"embeds": {"0": {"title": {"_errors": [...]}}}}; the empty path
    puts the error at the root, as Discord does for whole-body problems.
    """

    def __init__(self) -> None:
        self.tree: JsonDict = {}
        self.count = 0

    def add(self, path: tuple[str | int, ...], code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
        self.count += 1

    def extend(self, prefix: tuple[str | int, ...], other: FormErrors) -> None:
        for path, code, message in other.flat():
            self.add(prefix + path, code, message)

    def flat(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        out: list[tuple[tuple[str | int, ...], str, str]] = []

        def walk(node: JsonDict, path: tuple[str | int, ...]) -> None:
            for key, value in node.items():
                if key == "_errors":
                    out.extend((path, e["code"], e["message"]) for e in value)
                else:
                    walk(value, (*path, key))

        walk(self.tree, ())
        return out

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        if self:
            raise DiscordError.invalid_form_body(self)


class DiscordError(Exception):
    """An HTTP error answer; the server turns it into a JSON response with Discord's body shape."""

    def __init__(self, status: int, code: int, message: str, errors: JsonDict | None = None) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JsonDict:
        body: JsonDict = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    @classmethod
    def invalid_form_body(cls, errors: FormErrors) -> DiscordError:
        return cls(400, 50035, "Invalid Form Body", errors.tree)

    @classmethod
    def unauthorized(cls) -> DiscordError:
        return cls(401, 0, "401: Unauthorized")

    @classmethod
    def route_not_found(cls) -> DiscordError:
        return cls(404, 0, "404: Not Found")

    @classmethod
    def method_not_allowed(cls) -> DiscordError:
        return cls(405, 0, "405: Method Not Allowed")

    @classmethod
    def unknown(cls, what: str) -> DiscordError:
        codes = {
            "Channel": 10003,
            "Guild": 10004,
            "Message": 10008,
            "Role": 10011,
            "User": 10013,
            "Webhook": 10015,
            "Member": 10007,
            "interaction": 10062,
            "application command": 10063,
        }
        return cls(404, codes[what], f"Unknown {what}")

    @classmethod
    def too_large(cls) -> DiscordError:
        return cls(413, 40005, "Request entity too large")

    @classmethod
    def already_acknowledged(cls) -> DiscordError:
        return cls(400, 40060, "Interaction has already been acknowledged.")

    @classmethod
    def invalid_webhook_token(cls) -> DiscordError:
        return cls(401, 50027, "Invalid Webhook Token")

    @classmethod
    def empty_message(cls) -> DiscordError:
        return cls(400, 50006, "Cannot send an empty message")

    @classmethod
    def wrong_channel_type(cls) -> DiscordError:
        return cls(400, 50024, "Cannot execute action on this channel type")

    @classmethod
    def cannot_edit_others(cls) -> DiscordError:
        return cls(403, 50005, "Cannot edit a message authored by another user")

    @classmethod
    def thread_exists(cls) -> DiscordError:
        return cls(400, 160004, "A thread has already been created for this message")

    @classmethod
    def thread_locked(cls) -> DiscordError:
        return cls(400, 50083, "Thread is archived")
