"""`lorabot run`: the process around the bot: settings, logging with secret redaction, migrations, then
`async with runtime` and the Discord client until a signal or a fatal error.

Only a Discord token is required: the database defaults to SQLite and the artifact store to the data folder, and
the start-up log says which settings real pods still need (without a RunPod key the sandbox runs, for $0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from jobs.config import ConfigError, Settings, install_secret_redaction, load_settings

log = logging.getLogger("lorabot")

EXIT_OK = 0
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorabot run", description="Start the lorabot Discord bot.")
    parser.add_argument("--config", help="a TOML settings file (environment variables win over it)")
    parser.add_argument(
        "--sandbox", action="store_true", help="use the $0 simulated cloud even when a RunPod key is set"
    )
    parser.add_argument(
        "--check", action="store_true", help="load the settings, migrate, print what is missing, and exit"
    )
    return parser


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_secret_redaction(settings)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)


def start_report(settings: Settings) -> list[str]:
    """What the operator should know at start-up: where data goes, which cloud, and what real pods still need."""
    local = f"local folder {settings.data_dir / 'artifacts'} served at /artifacts"
    lines = [
        f"database: {_database_label(settings)}",
        f"artifacts: {'bucket ' + settings.s3.bucket if settings.s3.bucket else local}",
        f"cloud: {settings.effective_cloud}",
    ]
    missing = settings.missing_for_real_pods()
    if missing:
        lines.append("real RunPod pods still need: " + "; ".join(missing))
        if settings.effective_cloud == "sandbox":
            lines.append("until then /train runs in the sandbox: simulated pods on this machine, $0")
    return lines


def _database_label(settings: Settings) -> str:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return "SQLite " + url.split("///", 1)[-1]
    return url.split("://", 1)[0] + " (DATABASE_URL)"  # never the URL itself: it may hold a password


def point_discord_py(settings: Settings) -> None:
    """Point discord.py at another Discord (the fake in tests, the sandbox); unset in production."""
    import discord.gateway
    import discord.http
    import yarl

    if settings.discord.api_base:
        discord.http.Route.BASE = settings.discord.api_base.rstrip("/")
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (or SIGINT/SIGTERM); returns the exit code."""
    from bot.app import build_runtime
    from bot.client import LorabotBot

    assert settings.discord.token is not None
    point_discord_py(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runtime = await build_runtime(settings)
    async with runtime:
        log.info("http server on %s:%s (health: /healthz)", settings.http_host, runtime.http_port)
        async with LorabotBot(runtime) as bot:
            client = asyncio.create_task(bot.start(settings.discord.token.get_secret_value()), name="discord")
            stopper = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait({client, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if client in done:
                client.result()  # a login failure or crash surfaces here
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await client
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv or []))
    from pathlib import Path

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"lorabot run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.sandbox:
        settings = settings.model_copy(update={"cloud": "sandbox"})
    if settings.discord.token is None and not args.check:
        lines = [
            "lorabot run: DISCORD_TOKEN is not set (the bot token from the Discord developer portal).",
            *(f"  {line}" for line in start_report(settings)),
            "  Nothing to set up to see it work: `lorabot demo` trains a LoRA on simulated pods for $0.",
        ]
        print("\n".join(lines), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings)
    from storage.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)
    for line in start_report(settings):
        log.info("%s", line)
    if args.check:
        return EXIT_OK
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
