"""Writes a random-weight SD 1.5 single-file checkpoint with sd-scripts' own model code.

Run by the real-trainer venv's Python with sd-scripts' `library` importable (it is installed by `-e .`):
    python make_model.py OUTPUT.safetensors

sd-scripts builds SD 1.5's U-Net, VAE and text encoder from fixed sizes (library/model_util.py), so a checkpoint
it can load has every tensor of the real architecture: the weights are random, the shapes are real. It is saved by
sd-scripts' own `save_stable_diffusion_checkpoint`, so the key names are the ones its loader converts back, and in
fp16 (as published SD 1.5 files are) to halve the file.
"""

from __future__ import annotations

import sys

import torch
from diffusers import AutoencoderKL
from library import model_util
from library.original_unet import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

SEED = 20261204


def text_encoder_config() -> CLIPTextConfig:
    # The SD 1.5 text encoder (CLIP ViT-L/14's text half) with the sizes model_util's loader uses for v1 checkpoints.
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-05,
        projection_dim=768,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def main(output: str) -> None:
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**model_util.create_unet_diffusers_config(False))
    vae = AutoencoderKL(**model_util.create_vae_diffusers_config())
    text_encoder = CLIPTextModel(text_encoder_config())
    keys = model_util.save_stable_diffusion_checkpoint(
        False, output, text_encoder, unet, None, 0, 0, None, save_dtype=torch.float16, vae=vae
    )
    print(f"wrote {output}: {keys} tensors")


if __name__ == "__main__":
    main(sys.argv[1])
