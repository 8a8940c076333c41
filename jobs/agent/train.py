"""The train stage (GPU pod): wait for READY, check the GPU, run sd-scripts detached, ship what it makes.

The trainer is started in its own session (seed 000: a hang-up killed runs) with its output in a log on the
volume; the agent tails that log for progress and watches the output folder for complete epoch files. Uploads are
recorded in a ledger on the volume so a restarted agent (a new pod after an interruption) never sends one twice,
and training resumes from the newest complete `--save_state` folder.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from .artifacts import StableSizes, checkpoint_path, format_complete, latest_complete_state, sample_files
from .context import Context, Interrupted, StageFailed, run_logged
from .fsutil import fsync_dir, fsync_tree, sha256_file
from .ledger import Ledger
from .net import HttpFailure, Stopped
from .report import Reporter, log_tail
from .trainlog import TrainLog, classify_failure
from .venvcheck import interpreter_problem

# Real seconds between two looks at the trainer (scaled by the clock, bounded so tests stay fast and real
# pods do not spin).
MIN_TICK_S = 0.05
MAX_TICK_S = 1.0
# Real seconds the trainer gets between SIGTERM and SIGKILL: RunPod's grace period is ~5 s for everything.
TRAINER_GRACE_S = 2.0
PR_SET_PDEATHSIG = 1
# The recipe's `gpu_check` exits with this when torch imports but CUDA is not available (docs/CONTRACTS.md).
GPU_CHECK_NO_CUDA = 3
# The trainer's console width. sd-scripts logs through rich (library/utils.py setup_logging @48d368fa: a
# RichHandler installed when library.utils is imported, so --console_log_simple, read only later in train(),
# cannot cover every line), and rich wraps each record to the console width, 80 columns when the output is not a
# terminal: "resume training from local state: <path>" came out over four lines, and the failure classifier and
# the log tail read lines. rich takes the width from COLUMNS and pads every record to it (time, level, message,
# source file), so it is wide enough for a message of ~340 characters and no wider. tqdm's bar ignores it when
# its output is a file.
TRAINER_COLUMNS = "400"
# In the job folder: every upload of the finished job is confirmed, its LoRAs and states may go (or are gone).
UPLOADED_MARKER = "UPLOADED"


def _die_with_parent() -> None:
    """Runs in the trainer before exec: if the agent dies, so does the trainer (as it would with its container).

    It is a separate session, so a hang-up or a signal to the agent's process group does not reach it.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def sdscripts_env(ctx: Context) -> dict[str, str]:
    """The environment sd-scripts runs in on a GPU pod: the trainer, and /try's generation scripts."""
    env = ctx.child_env()
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = TRAINER_COLUMNS
    # bitsandbytes (0.49.1, the recipe's) runs `pip list | grep habana-torch-plugin` when imported, and pip then
    # asks pypi.org whether it is outdated: a network request on GPU time, on every trainer start, found by the
    # real-trainer tier's network guard. Without the version check `pip list` reads only the disk.
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # Nothing is fetched on GPU time: the CPU stage put the tokenizers on the volume (`--tokenizer_cache_dir`),
    # so the Hub is offline for the trainer and a missing file fails at once instead of downloading.
    env.update(HF_HOME=str(ctx.layout.hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def check_gpu(ctx: Context, rep: Reporter, log_path: Path, work: str) -> None:
    """The first step on a GPU pod (before `work`: training, or /try's serving), three distinct failures with their
    cause:
    `env_mismatch`: the venv's interpreter is missing here or another Python than the one that built it (or than
    the recipe records): another pod of the same image would fail the same way;
    `env_broken`: the recipe's check exits with anything but 0 or 3 (torch does not import: its last line says
    why): the cached environment must be rebuilt;
    `no_gpu`: the check exits 3 (torch imports, CUDA is not available): this pod's fault."""
    clock = ctx.clock
    started = clock.now()
    rep.step("gpu_check", state="running")
    rep.phase("checking_gpu")
    if not ctx.layout.env_complete.is_file():
        raise StageFailed("env_build", f"the environment {ctx.manifest.recipe_hash} is not complete on the volume")
    problem = interpreter_problem(ctx.layout.venv, ctx.manifest.env_python_version, ctx.child_env())
    if problem is not None:
        raise StageFailed("env_mismatch", f"{problem}; {work} was not started")
    with open(log_path, "ab") as log:
        log_offset = log.tell()
    code = run_logged(ctx.layout.expand_argv(ctx.manifest.gpu_check), log_path, ctx.stop, ctx.child_env())
    said = _last_line_since(log_path, log_offset)
    if code == GPU_CHECK_NO_CUDA:
        raise StageFailed(
            "no_gpu",
            "torch imports but does not see a CUDA GPU on this pod"
            + (f" ({said})" if said else "")
            + f", so {work} was not started",
        )
    if code != 0:
        raise StageFailed(
            "env_broken",
            f"the GPU check exited with code {code}: "
            + (said or "it printed nothing")
            + f"; the environment {ctx.manifest.recipe_hash} on the volume is broken and must be rebuilt",
        )
    if said:
        rep.log(f"GPU check: {said}")
    rep.step("gpu_check", state="done", seconds=round(clock.now() - started, 3))


def _last_line_since(log_path: Path, offset: int) -> str:
    """The last non-empty line the check wrote to the log (a traceback's last line is its exception)."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        text = log.read()[-8192:].decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class Train:
    def __init__(self, ctx: Context, rep: Reporter) -> None:
        self.ctx = ctx
        self.rep = rep
        self.m = ctx.manifest
        self.layout = ctx.layout
        self.log_path = self.layout.logs_dir / "train.log"
        self.ledger = Ledger(self.layout.ledger)
        self.sizes = StableSizes()
        self.tick_s = min(MAX_TICK_S, max(MIN_TICK_S, ctx.clock.real_seconds(self.m.status_interval_s) / 2))
        self.proc: subprocess.Popen[bytes] | None = None
        self.trainer_log: Path | None = None
        self.parser = TrainLog(self.m.epochs)
        for name in ("ready", "gpu_check", "training", "final_upload"):
            rep.step(name)
        self.refresh_epochs()

    # --- waiting and checking -------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        clock, ready = self.ctx.clock, self.layout.ready
        started = clock.now()
        self.rep.step("ready", state="running")
        if ready.is_file():
            self.rep.step("ready", state="skipped", cached=True, seconds=0.0)
            return
        self.rep.phase("waiting_for_ready")
        while not ready.is_file():
            waited = clock.now() - started
            if waited >= self.m.ready_timeout_s:
                raise StageFailed(
                    "ready_timeout",
                    f"the volume was not READY after {waited:.0f} s "
                    f"(limit {self.m.ready_timeout_s:.0f} s); did the CPU stage fail?",
                )
            self.rep.status["eta_seconds"] = None
            if self.rep.due():
                self.rep.publish()
            if self.ctx.stop.sleep(self.tick_s):
                raise Interrupted()
        self.rep.step("ready", state="done", seconds=round(clock.now() - started, 3))
        self.rep.log("READY found")

    def check_gpu(self) -> None:
        check_gpu(self.ctx, self.rep, self.log_path, "training")

    # --- the trainer ------------------------------------------------------------------------------------------
    def launch(self) -> None:
        layout, m = self.layout, self.m
        resume = latest_complete_state(layout.output_dir, m.output_name)
        argv = [*layout.expand_argv(m.launcher), str(layout.sd_scripts / m.script), *layout.expand_argv(m.args)]
        if resume is not None:
            epoch, folder, _step = resume
            # --initial_epoch makes sd-scripts start after the epoch named by the folder: the step count in
            # train_state.json is wrong after a first resume (global_step restarts at 0), a second resume from it
            # would train done epochs again.
            argv += ["--resume", str(folder), f"--initial_epoch={epoch + 1}"]
            self.rep.status["resumed_from"] = folder.name
            self.parser.resumed_epochs = epoch
            self.rep.log(f"resuming from {folder.name} (epoch {epoch} done)")
            self.note_lost_samples(epoch)
        attempt = len(list(layout.logs_dir.glob("trainer-*.log"))) + 1
        self.trainer_log = layout.logs_dir / f"trainer-{attempt}.log"
        layout.output_dir.mkdir(parents=True, exist_ok=True)
        env = sdscripts_env(self.ctx)
        self.rep.log(f"starting the trainer: {' '.join(argv)}")
        with open(self.trainer_log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=layout.sd_scripts,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        (layout.job_dir / "trainer.pid").write_text(str(self.proc.pid))
        self.rep.step("training", state="running")
        self.rep.timing("training_started_at")
        self.rep.phase("training")

    def note_lost_samples(self, resumed_epoch: int) -> None:
        """sd-scripts draws an epoch's samples after saving its checkpoint and state (train_network.py @48d368fa)
        and a resume starts after the state's epoch, so samples the lost pod did not draw (or left torn) for an
        epoch up to that one will never come: they are recorded as lost, and the thread says so instead of waiting.
        """
        out, m = self.layout.output_dir, self.m
        for epoch in range(1, resumed_epoch + 1):
            expected = len(m.uploads.get("samples", {}).get(str(epoch), []) or [])
            if not expected or self.ledger.has(f"samples_lost/{epoch}"):
                continue
            drawn = sample_files(out, m.output_name, epoch)
            lost = [
                index
                for index in range(expected)
                if not self.ledger.has(f"sample/{epoch}/{index}")
                and (index not in drawn or not format_complete(drawn[index]))
            ]
            if lost:
                self.ledger.record(f"samples_lost/{epoch}", {"indices": lost})
                self.rep.log(f"epoch {epoch}'s samples {lost} were never drawn (the pod stopped first): noted as lost")
        self.refresh_epochs()

    def stop_trainer(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=TRAINER_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    def monitor(self) -> int:
        assert self.proc is not None and self.trainer_log is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        last_output = self.ctx.clock.now()
        with open(self.trainer_log, "rb") as reader:
            while True:
                exit_code = self.proc.poll()
                chunk = reader.read()
                if chunk:
                    last_output = self.ctx.clock.now()
                elif exit_code is None and self.ctx.clock.now() - last_output > self.m.trainer_silence_s:
                    silent = self.ctx.clock.now() - last_output
                    self.rep.log(f"the trainer printed nothing for {silent:.0f} s: stopping it as hung")
                    self.stop_trainer()
                    raise StageFailed(
                        "hang",
                        f"sd-scripts printed nothing for {silent / 60:.0f} min and was stopped "
                        "(a hung data loader or a deadlock); the last saved epoch is kept",
                    )
                self.parser.feed(decoder.decode(chunk), now=self.ctx.clock.now())
                self.collect(settled=exit_code is not None)
                self.rep.status["progress"] = self.parser.snapshot()
                self.rep.status["eta_seconds"] = self.parser.progress.eta_seconds
                if exit_code is not None:
                    return exit_code
                if self.ctx.stop.requested:
                    raise Interrupted()
                if self.parser.progress.nan_seen:
                    self.rep.log("the loss is NaN: stopping the trainer, every further step would be wasted")
                    self.stop_trainer()
                    continue
                if self.rep.due():
                    self.rep.publish()
                self.ctx.stop.sleep(self.tick_s)

    # --- artifacts ------------------------------------------------------------------------------------------
    def wanted(self) -> list[tuple[str, int, Path, str]]:
        """(ledger key, epoch, file, upload URL) of every artifact the bot asked for that exists now."""
        m, out = self.m, self.layout.output_dir
        found: list[tuple[str, int, Path, str]] = []
        for epoch in range(1, m.epochs + 1):
            url = m.upload_url("checkpoints", str(epoch))
            if url:
                found.append((f"checkpoint/{epoch}", epoch, checkpoint_path(out, m.output_name, epoch, m.epochs), url))
            samples = sample_files(out, m.output_name, epoch)
            for index, path in sorted(samples.items()):
                url = m.upload_url("samples", str(epoch), str(index))
                if url:
                    found.append((f"sample/{epoch}/{index}", epoch, path, url))
        return found

    def upload(self, key: str, path: Path, url: str, epoch: int | None, quick: bool = False) -> bool:
        digest, size = sha256_file(path), path.stat().st_size
        try:
            self.ctx.http.put_file(url, path, attempts=2 if quick else None)
        except (HttpFailure, Stopped) as exc:
            # Never fatal: the file stays on the volume and the next poll (or the next agent) tries again.
            self.rep.log(f"upload of {key} failed, will retry: {exc}")
            return False
        entry: dict[str, Any] = {"sha256": digest, "size": size, "file": path.name}
        if epoch is not None and epoch in self.parser.progress.epoch_losses:
            entry["loss"] = self.parser.progress.epoch_losses[epoch]
        self.ledger.record(key, entry)
        self.rep.log(f"uploaded {key} ({size} bytes, sha256 {digest})")
        return True

    def collect(self, settled: bool) -> None:
        changed = False
        for key, epoch, path, url in self.wanted():
            if self.ctx.stop.requested:
                return
            if self.ledger.has(key) or not self.sizes.complete(path, settled):
                continue
            changed |= self.upload(key, path, url, epoch)
        if changed:
            self.refresh_epochs()
            self.rep.publish()

    def refresh_epochs(self) -> None:
        epochs = []
        last_complete = None
        for epoch in range(1, self.m.epochs + 1):
            checkpoint = self.ledger.get(f"checkpoint/{epoch}")
            samples = [
                {"index": int(key.rsplit("/", 1)[1]), "sha256": e["sha256"], "size": e["size"]}
                for key, e in sorted(self.ledger.entries.items())
                if key.startswith(f"sample/{epoch}/")
            ]
            lost = [int(i) for i in (self.ledger.get(f"samples_lost/{epoch}") or {}).get("indices", [])]
            if checkpoint is None and not samples:
                continue
            loss = (checkpoint or {}).get("loss")
            epochs.append(
                {
                    "epoch": epoch,
                    "loss": loss,
                    "checkpoint": None
                    if checkpoint is None
                    else {
                        "key_hint": f"checkpoints/{epoch}",
                        "sha256": checkpoint["sha256"],
                        "size": checkpoint["size"],
                    },
                    "samples": sorted(samples, key=lambda s: s["index"]),
                    "samples_lost": lost,
                }
            )
            expected = len(self.m.uploads.get("samples", {}).get(str(epoch), []) or [])
            has_checkpoint = checkpoint is not None or not self.m.upload_url("checkpoints", str(epoch))
            if has_checkpoint and len(samples) + len(lost) >= expected:
                last_complete = epoch
        self.rep.status["epochs"] = epochs
        self.rep.status["last_completed_epoch"] = last_complete
        final = self.ledger.get("final")
        self.rep.status["final"] = None if final is None else {"sha256": final["sha256"], "size": final["size"]}

    # --- endings ------------------------------------------------------------------------------------------
    def upload_logs(self, quick: bool = False) -> None:
        url = self.m.upload_url("log", "train")
        if url is None:
            return
        body = log_tail(self.log_path, self.ctx.redact, 64 * 1024)
        if self.trainer_log is not None:
            body += b"\n--- sd-scripts output ---\n" + log_tail(self.trainer_log, self.ctx.redact, 192 * 1024)
        try:
            self.ctx.http.put_bytes(url, body, attempts=2 if quick else None, timeout=2.0 if quick else 30.0)
        except (HttpFailure, Stopped) as exc:
            self.rep.log(f"could not upload the log tail: {exc}")

    def finish(self, exit_code: int) -> None:
        final = self.layout.output_dir / f"{self.m.output_name}.safetensors"
        self.rep.step("training", state="done" if exit_code == 0 else "failed")
        self.rep.timing("finished_at")
        if exit_code != 0 or self.parser.progress.nan_seen:
            kind, message = classify_failure(self.parser.tail, self.parser.progress.nan_seen, exit_code)
            self.rep.step("training", state="failed")
            self.rep.fail(kind, message)
            return
        if not self.sizes.complete(final, settled=True):
            self.rep.fail(
                "trainer_crash", f"sd-scripts exited normally but wrote no complete final LoRA ({final.name})"
            )
            return
        self.rep.phase("uploading")
        self.upload_final(final)

    def upload_final(self, final: Path) -> None:
        url = self.m.upload_url("final")
        self.rep.step("final_upload", state="running")
        if url and not self.ledger.has("final") and not self.upload("final", final, url, None):
            self.rep.step("final_upload", state="failed")
            self.rep.fail(
                "internal",
                "the final LoRA could not be uploaded; it is on the volume and the next "
                "train run uploads it without training again",
            )
            return
        self.rep.step("final_upload", state="done", cached=False)
        self.remove_uploaded_outputs()
        self.succeed()

    def succeed(self) -> None:
        self.refresh_epochs()
        self.rep.status["progress"] = self.parser.snapshot()
        self.rep.status["eta_seconds"] = 0.0
        self.rep.timing("finished_at")
        self.rep.phase("succeeded")

    def interrupt(self) -> None:
        """SIGTERM: stop sd-scripts, make its last complete state durable, say so, all inside the grace period."""
        self.rep.log(f"{self.ctx.stop.signal_name or 'stop'} received: stopping the trainer")
        self.stop_trainer()
        state = latest_complete_state(self.layout.output_dir, self.m.output_name)
        if state is not None:
            fsync_tree(state[1])
            self.rep.status["last_completed_epoch"] = state[0]
            self.rep.log(f"{state[1].name} is complete and synced; the next run resumes from it")
        self.rep.timing("finished_at")
        self.rep.phase("interrupted", publish=False)
        self.rep.publish(quick=True)
        self.upload_logs(quick=True)

    # --- the volume after a finished job ------------------------------------------------------------------
    def missing_uploads(self) -> list[str]:
        """Ledger keys of every file the bot asked for that is not confirmed in the bucket (a sample recorded as
        lost counts as settled: it will never exist)."""
        m, missing = self.m, []
        for epoch in range(1, m.epochs + 1):
            if m.upload_url("checkpoints", str(epoch)) and not self.ledger.has(f"checkpoint/{epoch}"):
                missing.append(f"checkpoint/{epoch}")
            lost = (self.ledger.get(f"samples_lost/{epoch}") or {}).get("indices", [])
            for index in range(len(m.uploads.get("samples", {}).get(str(epoch), []) or [])):
                key = f"sample/{epoch}/{index}"
                if m.upload_url("samples", str(epoch), str(index)) and not self.ledger.has(key) and index not in lost:
                    missing.append(key)
        if m.upload_url("final") and not self.ledger.has("final"):
            missing.append("final")
        return missing

    def remove_uploaded_outputs(self) -> None:
        """Free the volume of this job's LoRAs and states once every upload is confirmed (they are in the bucket).

        One volume per data center serves every job, and nothing else deletes a job's outputs (an SDXL job leaves
        GBs). Only after success: an interrupted or failed run keeps them, a resume needs its state. UPLOADED is
        written first, so an agent stopped half-way leaves a job that the next run finishes removing and reports
        as succeeded (finished_before) instead of training again without its files. Samples, logs, the ledger and
        the markers stay (small, and what a later look at the job reads)."""
        missing = self.missing_uploads()
        if missing:
            self.rep.log(f"keeping the outputs on the volume: not confirmed in the bucket: {', '.join(missing)}")
            return
        layout, name = self.layout, re.escape(self.m.output_name)
        uploaded = layout.job_dir / UPLOADED_MARKER
        if not uploaded.is_file():
            uploaded.write_text(json.dumps({"at": self.ctx.clock.iso()}))
            fsync_dir(layout.job_dir)
        heavy = re.compile(rf"^{name}(?:-\d{{6}})?(?:\.safetensors|-state)$")
        freed, removed = 0, []
        for path in sorted(layout.output_dir.iterdir()) if layout.output_dir.is_dir() else []:
            if not heavy.match(path.name) or path.is_symlink():
                continue
            if path.is_dir():
                freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
            else:
                freed += path.stat().st_size
                path.unlink()
            removed.append(path.name)
        if removed:
            fsync_dir(layout.output_dir)
            self.rep.log(f"every upload is confirmed: removed {len(removed)} outputs ({freed} bytes) from the volume")

    def finished_before(self) -> bool:
        """A run whose trainer already exited cleanly is not trained again; only missing uploads are sent."""
        final = self.layout.output_dir / f"{self.m.output_name}.safetensors"
        if not (self.layout.job_dir / "TRAINED").is_file():
            return False
        if (self.layout.job_dir / UPLOADED_MARKER).is_file():
            self.rep.log("this job was trained and every upload confirmed before: nothing to train or send")
            self.rep.step("training", state="skipped", cached=True)
            self.rep.step("final_upload", state="skipped", cached=True)
            self.remove_uploaded_outputs()  # what an agent stopped half-way through left
            self.succeed()
            return True
        if not self.sizes.complete(final, settled=True):
            return False
        self.rep.log("this job was trained before: uploading what is missing, not training again")
        self.rep.step("training", state="skipped", cached=True)
        self.collect(settled=True)
        self.rep.phase("uploading")
        self.upload_final(final)
        return True


def run_train(ctx: Context, rep: Reporter) -> str:
    """Run the stage; returns the terminal phase."""
    train = Train(ctx, rep)
    try:
        train.wait_ready()
        train.check_gpu()
        if not train.finished_before():
            train.launch()
            exit_code = train.monitor()
            if exit_code == 0 and not train.parser.progress.nan_seen:
                (ctx.layout.job_dir / "TRAINED").write_text(str(exit_code))
            train.finish(exit_code)
    except StageFailed as exc:
        rep.fail(exc.kind, exc.message)
    except (Interrupted, Stopped):
        train.interrupt()
    finally:
        train.stop_trainer()
    if rep.status["phase"] in ("failed", "succeeded"):
        train.upload_logs()
    return str(rep.status["phase"])
