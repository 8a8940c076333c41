"""The prepare stage (CPU pod): build what the volume's cache lacks, then write READY for the GPU pod.

Every step checks its own cache first, so a second run (or a second job on the same volume) does no work twice.
Things other pods read (env, model, dataset, READY) only ever appear complete: built in place behind a COMPLETE
marker written last, or written under a temp name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from . import captions as cap
from .context import Context, Interrupted, StageFailed, file_lock, run_logged
from .fsutil import atomic_write, dataset_files, fsync_dir, reset_dir, sha256_file, write_if_changed
from .manifest import ModelFile, Tokenizer
from .net import HttpFailure, Stopped
from .prune import run_prune
from .report import Reporter
from .venvcheck import interpreter_problem

# Guesses for the ETA until the run has measured something better.
DEFAULT_ENV_STEP_S = 60.0
DEFAULT_BYTES_PER_S = 50e6
PHASE_OF_STEP = {
    "job": "starting",
    "env": "building_env",
    "model": "downloading_model",
    "dataset": "fetching_dataset",
    "captions": "captioning",
}
MAX_ZIP_ENTRIES = 100_000
# In `{data_dir}`: the sha256 of the dataset the view links to (sd-scripts globs images and captions, not this).
DATASET_VIEW_MARKER = ".lorabot-dataset"
# Inside each tokenizer folder: what was asked for and the sha256 of what arrived (from_pretrained ignores it).
TOKENIZER_MARKER = ".lorabot-tokenizer.json"


class Prepare:
    def __init__(self, ctx: Context, reporter: Reporter) -> None:
        self.ctx = ctx
        self.rep = reporter
        self.layout = ctx.layout
        self.m = ctx.manifest
        self.log_path = self.layout.logs_dir / "prepare.log"
        self.rate_bytes_per_s = DEFAULT_BYTES_PER_S
        self._env_step_started: float | None = None
        # The dataset the job trains on: the uploaded one, or the captioned one the `captions` step makes from it.
        self.data_sha256 = self.m.dataset_sha256
        for name in ("job", "env", "model", "dataset"):
            self.rep.step(name)
        if self.m.captions is not None:
            self.rep.step("captions")

    # --- ETA ------------------------------------------------------------------------------------------------
    def eta(self) -> float:
        total = 0.0
        for step in self.rep.status["steps"]:
            if step["state"] in ("done", "skipped"):
                continue
            if step["name"] == "env":
                remaining = self.m.env_steps[step.get("env_steps_done", 0) :]
                total += sum(DEFAULT_ENV_STEP_S if s.expected_s is None else s.expected_s for s in remaining)
                # The step under way has been running for a while: count only what is left of it.
                if remaining and self._env_step_started is not None:
                    total -= min(
                        self.ctx.clock.now() - self._env_step_started,
                        DEFAULT_ENV_STEP_S if remaining[0].expected_s is None else remaining[0].expected_s,
                    )
            elif step["name"] in ("model", "dataset"):
                left = max(0, (step["bytes_total"] or 0) - (step["bytes_done"] or 0))
                total += left / self.rate_bytes_per_s
            elif step["name"] == "captions" and self.m.captions is not None:
                total += self.m.captions.expected_s
        return round(total, 1)

    def _publish(self, force: bool = False) -> None:
        self.rep.status["eta_seconds"] = self.eta()
        if force or self.rep.due():
            self.rep.publish()

    def _start(self, name: str) -> float:
        self.rep.step(name, state="running")
        self.rep.status["phase"] = PHASE_OF_STEP[name]
        self._publish(force=True)
        return self.ctx.clock.now()

    def _done(self, name: str, started: float, cached: bool) -> None:
        self.rep.step(
            name, state="skipped" if cached else "done", cached=cached, seconds=round(self.ctx.clock.now() - started, 3)
        )
        self.rep.log(f"step {name}: {'cached, skipped' if cached else 'done'}")

    # --- the stage ------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.rep.step("model", bytes_total=sum(f.size or f.size_hint or 0 for f in self.m.model_files))
        self.rep.step("dataset", bytes_total=self.m.dataset_size or 0)
        self.job_files()
        self.env()
        if self.m.caption_only:
            # /caption: the tagger needs the environment and the dataset, not the base model (minutes of download).
            self.rep.step("model", state="skipped", cached=False)
            self.rep.log("step model: not needed, this job only captions")
        else:
            self.model()
        self.dataset()
        self.captions()
        self.link_and_ready()

    def job_files(self) -> None:
        started = self._start("job")
        layout = self.layout
        for folder in (layout.job_dir, layout.output_dir, layout.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        changed = False
        for name, text in self.m.files.items():
            changed |= write_if_changed(layout.job_dir / name, layout.expand(text).encode("utf-8"))
        self._done("job", started, cached=not changed and layout.ready.exists())

    def env(self) -> None:
        started = self._start("env")
        layout = self.layout
        with file_lock(layout.env_dir.with_name(layout.env_dir.name + ".lock")):
            if layout.env_complete.is_file():
                self._done("env", started, cached=True)
                return
            # A folder without COMPLETE is a build that died halfway: start it again from nothing.
            if layout.env_dir.exists():
                self.rep.log(f"removing an incomplete environment at {layout.env_dir}")
                shutil.rmtree(layout.env_dir)
            layout.env_dir.mkdir(parents=True)
            # Before the steps: they name these files (`pip install -c {env_dir}/constraints.txt`).
            for name, text in self.m.env_files.items():
                atomic_write(layout.env_dir / name, text.encode("utf-8"))
            for index, step in enumerate(self.m.env_steps):
                argv = layout.expand_argv(step.argv)
                self.rep.log(f"env step {step.name}: {' '.join(argv)}")
                cwd = Path(layout.expand(step.cwd)) if step.cwd else layout.env_dir
                self._env_step_started = self.ctx.clock.now()
                code = run_logged(
                    argv, self.log_path, self.ctx.stop, self.ctx.child_env(), cwd=cwd, on_poll=self._publish
                )
                self._env_step_started = None
                if code != 0:
                    raise StageFailed(
                        "env_build", f"environment step '{step.name}' exited with code {code}; see the prepare log"
                    )
                self.rep.step("env", env_steps_done=index + 1)
                self._publish()
            # The venv's interpreter must be the Python the recipe records before the volume calls it COMPLETE:
            # a GPU pod would find out only after it is billed.
            problem = None
            if layout.venv.is_dir():
                problem = interpreter_problem(layout.venv, self.m.env_python_version, self.ctx.child_env())
            if problem is not None:
                raise StageFailed("env_mismatch", f"{problem}; the environment is not marked complete")
            recipe = {"name": self.m.env_name, "hash": self.m.recipe_hash, "built_at": self.ctx.clock.iso()}
            atomic_write(layout.env_complete, json.dumps(recipe, sort_keys=True).encode())
        self._done("env", started, cached=False)

    def _download(self, step: str, url: str, part: Path, headers: dict[str, str], offset: int = 0) -> None:
        """`offset`: bytes of the step already done by earlier files (a step may fetch several files)."""
        clock = self.ctx.clock
        began, began_bytes = clock.now(), part.stat().st_size if part.exists() else 0

        def progress(done: int, total: int | None) -> None:
            elapsed = clock.now() - began
            if elapsed > 0 and done > began_bytes:
                self.rate_bytes_per_s = (done - began_bytes) / elapsed
            known_total = self.rep.step(step)["bytes_total"]
            self.rep.step(step, bytes_done=offset + done, bytes_total=max(known_total or 0, offset + (total or 0)))
            self._publish()

        self.ctx.http.download(url, part, headers=headers, on_progress=progress)

    def model(self) -> None:
        """Every model file (the checkpoint, and Flux's ae / clip_l / t5xxl), each verified and renamed atomically,
        then the tokenizers its script loads (the trainer runs with the Hub offline)."""
        started = self._start("model")
        fetched_any = False
        done_before = 0
        for file in self.m.model_files:
            fetched_any |= self._model_file(file, done_before)
            done_before += (self.layout.models_dir / file.filename).stat().st_size
        self.rep.step("model", bytes_done=done_before, bytes_total=done_before)
        for tokenizer in self.m.tokenizers:
            fetched_any |= self._tokenizer(tokenizer)
        self._done("model", started, cached=not fetched_any)

    def _tokenizer(self, tokenizer: Tokenizer) -> bool:
        """Fetch one repo's tokenizer files into the folder sd-scripts' `--tokenizer_cache_dir` names, unless the
        same files are there; True when fetched. The folder appears whole (renamed into place): sd-scripts loads any
        folder that exists and only asks the Hub for one that does not."""
        target = self.layout.tokenizers_dir / tokenizer.folder
        marker = target / TOKENIZER_MARKER
        wanted = json.dumps(
            {"repo": tokenizer.repo, "revision": tokenizer.revision, "files": sorted(f.name for f in tokenizer.files)},
            sort_keys=True,
        )
        with file_lock(target.with_name(f".{target.name}.lock")):
            if marker.is_file() and json.loads(marker.read_text()).get("wanted") == wanted:
                return False
            staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            reset_dir(staging)
            fetched = {}
            for file in tokenizer.files:
                try:
                    self.ctx.http.download(file.url, staging / file.name)
                except HttpFailure as exc:
                    (staging / file.name).unlink(missing_ok=True)
                    if exc.status == 404 and not file.required:
                        continue  # not every repo has every optional file (t5-v1_1-xxl has no tokenizer.json)
                    shutil.rmtree(staging)
                    raise StageFailed(
                        "model_download",
                        f"tokenizer {tokenizer.repo}: {file.name} could not be fetched ({exc}); sd-scripts loads it "
                        "on the GPU pod, where the Hub is offline, so the volume is not made READY without it",
                    ) from None
                fetched[file.name] = sha256_file(staging / file.name)
            atomic_write(staging / TOKENIZER_MARKER, json.dumps({"wanted": wanted, "sha256": fetched}).encode())
            if target.exists():
                shutil.rmtree(target)  # other files than this manifest wants, or an older agent's
            os.replace(staging, target)
            fsync_dir(target.parent)
        self.rep.log(f"tokenizer {tokenizer.repo}: {', '.join(sorted(fetched))}")
        return True

    def _model_file(self, file: ModelFile, done_before: int) -> bool:
        """Download one model file unless a verified copy is on the volume; True when it was downloaded."""
        target = self.layout.models_dir / file.filename
        verified = target.with_name(f".{target.name}.verified")
        expected = json.dumps({"sha256": file.sha256, "size": file.size}, sort_keys=True)
        with file_lock(target.with_name(f".{target.name}.lock")):
            if target.is_file() and verified.is_file() and verified.read_text() == expected:
                return False
            headers = {}
            if file.token_env:
                token = self.ctx.env.get(file.token_env)
                if token:
                    self.ctx.redact.add(token)
                    headers["Authorization"] = f"Bearer {token}"
                else:
                    self.rep.log(f"{file.token_env} is not set: downloading {file.filename} without a token")
            part = target.with_name(target.name + ".part")
            try:
                self._download("model", file.url, part, headers, offset=done_before)
            except HttpFailure as exc:
                hint = " (is the token set and allowed to read this model?)" if exc.status in (401, 403) else ""
                raise StageFailed("model_download", f"{file.filename} download failed: {exc}{hint}") from None
            size = part.stat().st_size
            if file.size is not None and size != file.size:
                part.unlink()
                raise StageFailed("model_download", f"{file.filename} has {size} bytes, expected {file.size}")
            if file.sha256 is not None:
                digest = sha256_file(part)
                if digest != file.sha256:
                    part.unlink()
                    raise StageFailed(
                        "model_download",
                        f"{file.filename} sha256 is {digest}, expected {file.sha256}; the partial file was removed",
                    )
            os.replace(part, target)
            fsync_dir(target.parent)
            atomic_write(verified, expected.encode())
        return True

    def dataset(self) -> None:
        started = self._start("dataset")
        m, final = self.m, self.layout.dataset_dir
        with file_lock(final.with_name(f".{final.name}.lock")):
            if (final / "COMPLETE").is_file():
                self._done("dataset", started, cached=True)
                return
            part = final.with_name(f"{final.name}.zip.part")
            try:
                self._download("dataset", m.dataset_url, part, {})
            except HttpFailure as exc:
                raise StageFailed("dataset", f"dataset download failed: {exc}") from None
            digest = sha256_file(part)
            if digest != m.dataset_sha256:
                part.unlink()
                raise StageFailed("dataset", f"dataset sha256 is {digest}, expected {m.dataset_sha256}")
            staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            if staging.exists():
                shutil.rmtree(staging)
            unpack_zip(part, staging)
            (staging / "COMPLETE").write_text(digest)
            if final.exists():
                shutil.rmtree(final)  # a folder without COMPLETE: an older agent died mid-way
            os.replace(staging, final)
            fsync_dir(final.parent)
            part.unlink()
        self._done("dataset", started, cached=False)

    # --- auto-captioning (agent/captions.py) ------------------------------------------------------------------
    def captions(self) -> None:
        """Tag the images that have no caption file, once per (dataset, settings) per volume; the job then trains on
        the captioned dataset, which is uploaded for the bot to store under its own hash."""
        spec = self.m.captions
        if spec is None:
            return
        started = self._start("captions")
        layout = self.layout
        to_tag = cap.images_without_captions(layout.dataset_dir)
        if not to_tag:
            self.rep.log("captions: every image has a caption; nothing to tag")
            self._done("captions", started, cached=True)
            return
        key = spec.cache_key(self.m.dataset_sha256)
        pointer = layout.captioned_dir / f"{key}.json"
        zip_path = layout.captioned_dir / f"{key}.zip"
        with file_lock(layout.captioned_dir / f".{key}.lock"):
            record = json.loads(pointer.read_text()) if pointer.is_file() else None
            cached = (
                record is not None
                and zip_path.is_file()
                and (layout.datasets_dir / record["sha256"] / "COMPLETE").is_file()
            )
            if not cached:
                record = self._tag(spec, to_tag, zip_path)
                cap.write_pointer(pointer, record)
        assert record is not None
        url = self.m.upload_url("captions")
        if url is not None:
            self.ctx.http.put_file(url, zip_path)
        self.data_sha256 = record["sha256"]
        self.rep.status["captions"] = {**record["summary"], "sha256": record["sha256"], "size": record["size"]}
        self.rep.log(
            f"captions: {record['summary']['tagged']} images tagged"
            + (" (cached on the volume)" if cached else "")
            + f"; dataset {record['sha256']}"
        )
        self._done("captions", started, cached=cached)

    def _tag(self, spec: cap.CaptionSpec, to_tag: list[str], zip_path: Path) -> dict[str, object]:
        layout = self.layout
        source = layout.dataset_dir
        model_dir = self._tagger_model(spec)
        work = layout.job_dir / f".captions-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        images = work / "images"
        for rel in to_tag:
            link = images / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source / rel, link)  # the tagger writes its .txt beside the link, never beside the original
        argv = cap.tagger_argv(spec, layout.venv / "bin" / "python", layout.sd_scripts / spec.script, images, model_dir)
        env = self.ctx.child_env()
        # Like the trainer: the Hub is offline (the model is on the volume), rich does not fold log records.
        env.update(HF_HOME=str(layout.hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="400")
        self.rep.log(f"captions: tagging {len(to_tag)} images: {' '.join(argv)}")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        code = run_logged(argv, self.log_path, self.ctx.stop, env, cwd=layout.sd_scripts, on_poll=self._publish)
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            output = log.read().decode("utf-8", errors="replace")
        if code != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise StageFailed(
                "tagger", f"sd-scripts' WD14 tagger exited with code {code}: {cap.last_error_line(output)}"
            )
        unreadable = cap.unreadable_images(output, images)
        tags: dict[str, list[str] | None] = {}
        for rel in to_tag:
            written = (images / rel).with_suffix(cap.CAPTION_SUFFIX)
            if written.is_file() and rel not in unreadable:
                tags[rel] = cap.split_tags(written.read_text(encoding="utf-8", errors="replace"))
            else:
                tags[rel] = None
                unreadable.setdefault(rel, "the tagger wrote no caption for it")
        captions, shared = cap.compose_captions(tags, spec)
        staging = layout.datasets_dir / f".captioned.tmp-{os.getpid()}"
        reset_dir(staging)
        cap.copy_dataset(source, staging)
        for rel, caption in captions.items():
            (staging / rel).with_suffix(cap.CAPTION_SUFFIX).write_text(caption + "\n", encoding="utf-8")
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        sha, size = cap.pack(staging, zip_path)
        final = layout.datasets_dir / sha
        with file_lock(final.with_name(f".{final.name}.lock")):
            if (final / "COMPLETE").is_file():
                shutil.rmtree(staging)  # another job captioned the same images the same way
            else:
                (staging / "COMPLETE").write_text(sha)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)
                fsync_dir(final.parent)
        shutil.rmtree(work, ignore_errors=True)
        summary = cap.summarise(captions, spec, shared, unreadable)
        return {"sha256": sha, "size": size, "source_sha256": self.m.dataset_sha256, "summary": summary}

    def _tagger_model(self, spec: cap.CaptionSpec) -> Path:
        """The tagger's model files in `<model_dir>/<repo as _>/`, fetched once per volume and checked; the tagger
        finds the folder and does not download (it would only when the folder is missing)."""
        model_dir = self.layout.tagger_models_dir
        target = model_dir / spec.model_folder
        marker = target / cap.TAGGER_MARKER
        wanted = json.dumps(
            {"repo": spec.repo, "revision": spec.revision, "files": [[f.name, f.sha256] for f in spec.files]},
            sort_keys=True,
        )
        with file_lock(model_dir / f".{target.name}.lock"):
            if marker.is_file() and json.loads(marker.read_text()).get("wanted") == wanted:
                return model_dir
            staging = model_dir / f".{target.name}.tmp-{os.getpid()}"
            reset_dir(staging)
            arrived = {}
            for file in spec.files:
                try:
                    self.ctx.http.download(file.url, staging / file.name)
                except HttpFailure as exc:
                    shutil.rmtree(staging)
                    raise StageFailed(
                        "model_download", f"tagger model {spec.repo}: {file.name} could not be fetched ({exc})"
                    ) from None
                digest = sha256_file(staging / file.name)
                if file.sha256 is not None and digest != file.sha256:
                    shutil.rmtree(staging)
                    raise StageFailed(
                        "model_download",
                        f"tagger model {spec.repo}: {file.name} sha256 is {digest}, expected {file.sha256}",
                    )
                if (staging / file.name).stat().st_size == 0:
                    shutil.rmtree(staging)
                    raise StageFailed("model_download", f"tagger model {spec.repo}: {file.name} arrived empty")
                arrived[file.name] = digest
            atomic_write(staging / cap.TAGGER_MARKER, json.dumps({"wanted": wanted, "sha256": arrived}).encode())
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            fsync_dir(model_dir)
        self.rep.log(f"tagger model {spec.repo}: {', '.join(sorted(arrived))}")
        return model_dir

    def link_and_ready(self) -> None:
        layout = self.layout
        self.dataset_view()
        ready = {
            "job_id": self.m.job_id,
            "recipe_hash": self.m.recipe_hash,
            "model": {"filename": self.m.model_filename, "sha256": self.m.model_sha256},
            "dataset_sha256": self.data_sha256,
        }
        write_if_changed(layout.ready, json.dumps(ready, sort_keys=True).encode())
        fsync_dir(layout.job_dir)

    def dataset_view(self) -> None:
        """`{data_dir}`: this job's own folder tree of symlinks to the shared dataset's files.

        sd-scripts' `--cache_latents_to_disk` writes `<image>_<W>x<H>_<arch>.npz` beside each image path it globbed
        (symlinks not resolved) and reuses any such file that has the right keys, whichever model wrote it. In the
        content-addressed dataset folder, a job on another base model would train on the first job's latents; in a
        per-job view they land in `{job_dir}/data` and go with the job. A view already there (a rerun of this job)
        is kept with its latents: same job, same model."""
        layout = self.layout
        source = layout.datasets_dir / self.data_sha256
        view, marker = layout.data_dir, layout.data_dir / DATASET_VIEW_MARKER
        fresh = view.is_dir() and not view.is_symlink() and marker.is_file()
        if fresh and marker.read_text() == self.data_sha256:
            return
        staging = layout.job_dir / f".data.tmp-{os.getpid()}"
        reset_dir(staging)
        for file, rel in dataset_files(source):
            (staging / rel).mkdir(parents=True, exist_ok=True)
            link = staging / rel / file.name
            # Relative: the volume is mounted at another path on every pod (and a local folder in tests).
            os.symlink(os.path.relpath(file, link.parent), link)
        (staging / DATASET_VIEW_MARKER).write_text(self.data_sha256)
        if view.is_symlink() or view.is_file():
            view.unlink()  # an older agent's link to the shared folder
        elif view.exists():
            shutil.rmtree(view)  # a view of another dataset, or one an agent died building
        os.replace(staging, view)
        fsync_dir(layout.job_dir)


def unpack_zip(archive: Path, into: Path) -> None:
    """Unpack the bot's normalised zip; refuse anything that could write outside `into`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise StageFailed("dataset", f"dataset zip has {len(entries)} entries (limit {MAX_ZIP_ENTRIES})")
            into.mkdir(parents=True)
            for entry in entries:
                name = PurePosixPath(entry.filename)
                if name.is_absolute() or ".." in name.parts or "\\" in entry.filename:
                    raise StageFailed("dataset", f"dataset zip entry {entry.filename!r} points outside the folder")
                if stat.S_ISLNK(entry.external_attr >> 16):
                    raise StageFailed("dataset", f"dataset zip entry {entry.filename!r} is a symlink")
                zf.extract(entry, into)
    except zipfile.BadZipFile as exc:
        raise StageFailed("dataset", f"dataset is not a valid zip: {exc}") from None


def run_prepare(ctx: Context, rep: Reporter) -> bool:
    """Run the stage and report it; True when READY is written."""
    rep.phase("building_env", publish=False)
    prep = Prepare(ctx, rep)
    try:
        run_prune(ctx, rep)  # what `lorabot volumes prune` marked on this volume goes first (agent/prune.py)
        prep.run()
    except StageFailed as exc:
        rep.fail(exc.kind, exc.message)
        rep.upload_log(prep.log_path)
        return False
    except (Interrupted, Stopped):
        rep.timing("finished_at")
        rep.phase("interrupted", publish=False)
        rep.publish(quick=True)
        return False
    rep.status["eta_seconds"] = 0.0
    rep.timing("ready_at")
    rep.phase("ready")
    rep.upload_log(prep.log_path)
    return True
