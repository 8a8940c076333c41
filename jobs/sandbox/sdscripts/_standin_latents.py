"""`--cache_latents_to_disk` as sd-scripts does it at 48d368fa (strategy_sd / strategy_flux LatentsCachingStrategy):
each image's latents go to `<image path without extension>_<W:04d>x<H:04d><suffix>` beside the image (the path as
globbed, symlinks not resolved), and an existing file is reused when it holds the expected keys: nothing checks which
model or VAE wrote it. The stand-in writes a small file naming the model, so tests can see whose latents they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from _standin_dataset import IMAGE_EXTENSIONS, Dataset

SUFFIX = {"sd15": "_sd.npz", "sdxl": "_sdxl.npz", "flux": "_flux.npz"}


def cache_latents_to_disk(arch: str, datasets: list[Dataset], model_path: str, log: Callable[[str, str], None]) -> None:
    for dataset in datasets:
        width, _, height = dataset.resolution.replace(" ", "").partition(",")
        size = f"_{int(width):04d}x{int(height or width):04d}"
        for subset in dataset.subsets:
            if not os.path.isdir(subset.image_dir):
                continue
            for name in sorted(os.listdir(subset.image_dir)):
                if os.path.splitext(name)[1] not in IMAGE_EXTENSIONS:
                    continue
                npz = os.path.splitext(os.path.join(subset.image_dir, name))[0] + size + SUFFIX[arch]
                if os.path.exists(npz):
                    continue  # reused as it is: only its keys would be checked
                with open(npz, "wb") as out:
                    out.write(f"stand-in latents of {os.path.basename(model_path)}\n".encode())
    log("INFO", "caching latents to disk")
