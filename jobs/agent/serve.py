"""The serve stage (docs/CONTRACTS.md "Try requests"): answer /try requests with sd-scripts' generation scripts.

A TRY pod runs it over the job's volume (`LORABOT_STAGE=serve`), and a training pod with a test window runs it
after its train stage succeeded. It never exits on its own (RunPod would only start the container again): it polls
the requests document the bot rewrites, handles each request once, one at a time, and idles in between, with a
heartbeat status so the bot's silence checks keep working.

Per request: every epoch's LoRA is downloaded once and checked against its sha256 (kept by hash on the volume for
later requests), each run of the script is started like the trainer (the recipe's launcher, in the sd-scripts
folder, the Hub offline), its output files are matched to the request's cells and PUT to their URLs, and the
request's status is PUT after every cell. A `DONE` file per request on the volume means a restarted agent never
runs it again. The only network use is the manifest's and the requests' presigned URLs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import png_complete
from .context import Context, Interrupted, StageFailed, file_lock, run_logged
from .fsutil import atomic_write, fsync_dir, reset_dir, sha256_file
from .manifest import SAFE_NAME
from .net import HttpFailure, Stopped
from .report import Reporter
from .train import check_gpu, sdscripts_env

SHA256 = re.compile(r"^[0-9a-f]{64}$")
REQUEST_ID = re.compile(r"^[a-z0-9_-]{1,32}$")
CELL_NAME = re.compile(r"^e\d{6}-p\d{2}$")
# Real seconds between two looks at the stop flag and the heartbeat while idling (the poll itself is in sim time).
MAX_IDLE_SLICE_S = 1.0
# How much of a failed run's output the request's error quotes: its last line, as the script printed it.
ERROR_LINE_CHARS = 500
# The tail of each run's output copied into the stage log (the uploaded log shows what the script said).
RUN_TAIL_BYTES = 4096
REQUESTS_LIMIT = 16 << 20
# A run's time limit when the request names none: generous (the estimate is assumed, not measured), but a hung
# script must not hold the pod, and every later request, for good.
MIN_RUN_TIMEOUT_S = 900.0
RUN_TIMEOUT_FACTOR = 5.0


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Output:
    pattern: str
    epoch: int
    prompt: int

    @property
    def cell(self) -> str:
        return f"e{self.epoch:06d}-p{self.prompt:02d}"


@dataclass(frozen=True)
class Run:
    epoch: int
    args: list[str]
    files: dict[str, str]
    outputs: list[Output]


@dataclass(frozen=True)
class Lora:
    url: str
    sha256: str
    size: int | None


@dataclass(frozen=True)
class Request:
    id: str
    script: str
    loras: dict[int, Lora]
    runs: list[Run]
    cells: dict[str, str]
    status_url: str
    expected_s: float | None
    timeout_s: float  # per run: a run still going after this long (agent's clock) is stopped as hung


def parse_request(data: Any) -> Request:
    """One requests.json entry; ValueError names what is wrong (the bot's bug: the request fails as internal)."""
    if not isinstance(data, dict):
        raise ValueError("a request must be an object")
    rid = data.get("id")
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise ValueError(f"request id {rid!r} must be 1-32 of [a-z0-9_-]")
    script = data.get("script")
    if not isinstance(script, str) or not SAFE_NAME.match(script) or ".." in script:
        raise ValueError(f"request script {script!r} must be a plain file name")
    loras: dict[int, Lora] = {}
    for key, lora in (data.get("loras") or {}).items():
        if not str(key).isdigit() or not isinstance(lora, dict) or not isinstance(lora.get("url"), str):
            raise ValueError(f"request loras[{key!r}] must be an epoch with a url")
        sha = str(lora.get("sha256") or "").lower()
        if not SHA256.match(sha):
            raise ValueError(f"request loras[{key!r}].sha256 must be 64 hex digits")
        size = lora.get("size")
        loras[int(key)] = Lora(lora["url"], sha, size if isinstance(size, int) and not isinstance(size, bool) else None)
    runs: list[Run] = []
    for index, run in enumerate(data.get("runs") or []):
        if not isinstance(run, dict) or run.get("epoch") not in loras:
            raise ValueError(f"request runs[{index}] must name an epoch with a LoRA")
        args = run.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"request runs[{index}].args must be a list of strings")
        files = run.get("files") or {}
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and SAFE_NAME.match(k) and ".." not in k and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError(f"request runs[{index}].files must map plain file names to text")
        outputs = []
        for output in run.get("outputs") or []:
            pattern = output.get("file") if isinstance(output, dict) else None
            if not isinstance(pattern, str) or "/" in pattern or not pattern:
                raise ValueError(f"request runs[{index}].outputs need a file name or pattern")
            epoch, prompt = output.get("epoch"), output.get("prompt")
            if not isinstance(epoch, int) or not isinstance(prompt, int) or not (0 <= prompt < 100):
                raise ValueError(f"request runs[{index}].outputs need an epoch and a prompt index")
            outputs.append(Output(pattern, epoch, prompt))
        runs.append(Run(run["epoch"], list(args), dict(files), outputs))
    if not runs:
        raise ValueError("request has no runs")
    cells = data.get("cells")
    if not isinstance(cells, dict) or not all(isinstance(v, str) and CELL_NAME.match(k) for k, v in cells.items()):
        raise ValueError("request cells must map e<epoch>-p<prompt> names to PUT urls")
    wanted = {output.cell for run in runs for output in run.outputs}
    if wanted != set(cells):
        raise ValueError(f"request cells {sorted(cells)} do not match its outputs {sorted(wanted)}")
    status_url = data.get("status_url")
    if not isinstance(status_url, str):
        raise ValueError("request status_url must be a url")
    raw = data.get("expected_s")
    expected = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    timeout = data.get("timeout_s")
    if timeout is None:
        timeout = max(MIN_RUN_TIMEOUT_S, RUN_TIMEOUT_FACTOR * (expected or 0.0))
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("request timeout_s must be a positive number of seconds")
    return Request(rid, script, loras, runs, dict(cells), status_url, expected, float(timeout))


def last_error_line(text: str) -> str:
    """What a script said last when it failed: Python's traceback ends with the exception, argparse with its
    `error:` line, sd-scripts' logger with its message."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:ERROR_LINE_CHARS] if lines else ""


class Serve:
    def __init__(self, ctx: Context, rep: Reporter, boots: int) -> None:
        assert ctx.manifest.serve is not None
        self.ctx = ctx
        self.rep = rep
        self.spec = ctx.manifest.serve
        self.boots = boots
        self.layout = ctx.layout
        self.try_dir = self.layout.job_dir / "try"
        self.lora_dir = self.try_dir / "loras"
        self.log_path = self.layout.logs_dir / "serve.log"
        self.announced: set[str] = set()
        self.bad_entries: set[str] = set()
        self.last_poll_problem: str | None = None
        rep.status["serve"] = {"current": None, "done": [], "failed": [], "polled_at": None}
        for name in ("gpu_check", "serve"):
            rep.step(name)
        for rid, status in sorted(self.finished().items()):
            rep.status["serve"]["failed" if status.get("phase") == "failed" else "done"].append(rid)

    # --- before serving: a TRY pod checks what the job's volume should hold -------------------------------------
    def check_volume(self) -> None:
        m, layout = self.ctx.manifest, self.layout
        if not layout.env_complete.is_file():
            raise StageFailed(
                "env_missing",
                f"the environment {m.recipe_hash} is not on this volume (no COMPLETE marker): /try needs the job's"
                " environment, which the training built; nothing was generated",
            )
        for file in m.model_files:
            target = layout.models_dir / file.filename
            verified = target.with_name(f".{target.name}.verified")
            if not target.is_file() or not verified.is_file():
                raise StageFailed(
                    "model_missing",
                    f"the base model file {file.filename} is not on this volume (or was never checked): /try does not"
                    " download models on GPU time; nothing was generated",
                )

    # --- the loop ----------------------------------------------------------------------------------------------
    def loop(self) -> None:
        self.rep.step("serve", state="running")
        self.rep.phase("serving")
        clock = self.ctx.clock
        next_poll = clock.now()
        while True:
            if self.ctx.stop.requested:
                raise Interrupted()
            if clock.now() >= next_poll:
                for entry in self.poll():
                    self.handle(entry)
                next_poll = clock.now() + self.spec.poll_s
            if self.rep.due():
                self.rep.publish()
            wait = min(next_poll - clock.now(), self.ctx.manifest.status_interval_s)
            if self.ctx.stop.sleep(min(MAX_IDLE_SLICE_S, max(0.01, clock.real_seconds(wait)))):
                raise Interrupted()

    def poll(self) -> list[Any]:
        """The requests document's entries; [] when there is none yet or it cannot be read (said once)."""
        self.rep.status["serve"]["polled_at"] = self.ctx.clock.iso()
        try:
            body = self.ctx.http.get_bytes(self.spec.requests_url, limit=REQUESTS_LIMIT)
            data = json.loads(body)
            if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("requests"), list):
                raise ValueError("not a version 1 requests document")
        except HttpFailure as exc:
            problem = "no requests yet" if exc.status == 404 else f"could not read the requests: {exc}"
            self._poll_problem(problem)
            return []
        except (ValueError, UnicodeDecodeError) as exc:
            self._poll_problem(f"the requests document is unreadable: {exc}")
            return []
        self.last_poll_problem = None
        return list(data["requests"])

    def _poll_problem(self, problem: str) -> None:
        if problem != self.last_poll_problem:
            self.rep.log(problem)
            self.last_poll_problem = problem

    def finished(self) -> dict[str, dict[str, Any]]:
        """Requests this volume has finished (by any pod or boot): their final status, from `<tid>/DONE`."""
        done: dict[str, dict[str, Any]] = {}
        for marker in self.try_dir.glob("*/DONE"):
            try:
                done[marker.parent.name] = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return done

    def handle(self, entry: Any) -> None:
        rid = entry.get("id") if isinstance(entry, dict) else None
        done = self.finished()
        if isinstance(rid, str) and rid in done:
            if rid not in self.announced:
                # A restarted agent sends a finished request's status once more, in case its upload was lost.
                self.announced.add(rid)
                self._put_status(str(entry.get("status_url") or ""), done[rid])
            return
        try:
            request = parse_request(entry)
        except ValueError as exc:
            key = f"{rid!r}: {exc}"
            if key not in self.bad_entries:
                self.bad_entries.add(key)
                self.rep.log(f"request {key} cannot be run")
                if isinstance(rid, str) and REQUEST_ID.match(rid) and isinstance(entry.get("status_url"), str):
                    self._finish(rid, entry["status_url"], 0, 0, self.ctx.clock.now(), "internal", str(exc))
            return
        self.announced.add(request.id)
        self.run_request(request)

    # --- one request -----------------------------------------------------------------------------------------
    def run_request(self, request: Request) -> None:
        clock = self.ctx.clock
        started = clock.now()
        total = len(request.cells)
        done_cells: set[str] = set()
        self.rep.status["serve"]["current"] = request.id
        self.rep.log(
            f"request {request.id}: {total} images, {len(request.runs)} run(s) of {request.script}"
            + (f", expected {request.expected_s:.0f} s" if request.expected_s is not None else "")
        )
        self.rep.publish()
        self._put_status(request.status_url, self._status(request.id, "running", 0, total, started))
        try:
            paths = {epoch: self.lora(request.id, lora) for epoch, lora in sorted(request.loras.items())}
            for index, run in enumerate(request.runs):
                run_dir = self.try_dir / request.id / f"run-{index:02d}"
                produced = self.generate(request, index, run, run_dir, paths[run.epoch])
                for output in run.outputs:
                    self.upload_cell(request, output, produced[output.cell])
                    done_cells.add(output.cell)
                    self._put_status(
                        request.status_url, self._status(request.id, "running", len(done_cells), total, started)
                    )
        except RequestFailed as exc:
            self._finish(request.id, request.status_url, len(done_cells), total, started, exc.kind, exc.message)
        else:
            self._finish(request.id, request.status_url, len(done_cells), total, started, None, None)
        finally:
            self.rep.status["serve"]["current"] = None
            self.rep.upload_log(self.log_path)

    def lora(self, rid: str, lora: Lora) -> Path:
        """The LoRA by hash: downloaded and checked once per volume, reused by every later request."""
        target = self.lora_dir / f"{lora.sha256}.safetensors"
        with file_lock(self.lora_dir / ".lock"):
            if target.is_file():
                return target
            part = target.with_name(target.name + ".part")
            if part.exists():
                part.unlink()  # a torn download of an earlier boot: the URL may differ, start over
            self.rep.log(f"request {rid}: downloading LoRA {lora.sha256[:12]}")
            try:
                size = self.ctx.http.download(lora.url, part)
            except HttpFailure as exc:
                raise RequestFailed("lora_download", f"the LoRA could not be downloaded: {exc}") from None
            if lora.size is not None and size != lora.size:
                part.unlink()
                raise RequestFailed("lora_mismatch", f"the LoRA has {size} bytes, expected {lora.size}")
            digest = sha256_file(part)
            if digest != lora.sha256:
                part.unlink()
                raise RequestFailed(
                    "lora_mismatch", f"the LoRA's sha256 is {digest}, expected {lora.sha256}; nothing was generated"
                )
            os.replace(part, target)
            fsync_dir(target.parent)
        return target

    def generate(self, request: Request, index: int, run: Run, run_dir: Path, lora: Path) -> dict[str, Path]:
        """Run the script once; {cell: the file it wrote for it}."""
        layout = self.layout
        reset_dir(run_dir)

        def expand(text: str) -> str:
            return layout.expand(text.replace("{lora_path}", str(lora)).replace("{run_dir}", str(run_dir)))

        for name, text in run.files.items():
            (run_dir / name).write_text(expand(text), encoding="utf-8")
        script = layout.sd_scripts / request.script
        argv = [*layout.expand_argv(self.ctx.manifest.launcher), str(script), *[expand(a) for a in run.args]]
        run_log = run_dir.with_suffix(".log")
        cwd = self.tokenizer_view(run_dir)
        self.rep.log(f"request {request.id} run {index} (epoch {run.epoch}): {' '.join(argv)}")
        clock, started = self.ctx.clock, self.ctx.clock.now()

        def watch() -> None:
            self.beat()
            if clock.now() - started > request.timeout_s:
                raise RequestFailed(
                    "hang",
                    f"{request.script} (epoch {run.epoch}) was still running after {request.timeout_s:.0f} s and was"
                    " stopped",
                )

        code = run_logged(argv, run_log, self.ctx.stop, sdscripts_env(self.ctx), cwd=cwd, on_poll=watch)
        output = run_log.read_bytes() if run_log.is_file() else b""
        tail = output[-RUN_TAIL_BYTES:].decode("utf-8", "replace")
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- {request.script} output (request {request.id}, run {index}) ---\n{self.ctx.redact(tail)}\n")
        if code != 0:
            said = last_error_line(output[-16384:].decode("utf-8", "replace")) or "it printed nothing"
            raise RequestFailed(
                "generation", f"{request.script} exited with code {code} (epoch {run.epoch}): {self.ctx.redact(said)}"
            )
        out_dir = run_dir / "out"
        names = sorted(p.name for p in out_dir.iterdir() if p.is_file()) if out_dir.is_dir() else []
        produced: dict[str, Path] = {}
        for wanted in run.outputs:
            matches = fnmatch.filter(names, wanted.pattern)
            if len(matches) != 1:
                raise RequestFailed(
                    "outputs",
                    f"{request.script} (epoch {run.epoch}) wrote {len(matches)} files matching {wanted.pattern!r}"
                    f" for {wanted.cell}, expected one (it wrote: {', '.join(names) or 'nothing'})",
                )
            produced[wanted.cell] = out_dir / matches[0]
        return produced

    def tokenizer_view(self, run_dir: Path) -> Path:
        """The run's working folder: `<org>/<repo>` links to the tokenizers the CPU stage fetched.

        flux_minimal_inference.py (48d368fa) loads its CLIP-L and T5 tokenizers by Hub id with no
        --tokenizer_cache_dir, and the Hub is offline on GPU time; transformers' from_pretrained takes an id that
        names an existing folder (relative to the working folder) as that folder, so these links serve it from the
        volume. gen_img.py finds its tokenizers through --tokenizer_cache_dir and is not affected."""
        view = run_dir / "cwd"
        view.mkdir()
        for tokenizer in self.ctx.manifest.tokenizers:
            org, _, name = tokenizer.repo.partition("/")
            source = self.layout.tokenizers_dir / tokenizer.folder
            if not name or not source.is_dir() or not SAFE_NAME.match(org) or not SAFE_NAME.match(name):
                continue
            (view / org).mkdir(exist_ok=True)
            (view / org / name).symlink_to(source, target_is_directory=True)
        return view

    def upload_cell(self, request: Request, output: Output, path: Path) -> None:
        if not png_complete(path):
            raise RequestFailed("outputs", f"{path.name} for {output.cell} is not a complete PNG")
        try:
            self.ctx.http.put_file(request.cells[output.cell], path)
        except HttpFailure as exc:
            raise RequestFailed("upload", f"the image for {output.cell} could not be uploaded: {exc}") from None

    def beat(self) -> None:
        if self.rep.due():
            self.rep.publish()

    # --- request status --------------------------------------------------------------------------------------
    def _status(
        self,
        rid: str,
        phase: str,
        cells_done: int,
        cells: int,
        started: float,
        error: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "phase": phase,
            "cells_done": cells_done,
            "cells": cells,
            "seconds": round(self.ctx.clock.now() - started, 3),
            "boots": self.boots,
            "error": error,
        }

    def _finish(
        self,
        rid: str,
        status_url: str,
        cells_done: int,
        cells: int,
        started: float,
        kind: str | None,
        message: str | None,
    ) -> None:
        error = {"kind": kind, "message": self.ctx.redact(message or "")} if kind else None
        status = self._status(rid, "failed" if kind else "done", cells_done, cells, started, error)
        atomic_write(self.try_dir / rid / "DONE", json.dumps(status, sort_keys=True).encode())
        self.rep.status["serve"]["failed" if kind else "done"].append(rid)
        self.rep.status["serve"]["current"] = None
        self.rep.log(f"request {rid}: " + (f"failed ({kind}): {message}" if kind else f"{cells} images done"))
        # The stage's status first: whoever reads the request's final status finds the stage agreeing with it.
        self.rep.publish()
        self._put_status(status_url, status)

    def _put_status(self, url: str, status: dict[str, Any]) -> None:
        if not url:
            return
        try:
            self.ctx.http.put_bytes(url, json.dumps(status, sort_keys=True).encode())
        except HttpFailure as exc:
            self.rep.log(f"could not upload the status of request {status.get('id')}: {exc}")


def run_serve(ctx: Context, rep: Reporter, boots: int, *, after_train: bool) -> str:
    """Serve until SIGTERM; returns the terminal phase (`interrupted`, or `failed` when the pod cannot serve)."""
    serve = Serve(ctx, rep, boots)
    try:
        if after_train:
            # The same pod just trained on this GPU with this environment: nothing to check again.
            rep.step("gpu_check", state="skipped", cached=True, seconds=0.0)
        else:
            serve.check_volume()
            check_gpu(ctx, rep, serve.log_path, "serving /try")
        serve.loop()
    except StageFailed as exc:
        rep.fail(exc.kind, exc.message)
        rep.upload_log(serve.log_path)
    except (Interrupted, Stopped):
        rep.timing("finished_at")
        rep.phase("interrupted", publish=False)
        rep.publish(quick=True)
        rep.upload_log(serve.log_path, quick=True)
    return str(rep.status["phase"])
