"""Entry point of the pod agent: `python3 agent.pyz prepare|train|serve` (or `python -m jobs.agent ...`).

Stdlib only and Python 3.10+: it runs in RunPod's stock images. Everything it needs comes from the environment
(docs/CONTRACTS.md "Pod environment") and the manifest behind LORABOT_MANIFEST_URL.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    # Run as a plain script (not as a package): make the package importable the same way the zipapp does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "agent"

from .boots import count_boot, crash_note, finished_here, idle
from .clock import Clock
from .context import Context
from .lifecycle import StopFlag
from .manifest import Layout, ManifestError, parse_manifest
from .net import Http, HttpFailure, Stopped
from .prepare import run_prepare
from .redact import Redactor
from .report import Reporter
from .serve import run_serve
from .train import run_train

USAGE = "usage: python3 agent.pyz prepare|train|serve"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 143


def _fatal(message: str, redact: Redactor) -> int:
    sys.stderr.write(f"lorabot agent: {redact(message)}\n")
    return EXIT_USAGE


def _guarded(rep: Reporter, stage: str, action: Callable[[], object]) -> str:
    """Any bug in the agent still ends the stage with a status the bot can read."""
    try:
        return str(action())
    except Exception as exc:
        rep.log(traceback.format_exc())
        rep.fail("internal", f"the {stage} stage hit an agent error: {exc.__class__.__name__}: {exc}")
        return "failed"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    redact = Redactor(env)
    if len(args) != 1 or args[0] not in ("prepare", "train", "serve"):
        return _fatal(USAGE, redact)
    stage = args[0]
    stop = StopFlag()
    stop.install()
    try:
        clock = Clock.from_env(env)
    except ValueError as exc:
        return _fatal(str(exc), redact)
    manifest_url = env.get("LORABOT_MANIFEST_URL")
    if not manifest_url:
        return _fatal("LORABOT_MANIFEST_URL is not set: the agent cannot know its job", redact)
    http = Http(stop)
    try:
        manifest = parse_manifest(http.get_bytes(manifest_url))
    except (HttpFailure, Stopped) as exc:
        return _fatal(f"could not fetch the manifest: {exc}", redact)
    except ManifestError as exc:
        return _fatal(str(exc), redact)
    if manifest.model_token_env and env.get(manifest.model_token_env):
        redact.add(env[manifest.model_token_env])
    layout = Layout(Path(env.get("LORABOT_VOLUME", "/workspace")), manifest)
    ctx = Context(manifest, layout, clock, http, redact, stop, env, env.get("RUNPOD_POD_ID", "local"))
    # RunPod starts the container again whenever this process ends: count the starts, and never redo a stage
    # this pod already finished (docs/CONTRACTS.md "Status", `boots`).
    boots = count_boot(layout, stage, ctx.pod_id)
    stages = ["prepare", "train"] if stage == "train" and "prepare" in manifest.stages else [stage]
    restarted = crash_note(layout, stages, ctx.pod_id, boots)

    def reporter(name: str) -> Reporter:
        rep = Reporter(name, manifest, layout, clock, http, redact, ctx.stage_log(name), ctx.pod_id)
        rep.status["boots"] = boots
        rep.status["error"] = restarted
        return rep

    def serve(after_train: bool) -> int:
        """/try's serve stage (agent/serve.py): runs until SIGTERM, or fails when the pod cannot serve."""
        rep = reporter("serve")
        if after_train:
            rep.status["error"] = None  # the train stage's crash note is not the serve stage's
        phase = _guarded(rep, "serve", lambda: run_serve(ctx, rep, boots, after_train=after_train))
        return EXIT_INTERRUPTED if phase == "interrupted" else EXIT_FAILED

    if stage == "serve" and manifest.serve is None:
        return _fatal("the serve stage needs a manifest with a serve section", redact)
    finished = finished_here(layout, stage, ctx.pod_id)
    if finished is not None and stage == "train" and finished["phase"] == "succeeded" and manifest.serve is not None:
        # A restart of a test-window pod: training is done, the window is still open.
        reporter("train").log(f"boot {boots}: this pod already finished the train stage; serving /try")
        return serve(after_train=True)
    if finished is not None:
        rep = reporter(stage)
        rep.status.update({k: v for k, v in finished.items() if k not in ("seq", "boots")})
        rep.log(f"boot {boots}: this pod already finished the {stage} stage ({finished['phase']}); idling")
        rep.publish()  # the last status again, in case its upload was lost
        idle(stop)
        return EXIT_OK if finished["phase"] != "failed" else EXIT_FAILED
    if stage == "serve":
        return serve(after_train=False)

    if stage == "prepare" or "prepare" in manifest.stages:
        rep = reporter("prepare")
        phase = _guarded(rep, "prepare", lambda: "ready" if run_prepare(ctx, rep) else rep.status["phase"])
        if stage == "prepare" or phase != "ready":
            if stage == "train" and phase == "failed":
                train_rep = reporter("train")
                error = rep.status["error"] or {"kind": "internal", "message": "prepare failed"}
                train_rep.fail(error["kind"], f"prepare failed: {error['message']}")
            return {"ready": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(phase, EXIT_FAILED)
    rep = reporter("train")
    phase = _guarded(rep, "train", lambda: run_train(ctx, rep))
    if phase == "succeeded" and manifest.serve is not None:
        return serve(after_train=True)  # the test window: this warm pod answers /try instead of idling
    return {"succeeded": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(phase, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
