"""`lorabot demo`: one complete job through the sandbox cloud, with no credentials and no network, for $0.

    lorabot demo [--data-dir ./data] [--epochs 3] [--time-scale 60]

Draws a small dataset (jobs/sandbox/demo_dataset.py), ingests and plans it with the default preset exactly as /train
would (3 epochs at 512 px instead of 10 at 1024 px, so it finishes in seconds), queues it, and runs the real
orchestrator against the sandbox cloud: a CPU pod and a GPU pod that are local processes running the real agent and
the stand-in sd-scripts, with the artifact store served by an aiohttp server on 127.0.0.1 (random port). The notices
the Discord thread would get are printed as they come, with a progress bar while training.

Everything it leaves is under `<data-dir>/demo/` (replaced by the next demo; never the bot's own database):
`lorabot.db` (the SQLite job store), `artifacts/` (the store), and `results/`: the final LoRA, every epoch's
checkpoint and samples, the contact sheets (`contact-sheet-1-of-1.png`: prompts by epochs), `cost.md` and `cost.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# Before anything imports the runpod SDK, which sets the root logger to INFO at import: alembic logs INFO lines when
# it is imported, and the demo's terminal output should be the job's notices, not library chatter.
import alembic.command  # noqa: F401
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.catalog import load_catalog
from jobs.config import load_settings
from jobs.contact_sheet import SheetJob, render_sheets
from jobs.dataset import DatasetError, ingest_zip, pack_dataset
from jobs.manifest import JobKeys
from jobs.orchestrator import Orchestrator
from jobs.planning import Plan, make_plan
from jobs.presets import load_presets
from jobs.prices import PriceProvider
from jobs.queue import JobPlan, submit
from jobs.rules import PlanRefused
from jobs.sandbox.cloud import SandboxRefused, SandboxRuntime, start_sandbox
from jobs.sandbox.demo_dataset import DEMO_CLASS, DEMO_IMAGES, DEMO_TRIGGER, write_demo_zip
from jobs.sandbox.demo_render import CostRow, cost_table, progress_bar, render_notice, sim_seconds, usd
from jobs.spec import UserOptions
from jobs.states import JobStatus
from storage.artifacts_local import LocalArtifactStore
from storage.db import make_engine, make_session_factory, migrate, session_scope
from storage.http import add_artifact_routes
from storage.models import CostItem, Job, Pod
from storage.queries import pending_notices
from storage.transitions import mark_notice_sent

EXIT_OK = 0
EXIT_FAILED = 1
DEMO_FOLDER = "demo"
MARKER = ".lorabot-demo"
DEMO_RESOLUTION = 512
DEMO_USER_ID = 0


class DemoError(Exception):
    """The demo could not run or its job did not succeed; str() says why."""


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("data")
    epochs: int = 3
    images: int = DEMO_IMAGES
    time_scale: float = 60.0
    timeout_s: float = 100.0
    tick_s: float = 0.2


@dataclass
class DemoResult:
    demo_dir: Path
    job_id: int
    status: JobStatus
    final_lora: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)
    contact_sheets: list[Path] = field(default_factory=list)
    cost_table: Path | None = None
    wall_seconds: float = 0.0
    sim_seconds: int = 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorabot demo",
        description="Train one small LoRA end to end on the sandbox cloud: no Discord, no RunPod, no credentials, $0.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="results go to DATA_DIR/demo/")
    parser.add_argument("--epochs", type=_whole(1, 10), default=3, help="epochs to train (1-10, default 3)")
    parser.add_argument("--images", type=_whole(1, 40), default=DEMO_IMAGES, help="images to draw (1-40)")
    parser.add_argument(
        "--time-scale",
        type=_whole(10, 1000),
        default=60,
        help="simulated seconds per real second (10-1000, default 60: an hour of pod time takes a minute)",
    )
    parser.add_argument("--timeout", type=_whole(10, 3600), default=100, help="give up after this many real seconds")
    return parser


def _whole(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    # Importing the runpod SDK sets the root logger to INFO; the demo's lines are the output, not library chatter.
    logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(
        data_dir=args.data_dir,
        epochs=args.epochs,
        images=args.images,
        time_scale=float(args.time_scale),
        timeout_s=float(args.timeout),
    )
    try:
        result = asyncio.run(run_demo(options, sys.stdout))
    except (DemoError, SandboxRefused) as exc:
        print(f"lorabot demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lorabot demo: interrupted; every sandbox pod was stopped", file=sys.stderr)
        return 130
    return EXIT_OK if result.status is JobStatus.SUCCEEDED else EXIT_FAILED


async def run_demo(options: DemoOptions, out: TextIO) -> DemoResult:
    """Run the whole demo; raises DemoError when the job cannot start or does not end in time."""
    started = time.monotonic()
    demo_dir = _fresh_demo_dir(options.data_dir / DEMO_FOLDER)
    # Only what the demo sets: the operator's own LORABOT_*/RUNPOD_* variables must not reach the sandbox.
    settings = load_settings(env={"LORABOT_CLOUD": "sandbox", "LORABOT_DATA_DIR": str(demo_dir)})
    db_url = f"sqlite:///{(demo_dir / 'lorabot.db').resolve()}"
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    store = LocalArtifactStore(
        demo_dir / "artifacts", base_url=f"http://127.0.0.1:{port}", secret=secrets.token_bytes(32)
    )
    app = web.Application()
    add_artifact_routes(app, store)
    runner = web.AppRunner(app, access_log=None)
    runtime: SandboxRuntime | None = None
    try:
        await runner.setup()
        await web.SockSite(runner, listener).start()
        runtime = start_sandbox(settings, store, time_scale=options.time_scale)
        say = _Printer(out)
        say.line(f"lorabot demo · {runtime.note}")
        say.line(f"artifact store served at http://127.0.0.1:{port} · results in {demo_dir}")
        plan, image_count = _plan(demo_dir, options, runtime.prices, say)
        job_id = _submit(demo_dir, plan, image_count, sessions, store, runtime)
        orchestrator = runtime.build_orchestrator(
            sessions=sessions, store=store, config=runtime.orchestrator_config(settings)
        )
        status = await _run_job(job_id, plan, orchestrator, sessions, store, runtime, options, say, started)
        result = DemoResult(demo_dir=demo_dir, job_id=job_id, status=status)
        result.sim_seconds = sim_seconds(runtime.emulator.clock.start, runtime.clock())
        if status is JobStatus.SUCCEEDED:
            _export(result, plan, sessions, store, runtime)
        else:
            say.line(_pod_logs(runtime))
        result.wall_seconds = time.monotonic() - started
        _summarise(result, say)
        return result
    finally:
        if runtime is not None:
            runtime.close()
        await runner.cleanup()
        engine.dispose()


# -- steps ---------------------------------------------------------------------------------------------------------


def _fresh_demo_dir(path: Path) -> Path:
    """An empty demo folder; a previous demo's is replaced, anything else is never touched."""
    if path.exists():
        if not (path / MARKER).is_file():
            raise DemoError(
                f"{path} exists and was not made by lorabot demo; choose another --data-dir or move it away"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `lorabot demo`; the next demo replaces this folder\n", encoding="utf-8")
    return path


def _plan(demo_dir: Path, options: DemoOptions, prices: PriceProvider, say: _Printer) -> tuple[Plan, int]:
    """The plan, and the number of images the ingest kept."""
    zip_path = write_demo_zip(demo_dir / "input" / f"{DEMO_TRIGGER}.zip", count=options.images)
    say.line(f"dataset: drew {options.images} images of shapes with captions → {zip_path}")
    try:
        dataset = ingest_zip(zip_path, demo_dir / "work" / "dataset", trigger=DEMO_TRIGGER, class_word=DEMO_CLASS)
        plan = make_plan(
            dataset,
            UserOptions(trigger=DEMO_TRIGGER, class_word=DEMO_CLASS, epochs=options.epochs, resolution=DEMO_RESOLUTION),
            presets=load_presets(),
            catalog=load_catalog(),
            prices=prices,
        )
    except DatasetError as exc:
        raise DemoError(f"the demo dataset was refused: {exc}") from None
    except PlanRefused as exc:
        raise DemoError("the demo plan was refused: " + "; ".join(exc.reasons)) from None
    say.line("")
    say.line(plan.dataset_report.rstrip())
    say.line("")
    say.line(
        f"plan: {plan.spec.preset} · {plan.model.name} · {plan.spec.epochs} epochs at {plan.spec.resolution} px "
        f"(the demo's choice for speed; the preset trains 10 at 1024 px) · {plan.steps.total} steps on "
        f"{plan.gpu.display_name}"
    )
    for notice in plan.notices:
        say.line("  " + notice.render())
    estimate = plan.estimate.cost("secure")
    say.line(
        f"estimate for real RunPod (Secure Cloud): {usd(estimate.total_micros)}; the sandbox downloads a tiny stand-in "
        "model instead of the 6.9 GB checkpoint, so its CPU stage is much shorter"
    )
    say.line("")
    return plan, dataset.report.image_count


def _submit(
    demo_dir: Path,
    plan: Plan,
    image_count: int,
    sessions: sessionmaker[Session],
    store: LocalArtifactStore,
    runtime: SandboxRuntime,
) -> int:
    packed = demo_dir / "work" / "dataset.zip"
    sha, size = pack_dataset(demo_dir / "work" / "dataset", packed)
    with session_scope(sessions) as s:
        job = submit(
            s,
            store,
            plan=plan,
            dataset_zip=packed,
            dataset_sha256=sha,
            dataset_size=size,
            image_count=image_count,
            report={},
            user_id=DEMO_USER_ID,
            name="lorabot demo",
            now=runtime.clock(),
        )
        # The catalog's Hugging Face URL is not reachable (nor needed) here: the sandbox serves a stand-in model.
        job.plan_json = runtime.rewrite_plan_model(JobPlan.from_json(job.plan_json)).to_json()
        s.flush()
        return job.id


async def _run_job(
    job_id: int,
    plan: Plan,
    orchestrator: Orchestrator,
    sessions: sessionmaker[Session],
    store: LocalArtifactStore,
    runtime: SandboxRuntime,
    options: DemoOptions,
    say: _Printer,
    started: float,
) -> JobStatus:
    """Tick like the bot's scheduler until the job is over and every notice is printed."""
    label = f"j{job_id}"
    status_key = JobKeys(label, plan.spec.output_name).status("train")
    say.line(f"[{label}] queued: {plan.steps.total} steps, {plan.spec.epochs} epochs")
    while True:
        report = await orchestrator.tick()
        for error in report.errors:
            say.line(f"[{label}] (retrying) {error}")
        printed_all = _print_notices(sessions, runtime, say)
        _show_progress(store.get_bytes(status_key), say)
        with session_scope(sessions) as s:
            job = s.get(Job, job_id)
            assert job is not None
            status = job.status
        if status.is_terminal() and printed_all:
            say.end_progress()
            return status
        if time.monotonic() - started > options.timeout_s:
            say.end_progress()
            await orchestrator.cancel(job_id, by="the demo's time limit")
            raise DemoError(
                f"the job did not finish within {options.timeout_s:.0f} s (it was {status.value}); "
                f"its pods were stopped.\n{_pod_logs(runtime)}"
            )
        await asyncio.sleep(options.tick_s)


def _print_notices(sessions: sessionmaker[Session], runtime: SandboxRuntime, say: _Printer) -> bool:
    """Print and mark sent every due notice (the outbox, as the Discord notifier drains it); True when none is left."""
    with session_scope(sessions) as s:
        notices = list(pending_notices(s, now=runtime.clock()))
        for notice in notices:
            say.line(render_notice(notice.kind, notice.payload_json or {}, job=f"j{notice.job_id}"))
            mark_notice_sent(s, notice.id, discord_message_id=None, now=runtime.clock())
        return not list(pending_notices(s, now=runtime.clock()))


def _show_progress(raw: bytes | None, say: _Printer) -> None:
    if raw is None:
        return
    try:
        status = json.loads(raw)
    except ValueError:
        return  # a status being rewritten: the next tick reads it whole
    progress = status.get("progress") if isinstance(status, dict) else None
    if not isinstance(progress, dict) or not progress.get("total_steps"):
        return
    step, total = int(progress.get("step") or 0), int(progress["total_steps"])
    say.progress(
        progress_bar(step, total, epoch=progress.get("epoch"), epochs=progress.get("total_epochs")), step, total
    )


def _export(
    result: DemoResult,
    plan: Plan,
    sessions: sessionmaker[Session],
    store: LocalArtifactStore,
    runtime: SandboxRuntime,
) -> None:
    """Copy the LoRA, checkpoints and samples out of the store under friendly names, and write the cost table."""
    results = result.demo_dir / "results"
    keys = JobKeys(f"j{result.job_id}", plan.spec.output_name)
    result.final_lora = results / f"{plan.spec.output_name}.safetensors"
    store.download(keys.final, result.final_lora)
    for epoch in range(1, plan.spec.epochs + 1):
        checkpoint = results / "epochs" / f"{plan.spec.output_name}-{epoch:06d}.safetensors"
        if store.exists(keys.checkpoint(epoch)):
            store.download(keys.checkpoint(epoch), checkpoint)
            result.checkpoints.append(checkpoint)
        for index in range(len(plan.spec.sample_prompts)):
            if store.exists(keys.sample(epoch, index)):
                sample = results / "samples" / f"epoch-{epoch:02d}-prompt-{index:02d}.png"
                store.download(keys.sample(epoch, index), sample)
                result.samples.append(sample)
    result.contact_sheets = _contact_sheets(result, plan, store, results)
    rows = _cost_rows(sessions, result.job_id)
    bill = runtime.emulator.total_cost_micros()
    result.cost_table = results / "cost.md"
    result.cost_table.write_text(
        f"# lorabot demo: cost of j{result.job_id}\n\n" + cost_table(rows, runpod_bill_micros=bill), encoding="utf-8"
    )
    (results / "cost.json").write_text(
        json.dumps(
            {
                "job": f"j{result.job_id}",
                "sandbox": True,
                "real_money_usd": 0,
                "items": [row.__dict__ for row in rows],
                "total_micros": sum(row.amount_micros for row in rows),
                "emulator_bill_micros": bill,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def _contact_sheets(result: DemoResult, plan: Plan, store: LocalArtifactStore, results: Path) -> list[Path]:
    """The sheets the job's thread would get (rows = sample prompts, columns = epochs), as files."""
    keys = JobKeys(f"j{result.job_id}", plan.spec.output_name)
    prompts = tuple(plan.spec.sample_prompts)
    epochs = tuple(e for e in range(1, plan.spec.epochs + 1) if store.exists(keys.sample(e, 0)))
    if not prompts or not epochs:
        return []
    job = SheetJob(
        title=f"j{result.job_id} · demo",
        prompts=prompts,
        planned_epochs=epochs,
        epochs=epochs,
        seed=plan.spec.seed,
        source_px=plan.spec.resolution,
    )
    paths = []
    for sheet in render_sheets(job, lambda epoch, row: store.get_bytes(keys.sample(epoch, row), 16 * 1024 * 1024)):
        path = results / sheet.filename
        path.write_bytes(sheet.data)
        paths.append(path)
    return paths


def _cost_rows(sessions: sessionmaker[Session], job_id: int) -> list[CostRow]:
    with session_scope(sessions) as s:
        items = s.execute(select(CostItem).where(CostItem.job_id == job_id).order_by(CostItem.id)).scalars().all()
        rows = []
        for item in items:
            pod = s.get(Pod, item.pod_id) if item.pod_id is not None else None
            what = item.kind.value if pod is None else f"{item.kind.value} ({pod.name}, {pod.gpu_type_id or 'CPU'})"
            rows.append(
                CostRow(
                    item=what,
                    seconds=sim_seconds(item.started_at, item.ended_at),
                    rate_micros_per_hour=item.rate_micros_per_hour,
                    amount_micros=item.amount_micros,
                )
            )
        return rows


def _summarise(result: DemoResult, say: _Printer) -> None:
    say.line("")
    say.line(
        f"demo {result.status.value}: {result.wall_seconds:.1f} s from drawing the dataset to the results "
        f"({result.sim_seconds / 60:.1f} simulated minutes of pod time)"
    )
    if result.final_lora is not None:
        say.line(f"  LoRA:        {result.final_lora}")
        say.line(f"  checkpoints: {len(result.checkpoints)} in {result.final_lora.parent / 'epochs'}")
        say.line(f"  samples:     {len(result.samples)} in {result.final_lora.parent / 'samples'}")
        for sheet in result.contact_sheets:
            say.line(f"  sheet:       {sheet}")
    if result.cost_table is not None:
        say.line(f"  cost table:  {result.cost_table}")
        say.line("")
        say.line(result.cost_table.read_text(encoding="utf-8").rstrip())
    say.line(f"  job store:   {result.demo_dir / 'lorabot.db'}")


def _pod_logs(runtime: SandboxRuntime, tail: int = 1500) -> str:
    """The end of every pod's log, to show why a demo job failed."""
    parts = []
    for pod in runtime.emulator.all_pods():
        parts.append(f"--- pod {pod.name} ({pod.state}) ---\n{runtime.emulator.pod_log(pod.id)[-tail:]}")
    return "\n".join(parts)


class _Printer:
    """Notice lines and one progress line: redrawn in place on a terminal, every 25% when piped to a file."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._bar: str | None = None
        self._last_quarter = -1

    def line(self, text: str) -> None:
        if self._tty and self._bar is not None:
            self._out.write("\r\033[K")
        self._out.write(text + "\n")
        if self._tty and self._bar is not None:
            self._out.write(self._bar)
        self._out.flush()

    def progress(self, bar: str, step: int, total: int) -> None:
        if bar == self._bar:
            return
        self._bar = bar
        if self._tty:
            self._out.write("\r\033[K" + bar)
            self._out.flush()
            return
        quarter = step * 4 // max(total, 1)
        if quarter > self._last_quarter:
            self._last_quarter = quarter
            self._out.write(bar + "\n")
            self._out.flush()

    def end_progress(self) -> None:
        if self._tty and self._bar is not None:
            self._out.write("\n")
            self._out.flush()
        self._bar = None
