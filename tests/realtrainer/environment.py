"""The real-trainer tier's environment: sd-scripts at the pinned commit, a venv with the recipe's pins, a random-weight
SD 1.5 checkpoint and an offline CLIP tokenizer, built once per recipe hash under ~/.cache/lorabot/realtrainer/.

    python -m tests.realtrainer.environment      # build it (or find it built) and print what it is

The venv follows `jobs.recipe.runpod_recipe()` step by step; each step is run as the recipe says except where this
machine cannot (no GPU, no download.pytorch.org, no GitHub, no Hugging Face), and every such change is an
`Override` listed with its reason. sd-scripts' source comes from `LORABOT_SDSCRIPTS_SRC` (a folder or a tarball),
else from the vendored tarball beside the repository (../shared/vendor/), else from a clone of the pinned commit; it
is copied into the cache, never into the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from jobs.agent.manifest import recipe_hash
from jobs.recipe import SD_SCRIPTS_COMMIT, SD_SCRIPTS_REPO, runpod_recipe

REPO = Path(__file__).resolve().parents[2]
VENDOR_TARBALL = REPO.parent / "shared" / "vendor" / f"sd-scripts-{SD_SCRIPTS_COMMIT}.tar.gz"
SOURCE_ENV = "LORABOT_SDSCRIPTS_SRC"
# Bump when what this module builds changes, so old caches are not reused.
BUILDER_VERSION = "1"
# CLIP's byte-pair vocabulary, as OpenAI published it, ships inside this PyPI package.
CLIP_VOCAB_PACKAGE = "clip-anytorch==2.6.0"
CLIP_VOCAB_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_ID = "openai/clip-vit-large-patch14"
# The base model's file name on the volume: the catalog's SD 1.5 file, which this random-weight one stands in for.
MODEL_FILENAME = "v1-5-pruned-emaonly.safetensors"
GIT_TIMEOUT_S = 20
PIP_TIMEOUT_S = 1800


class Unavailable(Exception):
    """The tier cannot run on this machine; the message says why and what would fix it."""


@dataclass(frozen=True)
class Override:
    """One thing the real-trainer tier does differently from production, and why."""

    what: str
    production: str
    here: str
    why: str

    def render(self) -> str:
        return f"{self.what}: {self.production} -> {self.here} ({self.why})"


@dataclass(frozen=True)
class RealTrainerEnv:
    root: Path
    venv: Path
    sd_scripts: Path
    model: Path
    model_sha256: str
    hf_home: Path
    overrides: tuple[Override, ...]
    facts: dict[str, Any]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def cache_root() -> Path:
    return Path(os.environ.get("LORABOT_CACHE", Path.home() / ".cache" / "lorabot")) / "realtrainer"


# --- sd-scripts' source ----------------------------------------------------------------------------------------
def _unpack(tarball: Path, into: Path) -> None:
    """Unpack a source tarball with or without one top folder (sd-scripts-<commit>/...) into `into`."""
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        strip = len(tops) == 1 and any(m.name.startswith(f"{next(iter(tops))}/") for m in members)
        staging = into.with_name(into.name + ".unpack")
        shutil.rmtree(staging, ignore_errors=True)
        archive.extractall(staging, filter="data")
    shutil.move(staging / next(iter(tops)) if strip else staging, into)
    shutil.rmtree(staging, ignore_errors=True)


def _github_reachable() -> bool:
    try:
        done = subprocess.run(
            ["git", "ls-remote", "--heads", SD_SCRIPTS_REPO],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def fetch_sd_scripts(into: Path) -> str:
    """Put sd-scripts at the pinned commit in `into`; returns where it came from."""
    named = os.environ.get(SOURCE_ENV)
    if named:
        source = Path(named).expanduser()
        if source.is_dir():
            shutil.copytree(source, into, ignore=shutil.ignore_patterns(".git", "__pycache__"), symlinks=True)
        elif source.is_file():
            _unpack(source, into)
        else:
            raise Unavailable(f"{SOURCE_ENV}={named} is neither a folder nor a tarball")
        return f"{SOURCE_ENV}={source}"
    if VENDOR_TARBALL.is_file():
        _unpack(VENDOR_TARBALL, into)
        return str(VENDOR_TARBALL)
    if _github_reachable():
        subprocess.run(["git", "clone", "--filter=blob:none", SD_SCRIPTS_REPO, str(into)], check=True)
        subprocess.run(["git", "-C", str(into), "checkout", SD_SCRIPTS_COMMIT], check=True)
        return f"{SD_SCRIPTS_REPO}@{SD_SCRIPTS_COMMIT}"
    raise Unavailable(
        f"no sd-scripts source: set {SOURCE_ENV} to a folder or tarball of kohya-ss/sd-scripts@{SD_SCRIPTS_COMMIT}, "
        f"put the tarball at {VENDOR_TARBALL}, or allow access to GitHub"
    )


# --- the recipe, as this machine can run it --------------------------------------------------------------------
def recipe_python(recipe: dict[str, Any]) -> str:
    """The recipe's interpreter (/usr/bin/python3.11 on RunPod's images), else a Python of its version here."""
    if Path(recipe["python"]).is_file():
        return str(recipe["python"])
    found = shutil.which(f"python{recipe['python_version']}")
    if found:
        return found
    raise Unavailable(f"no Python {recipe['python_version']} here ({recipe['python']} is missing) to build the venv")


def load_recipe() -> dict[str, Any]:
    try:
        return runpod_recipe()
    except FileNotFoundError as exc:  # the recipe's lock file is not there: nothing pinned to build from
        raise Unavailable(f"the recipe cannot be read: {exc}") from None


# Steps of the recipe this machine runs differently, and why (shown by the tier as overrides).
STEP_OVERRIDES = {
    "sd-scripts": (
        "git clone kohya-ss/sd-scripts",
        "the pinned commit's source copied into the cache",
        f"from {SOURCE_ENV}, the vendored tarball, or a clone only when nothing else is there",
    ),
    "checkout": (f"git checkout {SD_SCRIPTS_COMMIT}", "skipped", "the copied source is that commit"),
    "xformers": (
        "pip install xformers (CUDA kernels)",
        "not installed",
        "xFormers needs CUDA; the trainer runs with --sdpa instead",
    ),
}
INDEX_OVERRIDE = ("torch from the recipe's --index-url", "torch from PyPI", "only PyPI is reachable here")


def _expand(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace(key, value)
    return text


def plan_steps(recipe: dict[str, Any], root: Path) -> tuple[list[tuple[str, list[str], Path | None]], list[Override]]:
    """The recipe's steps as this machine runs them: (name, argv, cwd) to run, and the overrides that made them.

    A step this tier does not know fails loudly: a recipe change must be looked at here before the tier claims to
    test it."""
    places = {
        "{python}": recipe_python(recipe),
        "{venv}": str(root / "venv"),
        "{sd_scripts}": str(root / "sd-scripts"),
        "{env_dir}": str(root),
    }
    runs: list[tuple[str, list[str], Path | None]] = []
    overrides: list[Override] = []
    for step in recipe["steps"]:
        name = step["name"]
        argv = [_expand(a, places) for a in step["argv"]]
        cwd = Path(_expand(step["cwd"], places)) if step.get("cwd") else root
        if name in STEP_OVERRIDES:
            overrides.append(Override(f"env step {name}", *STEP_OVERRIDES[name]))
        elif name in ("venv", "torch", "requirements", "tagger"):
            if "--index-url" in argv:
                at = argv.index("--index-url")
                del argv[at : at + 2]
                overrides.append(Override(f"env step {name}", *INDEX_OVERRIDE))
            runs.append((name, argv, cwd))
        else:
            raise Unavailable(
                f"UNKNOWN RECIPE STEP {name!r} ({' '.join(step['argv'])}): jobs/recipe.py runpod_recipe() has a step "
                "the real-trainer tier does not know, so it cannot build the production environment. Teach "
                "tests/realtrainer/environment.py (plan_steps) to run it as the recipe says, or, when this CPU "
                "machine cannot, add it to STEP_OVERRIDES with the reason"
            )
    if recipe["python"] != places["{python}"]:
        overrides.append(
            Override("interpreter", recipe["python"], places["{python}"], "the recipe's path is missing here")
        )
    return runs, overrides


def cache_key(recipe: dict[str, Any]) -> str:
    """The recipe's own hash (its pins and constraints), and what this tier adds to it."""
    identity = {"recipe": recipe_hash(recipe), "builder": BUILDER_VERSION, "tokenizer": CLIP_VOCAB_PACKAGE}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _run(argv: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=PIP_TIMEOUT_S, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise Unavailable(f"`{' '.join(argv[:4])} ...` exited with {done.returncode}:\n" + "\n".join(tail))


def build_venv(recipe: dict[str, Any], root: Path, log: Path) -> tuple[dict[str, float], list[Override]]:
    """Write the recipe's files, run its steps as `plan_steps` says; returns seconds per step and the overrides."""
    for name, text in recipe.get("files", {}).items():
        (root / name).write_text(text)
    runs, overrides = plan_steps(recipe, root)
    seconds: dict[str, float] = {}
    for name, argv, cwd in runs:
        started = time.monotonic()
        _run(argv, log, cwd=cwd)
        seconds[name] = round(time.monotonic() - started, 1)
    return seconds, overrides


# --- the tokenizer ---------------------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte-to-character table: printable bytes map to themselves, the other 68 bytes to
    the characters from U+0100 on, in byte order. Returned in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


def write_clip_tokenizer(hf_home: Path, bpe_gz: bytes) -> None:
    """A Hugging Face hub cache entry for openai/clip-vit-large-patch14's tokenizer, made from CLIP's BPE merges.

    CLIP's vocabulary is the 256 byte symbols, the same with the end-of-word mark `</w>`, one token per merge (the
    first 48,894 merges of the file, after its header line) and the two special tokens: 49,408 ids."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m.split()) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    files = {
        "vocab.json": json.dumps({token: index for index, token in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "do_lower_case": True,
                "errors": "replace",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        ),
        "special_tokens_map.json": json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        ),
    }
    revision = hashlib.sha1("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    repo = hf_home / "hub" / ("models--" + TOKENIZER_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (snapshot / name).write_text(text, encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


def fetch_clip_vocabulary(python: Path, workdir: Path, log: Path) -> bytes:
    _run([str(python), "-m", "pip", "download", "--no-deps", CLIP_VOCAB_PACKAGE, "-d", str(workdir)], log)
    wheel = next(workdir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(CLIP_VOCAB_MEMBER)


TOKENIZER_CHECK = """
from transformers import CLIPTokenizer
tokenizer = CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")
ids = tokenizer("a photo of a cat").input_ids
assert tokenizer.model_max_length == 77, tokenizer.model_max_length
assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
print("tokenizer ok", ids)
"""


def offline_env(hf_home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# --- the whole environment -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _du(path: Path) -> int:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def _loaded(root: Path) -> RealTrainerEnv:
    facts = json.loads((root / "COMPLETE").read_text())
    return RealTrainerEnv(
        root=root,
        venv=root / "venv",
        sd_scripts=root / "sd-scripts",
        model=root / "model" / MODEL_FILENAME,
        model_sha256=facts["model_sha256"],
        hf_home=root / "hf",
        overrides=tuple(Override(**o) for o in facts["overrides"]),
        facts=facts,
    )


def ensure(log_to: TextIO | None = None) -> RealTrainerEnv:
    """The environment for this recipe, built when missing. Raises Unavailable when it cannot be built."""
    recipe = load_recipe()
    root = cache_root() / cache_key(recipe)
    plan_steps(recipe, root)  # a step this tier does not know fails here, before anything is fetched or built
    with _locked(root.with_name(root.name + ".lock")):
        if (root / "COMPLETE").is_file():
            return _loaded(root)
        shutil.rmtree(root, ignore_errors=True)  # a build that died halfway
        root.mkdir(parents=True)
        log = root / "build.log"

        def say(text: str) -> None:
            print(f"[realtrainer env] {text}", file=log_to or sys.stderr, flush=True)

        started = time.monotonic()
        say(f"building in {root} (log: {log})")
        source = fetch_sd_scripts(root / "sd-scripts")
        say(f"sd-scripts from {source}")
        seconds, overrides = build_venv(recipe, root, log)
        say(f"venv built: {seconds}")

        step = time.monotonic()
        python = root / "venv" / "bin" / "python"
        with tempfile.TemporaryDirectory() as workdir:
            write_clip_tokenizer(root / "hf", fetch_clip_vocabulary(python, Path(workdir), log))
        _run([str(python), "-c", TOKENIZER_CHECK], log, env=offline_env(root / "hf"))
        seconds["tokenizer"] = round(time.monotonic() - step, 1)

        step = time.monotonic()
        model = root / "model" / MODEL_FILENAME
        model.parent.mkdir()
        _run([str(python), str(Path(__file__).with_name("make_model.py")), str(model)], log, cwd=root / "sd-scripts")
        seconds["model"] = round(time.monotonic() - step, 1)
        say(f"model written ({model.stat().st_size} bytes)")

        facts: dict[str, Any] = {
            "source": source,
            "python": recipe_python(recipe),
            "recipe_hash": recipe_hash(recipe),
            "seconds": seconds,
            "build_seconds": round(time.monotonic() - started, 1),
            "venv_bytes": _du(root / "venv"),
            "model_bytes": model.stat().st_size,
            "model_sha256": _sha256(model),
            "overrides": [asdict(o) for o in overrides],
        }
        (root / "COMPLETE.tmp").write_text(json.dumps(facts, indent=2))
        os.replace(root / "COMPLETE.tmp", root / "COMPLETE")
        say(f"done in {facts['build_seconds']} s; venv {facts['venv_bytes'] / 2**30:.1f} GiB")
        return _loaded(root)


def main() -> int:
    try:
        env = ensure()
    except Unavailable as exc:
        print(f"real-trainer environment unavailable: {exc}", file=sys.stderr)
        return 1
    facts = env.facts
    print(f"real-trainer environment: {env.root}")
    print(f"  sd-scripts {SD_SCRIPTS_COMMIT} from {facts['source']}; built in {facts['build_seconds']} s")
    print(f"  venv {facts['venv_bytes'] / 2**30:.2f} GiB; model {facts['model_bytes'] / 2**30:.2f} GiB")
    for override in env.overrides:
        print(f"  override: {override.render()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
