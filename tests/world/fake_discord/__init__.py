"""A strict fake Discord (REST + gateway + CDN) for driving the real discord.py in tests. See driver.py."""

from .bot_runner import run_bot
from .driver import FakeDiscord, FakeDiscordFailures, patch_discord_py
from .errors import DiscordError, FormErrors
from .models import (
    CallbackRecord,
    ChannelRecord,
    CommandRecord,
    Failure,
    GuildRecord,
    InteractionRecord,
    MessageRecord,
    RequestRecord,
    RoleRecord,
    StoredFile,
    UserRecord,
)

__all__ = [
    "CallbackRecord",
    "ChannelRecord",
    "CommandRecord",
    "DiscordError",
    "Failure",
    "FakeDiscord",
    "FakeDiscordFailures",
    "FormErrors",
    "GuildRecord",
    "InteractionRecord",
    "MessageRecord",
    "RequestRecord",
    "RoleRecord",
    "StoredFile",
    "UserRecord",
    "patch_discord_py",
    "run_bot",
]
