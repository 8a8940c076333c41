"""Stand-ins for sd-scripts' generation scripts (48d368fa): gen_img.py (SD 1.x and, with --sdxl, SDXL) and
flux_minimal_inference.py. Same command lines (gen_flags.json, read off the real parsers), same prompt-line options
and the same output file names; the images come from _standin_images (which prompt, which LoRA bytes).

Read off the real source:
- gen_img.py: `--from_file` lines (empty lines and lines starting with '#' skipped), each split on " --" into the
  prompt and options (`w h s l n f t am ...`, case-insensitive); `--d N[,N]` is cut out of the line first. Output
  name: the line's `--f <name>`, else `im_<NNNNNN>.png` with --sequential_file_name, else
  `im_<%Y%m%d%H%M%S>_<iii>_<seed>.png` (local time), in --outdir (created). Defaults: --W/--H 512 (1024 with
  --sdxl), --steps 50, --scale 7.5. Networks: one weights file per --network_module, multiplier --network_mul
  (1.0 when absent). Its `fixed_seed` bug is kept: --seed with a one-line prompt file and no `--d` in the line
  raises AttributeError ('tuple' object has no attribute 'seed').
- flux_minimal_inference.py: one --prompt per run; --lora_weights items `path;multiplier` (1.0 without ';');
  output `<output_dir>/<%Y%m%d_%H%M%S>.png` (local time, created); steps default 50 (dev).
Tokenizers load as in _standin_tokenizers (gen_img.py through --tokenizer_cache_dir; flux by Hub id, so with
the Hub offline only a folder of that name in the working folder serves them).
Not modelled: dynamic prompts ({a|b}: refused with a message), img2img, ControlNet, highres fix, interactive mode.

Environment: LORABOT_TIME_SCALE (simulated clock); LORABOT_STANDIN_GEN_IT_PER_S (default 8.0 simulated it/s);
LORABOT_STANDIN_GEN_LOAD_S (default 6.0 simulated seconds to load the model); LORABOT_STANDIN_GEN_FAULT:
`crash@N` (RuntimeError traceback at image N, exit 1), `oom@N` (torch.OutOfMemoryError traceback), `hang@N`
(silent until killed); N counts images from 1 in this process.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from _standin_cli import build_gen_parser
from _standin_console import Clock, Console
from _standin_files import read_safetensors_header, write_file
from _standin_images import image_png, network_colour, prompt_colour
from _standin_tokenizers import load_tokenizers

KNOWN_NETWORK_MODULES = {"networks.lora", "networks.lora_flux", "networks.dylora", "networks.oft", "lycoris.kohya"}
_DYNAMIC = re.compile(r"\{((e|E)\$\$)?(([\d\-]+)\$\$)?(([^\|\}]+?)\$\$)?(.+?((\|).+?)*?)\}")


class OutOfMemoryError(RuntimeError):
    """Printed by Python's traceback as `torch.OutOfMemoryError: ...`, like the real one."""


OutOfMemoryError.__module__ = "torch"


class Fault:
    def __init__(self, spec: str) -> None:
        self.kind, _, number = spec.partition("@")
        if spec and (self.kind not in ("crash", "oom", "hang") or not number.isdigit()):
            raise SystemExit(f"LORABOT_STANDIN_GEN_FAULT must be crash@N, oom@N or hang@N, got {spec!r}")
        self.image = int(number) if spec else 0

    def before_image(self, index: int) -> None:
        if not self.kind or index != self.image:
            return
        if self.kind == "crash":
            raise RuntimeError(f"[stand-in] generation crashed at image {index}")
        if self.kind == "oom":
            raise OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which"
                " 1.12 GiB is free."
            )
        while True:  # hang: silent until SIGTERM/SIGKILL
            time.sleep(3600)


class Generator:
    def __init__(self, script: str, console: Console, clock: Clock) -> None:
        self.script = script
        self.console = console
        self.clock = clock
        self.it_per_s = float(os.environ.get("LORABOT_STANDIN_GEN_IT_PER_S", "8") or "8")
        self.load_s = float(os.environ.get("LORABOT_STANDIN_GEN_LOAD_S", "6") or "6")
        self.fault = Fault(os.environ.get("LORABOT_STANDIN_GEN_FAULT", ""))
        self.images = 0

    def log(self, message: str) -> None:
        self.console.log("INFO", message, f"{self.script}:0")

    def console_log(self, level: str, message: str) -> None:
        self.console.log(level, message, f"{self.script}:0")

    def load_file(self, path: str | None) -> bytes:
        """Reading a model file: a missing one fails as Python's open() does."""
        if path is None:
            raise TypeError("expected str, bytes or os.PathLike object, not NoneType")
        with open(path, "rb") as f:
            return f.read()

    def load_network(self, path: str) -> str:
        """The weights' sha256; a file that is not safetensors fails like safetensors' load_file."""
        data = self.load_file(path)
        try:
            read_safetensors_header(path)
        except Exception:
            raise ValueError(f"Error while deserializing header: {path} is not a safetensors file") from None
        return hashlib.sha256(data).hexdigest()

    def render(
        self,
        path: str,
        *,
        width: int,
        height: int,
        prompt: str,
        negative: str,
        seed: int,
        steps: int,
        scale: float | None,
        networks: list[tuple[str, float]],
        extra_text: dict[str, str],
    ) -> None:
        self.images += 1
        self.fault.before_image(self.images)
        self.clock.sleep(steps / self.it_per_s)
        text = {"prompt": prompt, "seed": str(seed), "steps": str(steps), **extra_text}
        text["negative-prompt"] = negative
        text["lorabot-standin-networks"] = "[" + ", ".join(f'["{sha}", {mul!r}]' for sha, mul in networks) + "]"
        data = image_png(
            width,
            height,
            prompt_colour(prompt, negative, seed, steps, scale),
            network_colour(networks),
            text,
        )
        write_file(path, data)

    def local_stamp(self, fmt: str) -> str:
        return time.strftime(fmt, time.localtime(self.clock.now()))


def run_gen_img(gen: Generator, args: Any) -> int:
    """gen_img.py's flow for text-to-image with networks."""
    is_sdxl = bool(args.sdxl)
    gen.log(f"load {'SDXL' if is_sdxl else 'StableDiffusion'} checkpoint: {args.ckpt}")
    gen.load_file(args.ckpt)
    networks: list[tuple[str, float]] = []
    for i, module in enumerate(args.network_module or []):
        if module not in KNOWN_NETWORK_MODULES:
            raise ModuleNotFoundError(f"No module named '{module}'")
        mul = 1.0 if args.network_mul is None or len(args.network_mul) <= i else args.network_mul[i]
        if args.network_weights is None or len(args.network_weights) <= i:
            raise SystemExit("No weight. Weight is required.")  # the real script's message
        gen.log(f"load network weights from: {args.network_weights[i]}")
        networks.append((gen.load_network(args.network_weights[i]), float(mul)))
    # gen_img.py: SDXL's load_tokenizers(args) and SD's SdTokenizeStrategy both honour --tokenizer_cache_dir.
    load_tokenizers("sdxl" if is_sdxl else "sd", args.tokenizer_cache_dir, gen.console_log)
    gen.clock.sleep(gen.load_s)

    if args.from_file is not None:
        gen.log(f"reading prompts from {args.from_file}")
        with open(args.from_file, encoding="utf-8") as f:
            prompt_list = [d for d in f.read().splitlines() if len(d.strip()) > 0 and d[0] != "#"]
    elif args.prompt is not None:
        prompt_list = [args.prompt]
    else:
        raise SystemExit("[stand-in] interactive mode is not modelled: give --from_file or --prompt")

    seed_random: Any
    if args.seed is not None:
        if len(prompt_list) == 1 and args.images_per_prompt == 1:

            def fixed_seed(*args: Any, **kwargs: Any) -> int:
                return args.seed  # type: ignore[attr-defined]  # sd-scripts' bug, kept on purpose

            seed_random = type("SimpleNamespace", (), {"randint": staticmethod(fixed_seed)})()
        else:
            seed_random = random.Random(args.seed)
    else:
        seed_random = random.Random()
    width_default = 1024 if is_sdxl else 512
    os.makedirs(args.outdir, exist_ok=True)
    step_first = 0
    for gen_iter in range(args.n_iter):
        gen.log(f"iteration {gen_iter + 1}/{args.n_iter}")
        for prompt_index, raw_prompt in enumerate(prompt_list):
            seeds: list[int] | None = None
            m = re.search(r" --d ([\d+,]+)", raw_prompt, re.IGNORECASE)
            if m:
                seeds = [int(d) for d in m[0][5:].split(",")]
                raw_prompt = raw_prompt[: m.start()] + raw_prompt[m.end() :]
            if _DYNAMIC.search(raw_prompt):
                raise SystemExit("[stand-in] dynamic prompts ({a|b}) are not modelled")
            options = _gen_img_options(raw_prompt, args, width_default)
            gen.log(f"prompt {prompt_index + 1}/{len(prompt_list)}: {options['prompt']}")
            line_networks = networks
            if options["network_muls"] is not None:
                muls = list(options["network_muls"])
                while len(muls) < len(networks):
                    muls.append(muls[-1])
                line_networks = [(sha, float(mul)) for (sha, _), mul in zip(networks, muls, strict=False)]
            for _ in range(args.images_per_prompt):
                seed = seeds.pop(0) if seeds else seed_random.randint(0, 2**32 - 1)
                if options["filename"] is not None:
                    name = options["filename"]
                elif args.sequential_file_name:
                    name = f"im_{step_first + 1:06d}.png"
                else:
                    name = f"im_{gen.local_stamp('%Y%m%d%H%M%S')}_{0:03d}_{seed}.png"
                step_first += 1
                gen.render(
                    os.path.join(args.outdir, name),
                    width=options["width"],
                    height=options["height"],
                    prompt=options["prompt"],
                    negative=options["negative"],
                    seed=seed,
                    steps=options["steps"],
                    scale=options["scale"],
                    networks=line_networks,
                    extra_text={"sampler": args.sampler, "scale": str(options["scale"]), "raw-prompt": raw_prompt},
                )
    gen.log("done!")
    return 0


def _gen_img_options(raw_prompt: str, args: Any, width_default: int) -> dict[str, Any]:
    """The per-line options gen_img.py reads (the ones that change an image here; the rest are accepted)."""
    values: dict[str, Any] = {
        "width": args.W or width_default,
        "height": args.H or width_default,
        "steps": args.steps,
        "scale": args.scale,
        "negative": "",
        "filename": None,
        "network_muls": None,
    }
    parts = raw_prompt.strip().split(" --")
    values["prompt"] = parts[0]
    readers: list[tuple[str, str, Callable[[str], Any]]] = [
        ("width", r"w (\d+)", int),
        ("height", r"h (\d+)", int),
        ("steps", r"s (\d+)", lambda v: max(1, min(1000, int(v)))),
        ("scale", r"l ([\d\.]+)", float),
        ("negative", r"n (.+)", str),
        ("filename", r"f (.+)", str),
        ("network_muls", r"am ([\d\.\-,]+)", lambda v: [float(x) for x in v.split(",")]),
    ]
    for part in parts[1:]:
        # gen_img.py tries its patterns in this order and `re.match`es each (so "nl 5" is not a negative prompt
        # there: it checks "nl" before "n"); options the stand-in does not draw are accepted and ignored.
        if re.match(r"(ow|oh|nw|nh|ct|cl|nl|t|c|dsd1|dst1|dsd2|dst2|dsr|glt|glr|gle|gls|glsn|glus) ", part, re.I):
            continue
        for key, pattern, convert in readers:
            m = re.match(pattern, part, re.IGNORECASE)
            if m:
                values[key] = convert(m.group(1))
                break
    return values


def run_flux(gen: Generator, args: Any) -> int:
    """flux_minimal_inference.py's non-interactive flow: one image."""
    if args.interactive:
        raise SystemExit("[stand-in] interactive mode is not modelled")
    if args.model_type == "flux":
        gen.log(f"Loading clip_l from {args.clip_l}...")
        gen.load_file(args.clip_l)
    gen.log(f"Loading t5xxl from {args.t5xxl}...")
    gen.load_file(args.t5xxl)
    gen.load_file(args.ckpt_path)
    gen.load_file(args.ae)
    networks: list[tuple[str, float]] = []
    for weights_file in args.lora_weights:
        multiplier = 1.0
        if ";" in weights_file:
            weights_file, mul_text = weights_file.split(";")  # more than one ';' fails here, as in the real script
            multiplier = float(mul_text)
        sha = gen.load_network(weights_file)
        gen.log(f"Loaded LoRA weights from {weights_file}: <All keys matched successfully>")
        networks.append((sha, multiplier))
    # FluxTokenizeStrategy(t5xxl_max_length) with no cache dir: CLIP-L and T5-XXL by their Hub ids.
    load_tokenizers("flux", None, gen.console_log)
    gen.clock.sleep(gen.load_s)
    gen.log("Generating image...")
    steps = args.steps if args.steps is not None else 50
    seed = args.seed if args.seed is not None else random.randint(0, 2**32 - 1)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, f"{gen.local_stamp('%Y%m%d_%H%M%S')}.png")
    gen.render(
        path,
        width=args.width or 1024,
        height=args.height or 1024,
        prompt=args.prompt,
        negative=args.negative_prompt or "",
        seed=seed,
        steps=steps,
        scale=args.cfg_scale,
        networks=networks,
        extra_text={},
    )
    gen.log(f"Saved image to {path}")
    gen.log("Done!")
    return 0


def main(script: str) -> None:
    args = build_gen_parser(script).parse_args()
    clock = Clock.from_env()
    gen = Generator(script, Console(clock, script), clock)
    run = run_flux if script == "flux_minimal_inference.py" else run_gen_img
    try:
        code = run(gen, args)
    except SystemExit:
        raise
    except BaseException:
        # Python's own report of an uncaught exception: the traceback, its last line "<Type>: <message>".
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    sys.exit(code)
