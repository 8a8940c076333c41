"""The `lorabot` command: `plan` a dataset zip without spending anything, `run` the bot, `demo` the sandbox, and the
operator's `doctor` (is the deployment ready?), `pods` (lorabot's pods at RunPod) and `reap` (end the orphans).

Imports stay light at module level (no discord): `lorabot plan` must start fast and work without Discord set up.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.planning import Plan
    from jobs.prices import PriceProvider

EXIT_OK = 0
EXIT_NOT_BUILT = 1
EXIT_REFUSED = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (like 1e-4)") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _extra(text: str) -> tuple[str, bool | int | float | str]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} must look like KEY=VALUE (e.g. noise_offset=0.05)")
    value: bool | int | float | str
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorabot", description="Train LoRAs on RunPod from Discord.")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="check a dataset zip and show the exact training command, time and cost")
    plan.add_argument(
        "dataset",
        help="the dataset zip (flat folder or {repeats}_{concept} folders), or an https link "
        "to one (Hugging Face, Google Drive, Dropbox or direct)",
    )
    plan.add_argument("--preset", help="training preset (default: the catalog's default, sdxl-character)")
    plan.add_argument("--base-model", help="base model id from the catalog (e.g. illustrious-xl-v0.1)")
    plan.add_argument("--trigger", help="the trigger word the LoRA learns")
    plan.add_argument("--class-word", help="the class the subject belongs to (e.g. 1girl, person)")
    plan.add_argument("--output-name", help="file name of the LoRA (default: the trigger)")
    plan.add_argument("--repeats", type=_positive_int, help="repeats per image (default: folder prefix or preset)")
    plan.add_argument("--epochs", type=_positive_int)
    plan.add_argument("--dim", type=_positive_int, help="network dim (rank)")
    plan.add_argument("--alpha", type=_positive_float, help="network alpha")
    plan.add_argument("--unet-lr", type=_positive_float)
    plan.add_argument("--te-lr", type=_positive_float, help="text-encoder learning rate (0 = U-Net only)")
    plan.add_argument("--resolution", type=_positive_int)
    plan.add_argument("--batch-size", type=_positive_int)
    plan.add_argument("--clip-skip", type=_positive_int)
    plan.add_argument("--sample-prompt", action="append", default=[], help="a sample prompt (repeatable)")
    plan.add_argument("--generate-captions", action="store_true", help="write 'TRIGGER, CLASS' where none exists")
    plan.add_argument(
        "--captions",
        choices=("keep", "auto", "off"),
        help="auto-captioning on the CPU pod: keep (your captions; tag images without one), auto (tag every image),"
        " off (no tagging: images without a caption train on the class tokens)",
    )
    plan.add_argument("--gpu", help="GPU (e.g. 4090, 3090, a6000); every GPU pod runs in RunPod's Secure Cloud")
    plan.add_argument(
        "--built-in-prices",
        action="store_true",
        help="price with lorabot's built-in table instead of asking RunPod (asked when RUNPOD_API_KEY is set)",
    )
    plan.add_argument("--warm", action="store_true", help="assume the volume cache is warm (env + model present)")
    plan.add_argument(
        "--extra",
        action="append",
        type=_extra,
        default=[],
        metavar="KEY=VALUE",
        help="an allow-listed sd-scripts option (e.g. noise_offset=0.05)",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    # Listed for --help only: main() hands everything after `run`/`demo` to the module untouched.
    sub.add_parser("run", help="start the bot")
    sub.add_parser("demo", help="run the sandbox demo (no Discord, no RunPod, $0)")

    doctor = sub.add_parser("doctor", help="check the RunPod key, volumes, GPU stock, artifact store and Discord token")
    pods = sub.add_parser("pods", help="list lorabot's pods at RunPod and whether a live job owns each")
    reap = sub.add_parser("reap", help="terminate lorabot's pods at RunPod that no live job owns")
    reap.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    volumes = sub.add_parser(
        "volumes", help="list the Network Volumes (one per data center), their cache and this month's cost"
    )
    volumes.add_argument(
        "action",
        nargs="?",
        choices=("prune",),
        help="prune: mark stale cache entries for deletion by the next CPU stage (never one a live job uses)",
    )
    volumes.add_argument("--yes", action="store_true", help="prune without asking (needed without a terminal)")
    for ops in (doctor, pods, reap, volumes):
        ops.add_argument("--config", help="a TOML settings file (environment variables win over it)")
    return parser


_DELEGATES = {"run": "bot.launcher", "demo": "jobs.sandbox.demo"}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(argv) if argv is not None else sys.argv[1:]
    if words and words[0] in _DELEGATES:
        return _delegate(_DELEGATES[words[0]], words[1:])
    args = build_parser().parse_args(words)
    if args.command in ("doctor", "pods", "reap", "volumes"):
        return _ops(args)
    return _stoppable(_plan, args)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt: asyncio and every `finally` treat it the same."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Terminated()


def _stoppable(command: Any, args: argparse.Namespace) -> int:
    """Run `command(args)` so that SIGTERM cleans up as SIGINT does, and neither prints a traceback.

    SIGTERM's default action ends the process on the spot: a link download's `.partial` file and the plan's temp
    folder stayed behind. Raised as an exception instead, it unwinds through the download's cleanup and the
    `TemporaryDirectory`. (Only the main thread may set signal handlers; tests calling `main` from a worker
    thread keep the default.)
    """
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        result: int = command(args)
        return result
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
        print(f"lorabot {args.command}: stopped by {signum.name}; nothing was kept", file=sys.stderr)
        return 128 + signum
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _ops(args: argparse.Namespace) -> int:
    """The operator's commands (bot/ops.py) on the settings `lorabot run` would use."""
    from bot import ops
    from jobs.config import ConfigError, load_settings

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"lorabot {args.command}: {exc}", file=sys.stderr)
        return ops.EXIT_REFUSED
    ops.setup_logging(settings)
    if args.command == "doctor":
        return ops.doctor_command(settings)
    if args.command == "pods":
        return ops.pods_command(settings)
    if args.command == "volumes":
        return ops.volumes_command(settings, prune=args.action == "prune", yes=args.yes)
    return ops.reap_command(settings, yes=args.yes)


def _delegate(module_name: str, rest: list[str]) -> int:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            print(f"lorabot: {module_name} is not built yet", file=sys.stderr)
            return EXIT_NOT_BUILT
        raise
    result = module.main(rest)
    return int(result or 0)


def _plan(args: argparse.Namespace) -> int:
    # Imported here so `lorabot run` does not pay for them, and a broken planner cannot break the bot's start.
    from jobs.catalog import load_catalog
    from jobs.dataset import DatasetError, ingest_zip
    from jobs.fetch.settings import looks_like_link
    from jobs.planning import make_plan
    from jobs.presets import load_presets
    from jobs.rules import PlanRefused
    from jobs.spec import UserOptions

    is_link = looks_like_link(args.dataset)
    if not is_link and not Path(args.dataset).is_file():
        print(f"lorabot plan: refused: {args.dataset} is not a file", file=sys.stderr)
        return EXIT_REFUSED
    options = UserOptions(
        preset=args.preset,
        base_model=args.base_model,
        output_name=args.output_name,
        trigger=args.trigger,
        class_word=args.class_word,
        epochs=args.epochs,
        repeats=args.repeats,
        network_dim=args.dim,
        network_alpha=args.alpha,
        unet_lr=args.unet_lr,
        te_lr=args.te_lr,
        resolution=args.resolution,
        batch_size=args.batch_size,
        clip_skip=args.clip_skip,
        sample_prompts=tuple(args.sample_prompt),
        gpu=args.gpu,
        extra_options=dict(args.extra),
        captions=args.captions,
    )
    prices = _prices(args.built_in_prices)
    # The ingest lives in a temp dir that is always removed: planning leaves nothing on disk.
    with tempfile.TemporaryDirectory(prefix="lorabot-plan-") as tmp:
        try:
            zip_path = _download(args.dataset, Path(tmp)) if is_link else Path(args.dataset)
            dataset = ingest_zip(
                zip_path,
                Path(tmp) / "dataset",
                trigger=args.trigger,
                class_word=args.class_word,
                generate_captions=args.generate_captions,
                # As /train: "keep" unless the old --generate-captions asks for 'TRIGGER, CLASS' files instead.
                captions=args.captions or (None if args.generate_captions else "keep"),
            )
            plan = make_plan(
                dataset,
                options,
                presets=load_presets(),
                catalog=load_catalog(),
                prices=prices,
                warm=args.warm,
            )
        except DatasetError as exc:
            print(f"lorabot plan: refused: dataset: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except _LinkRefused as exc:
            print(f"lorabot plan: refused: dataset link: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except PlanRefused as exc:
            for notice in exc.notices:
                print(notice.render(), file=sys.stderr)
            print("lorabot plan: refused:", file=sys.stderr)
            for reason in exc.reasons:
                print(f"  - {reason}", file=sys.stderr)
            return EXIT_REFUSED
    if args.json:
        print(json.dumps(_plan_json(plan), indent=2))
    else:
        print(plan.render_text(), end="")
    return EXIT_OK


class _LinkRefused(Exception):
    pass


def _download(url: str, tmp: Path) -> Path:
    """A dataset link through the same guard and caps as /train (settings from LORABOT_FETCH_*, HF_TOKEN)."""
    from jobs.config import ConfigError, load_settings
    from jobs.fetch import FetchError
    from jobs.fetch.settings import fetch_link_blocking

    try:
        # The bot's own settings (file and environment), so a bad LORABOT_FETCH_* value is named, not a traceback.
        settings = load_settings()
    except ConfigError as exc:
        raise _LinkRefused(f"the link cannot be fetched with these settings: {exc}") from None
    token = settings.tokens.hf_token
    print(f"lorabot plan: downloading {url.split('?')[0]} ...", file=sys.stderr)
    try:
        result = fetch_link_blocking(
            url,
            tmp / "link.zip",
            settings=settings.fetch,
            max_bytes=settings.limits.max_dataset_mb * 1024 * 1024,
            hf_token=token.get_secret_value() if token is not None else None,
        )
    except FetchError as exc:
        raise _LinkRefused(str(exc)) from None
    return result.path


def _prices(built_in: bool) -> PriceProvider:
    """RunPod's live prices when a key is set, read with the bot's own settings (RUNPOD_API_KEY, RUNPOD_API,
    RUNPOD_API_URL, the first of the data centers, LORABOT_CONFIG); else the built-in table, and the plan says
    which."""
    import asyncio

    from jobs.cloud import AsyncCloud, CloudApi
    from jobs.config import ConfigError, load_settings
    from jobs.prices import LivePriceProvider, PriceSource, StaticPriceProvider, built_in_table

    def table_only(reason: str | None) -> PriceProvider:
        return StaticPriceProvider(replace(built_in_table(), source=PriceSource(live=False, reason=reason)))

    if built_in:
        return table_only(None)
    try:
        runpod = load_settings().runpod
    except ConfigError as exc:
        return table_only(f"the configuration cannot be used: {str(exc).splitlines()[0]}")
    if runpod.api_key is None:
        return table_only("no RUNPOD_API_KEY set")
    key = runpod.api_key.get_secret_value()
    client: CloudApi
    if runpod.api == "graphql":
        from jobs.runpod_graphql import GraphqlClient

        client = GraphqlClient(key, runpod.api_url)
    else:
        from jobs.runpod_rest import RestClient

        client = RestClient(key, runpod.api_url)
    provider = LivePriceProvider(AsyncCloud(client), data_center_id=runpod.data_centers[0])

    async def ask() -> None:
        try:
            await provider.refresh()
        finally:
            await client.close()

    asyncio.run(ask())
    return provider


def _plan_json(plan: Plan) -> dict[str, Any]:
    estimate = plan.estimate
    return {
        "preset": plan.spec.preset,
        "base_model": plan.model.id,
        "family": plan.spec.family,
        "output_name": plan.spec.output_name,
        "notices": [{"level": n.level, "code": n.code, "text": n.text} for n in plan.notices],
        "script": plan.script,
        "args": list(plan.args),
        "files": plan.command.files,
        "steps": plan.steps.total,
        "gpu": plan.gpu.gpu_id,
        "durations_s": {
            "cpu_stage": estimate.durations.cpu_stage_s,
            "gpu_billed": estimate.durations.gpu_billed_s,
            "train": estimate.durations.train_s,
            "wall": estimate.durations.wall_s,
        },
        "volume_gb": estimate.volume_gb,
        "prices": {
            "source": estimate.prices_source.describe(),
            "live": estimate.prices_source.live,
            "age_s": estimate.prices_source.age_s if estimate.prices_source.live else None,
        },
        "costs_usd_micros": {
            cost.cloud: {
                "volume": cost.volume_micros,
                "cpu_pod": cost.cpu_micros,
                "gpu_pod": cost.gpu_micros,
                "total": cost.total_micros,
            }
            for cost in estimate.costs
        },
        "inference_notes": list(plan.inference_notes),
    }


if __name__ == "__main__":
    sys.exit(main())
