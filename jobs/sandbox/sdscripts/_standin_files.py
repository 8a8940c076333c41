"""The files sd-scripts writes, in their real formats, built with the standard library only.

- LoRA weights: safetensors (8-byte little-endian header length, JSON header, raw tensor bytes).
- Sample images: PNG (signature, IHDR, IDAT zlib stream, IEND), written straight to the final name as
  library/train_util.py `sample_image_inference` does with `image.save(...)`: no temp name, no rename.
- accelerate state folders: model.safetensors, optimizer.bin, scheduler.bin, random_states_0.pkl, plus
  sd-scripts' train_state.json, which train_network.py's `save_model_hook` writes first (it is a pre-hook).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import struct
import zlib

# Module names in the style of each architecture's LoRA (networks/lora.py, networks/lora_flux.py).
_MODULES = {
    "sdxl": [
        "lora_unet_input_blocks_4_1_proj_in",
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k",
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v",
        "lora_te1_text_model_encoder_layers_0_mlp_fc1",
    ],
    "sd": [
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_te_text_model_encoder_layers_0_self_attn_k_proj",
    ],
    "flux": [
        "lora_unet_double_blocks_0_img_attn_proj",
        "lora_unet_double_blocks_0_txt_mlp_0",
        "lora_unet_single_blocks_0_linear1",
    ],
}
_FEATURES = 64  # in/out features of every stand-in module: small so files stay tiny

_STRUCT_CODES = {"F32": "f", "F16": "e"}  # BF16 has no struct code: see _encode


def lora_tensors(architecture: str, dim: int, alpha: float, seed: int) -> dict[str, tuple[list[int], list[float]]]:
    """Tensor name -> (shape, values) for a small LoRA; values depend on `seed` so epochs differ."""
    rng = random.Random(seed)
    tensors: dict[str, tuple[list[int], list[float]]] = {}
    for module in _MODULES[architecture]:
        tensors[f"{module}.alpha"] = ([], [float(alpha)])
        tensors[f"{module}.lora_down.weight"] = ([dim, _FEATURES], [rng.gauss(0, 0.02) for _ in range(dim * _FEATURES)])
        tensors[f"{module}.lora_up.weight"] = ([_FEATURES, dim], [rng.gauss(0, 0.002) for _ in range(dim * _FEATURES)])
    return tensors


def _encode(values: list[float], dtype: str) -> bytes:
    if dtype == "BF16":
        # bfloat16 is the upper half of an IEEE float32
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    return struct.pack(f"<{len(values)}{_STRUCT_CODES[dtype]}", *values)


def safetensors_bytes(tensors: dict[str, tuple[list[int], list[float]]], dtype: str, metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        data = _encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # the format pads the header to 8-byte alignment
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def read_safetensors_header(path: str) -> dict[str, object]:
    """What accelerate's load_state needs to trust a model.safetensors: a parseable header."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """An RGB image: a gradient whose hue and a block noise both depend on `seed` (epoch + prompt)."""
    rng = random.Random(seed)
    block = 8  # noise is drawn per 8x8 block so a 1024x1024 image costs 128x128 random draws
    hue = rng.random() * 2 * math.pi
    base = [int(127 + 120 * math.sin(hue + k * 2.1)) for k in range(3)]
    cols, rows = max(1, width // block), max(1, height // block)
    raw = bytearray()
    for by in range(rows):
        row_pixels = bytearray()
        for bx in range(cols):
            shade = (bx * 255) // max(1, cols - 1)
            noise = rng.randrange(-40, 41)
            pixel = bytes(max(0, min(255, (c + shade + by * 2) // 2 + noise)) for c in base)
            row_pixels += pixel * block
        row_pixels = row_pixels[: width * 3].ljust(width * 3, b"\0")
        raw += (b"\0" + bytes(row_pixels)) * block  # filter type 0 per scanline
    raw = raw[: height * (1 + width * 3)].ljust(height * (1 + width * 3), b"\0")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b"")
    )


def write_state_dir(state_dir: str, network_weights: bytes, current_epoch: int, current_step: int) -> None:
    """An accelerate `save_state` folder as sd-scripts leaves it (train_network.py `save_model_hook`)."""
    os.makedirs(state_dir, exist_ok=True)
    # pre-hook first: sd-scripts writes train_state.json before accelerate writes the weights
    with open(os.path.join(state_dir, "train_state.json"), "w", encoding="utf-8") as f:
        json.dump({"current_epoch": current_epoch, "current_step": current_step}, f)
    write_file(os.path.join(state_dir, "model.safetensors"), network_weights)
    # torch pickles in reality; opaque bytes here: nobody but accelerate reads them
    write_file(os.path.join(state_dir, "optimizer.bin"), b"stand-in optimizer state " + os.urandom(64))
    write_file(os.path.join(state_dir, "scheduler.bin"), b"stand-in scheduler state")
    with open(os.path.join(state_dir, "random_states_0.pkl"), "wb") as f:
        pickle.dump({"step": current_step, "random_state": random.getstate()}, f)
