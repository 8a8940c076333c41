"""Tokenizer loading as sd-scripts does it at 48d368fa (strategy_base.TokenizeStrategy._load_tokenizer).

Each script's strategy loads its tokenizers by Hub repo id. With `--tokenizer_cache_dir`, a folder
`<dir>/<repo id with "/" as "_">` that exists is loaded with from_pretrained(folder); otherwise the tokenizer comes
from the Hub (or its cache under HF_HOME) and is saved into that folder. With HF_HUB_OFFLINE set and nothing cached,
transformers fails with an OSError before any step. The stand-in does the same, and when the Hub is online it really
asks it (HF_ENDPOINT or huggingface.co), so a test world that forbids the request sees it.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable

CLIP_L = "openai/clip-vit-large-patch14"
CLIP_G = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
T5_XXL = "google/t5-v1_1-xxl"
# strategy_sd.TOKENIZER_ID; strategy_sdxl.TOKENIZER1_PATH / TOKENIZER2_PATH; strategy_flux CLIP_L / T5_XXL ids.
TOKENIZERS = {"sd": (CLIP_L,), "sdxl": (CLIP_L, CLIP_G), "flux": (CLIP_L, T5_XXL)}
# The file without which from_pretrained(folder) cannot build the repo's tokenizer class.
NEEDED = {CLIP_L: "vocab.json", CLIP_G: "vocab.json", T5_XXL: "spiece.model"}
CLASS = {CLIP_L: "CLIPTokenizer", CLIP_G: "CLIPTokenizer", T5_XXL: "T5TokenizerFast"}
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def load_tokenizers(arch: str, cache_dir: str | None, log: Callable[[str, str], None]) -> None:
    for repo in TOKENIZERS[arch]:
        local = os.path.join(cache_dir, repo.replace("/", "_")) if cache_dir else None
        if local is not None and os.path.exists(local):
            log("INFO", f"load tokenizer from cache: {local}")
            if not os.path.isfile(os.path.join(local, NEEDED[repo])):
                raise OSError(_cannot_load(local, CLASS[repo]))
            continue
        if os.path.isdir(repo):
            # from_pretrained(repo id) takes an existing folder of that name (relative to the working folder) as
            # the tokenizer's folder, before any Hub lookup (flux_minimal_inference.py passes no cache dir).
            if not os.path.isfile(os.path.join(repo, NEEDED[repo])):
                raise OSError(_cannot_load(repo, CLASS[repo]))
            continue
        files = _from_hub(repo)
        if local is not None:
            log("INFO", f"save Tokenizer to cache: {local}")
            os.makedirs(local, exist_ok=True)
            for name, body in files.items():
                with open(os.path.join(local, name), "wb") as out:
                    out.write(body)


def _from_hub(repo: str) -> dict[str, bytes]:
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES:
        # transformers finds no file in the Hub cache and may not ask the Hub: every lookup comes back empty.
        raise OSError(_cannot_load(repo, CLASS[repo]))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    name = NEEDED[repo]
    with urllib.request.urlopen(f"{endpoint}/{repo}/resolve/main/{name}", timeout=30) as resp:
        return {name: resp.read()}


def _cannot_load(name: str, tokenizer_class: str) -> str:
    return (
        f"Can't load tokenizer for '{name}'. If you were trying to load it from 'https://huggingface.co/models', "
        f"make sure you don't have a local directory with the same name. Otherwise, make sure '{name}' is the "
        f"correct path to a directory containing all relevant files for a {tokenizer_class} tokenizer."
    )
