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
from collections.abc import Callable

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


def write_state_dir(
    state_dir: str,
    network_weights: bytes | Callable[[str], None],
    current_epoch: int,
    current_step: int,
    optimizer_bytes: int = 0,
    pace: Pace | None = None,
) -> None:
    """An accelerate `save_state` folder as sd-scripts leaves it (train_network.py `save_model_hook`).
    `network_weights`: the bytes of model.safetensors, or a writer of it (real sizes); `optimizer_bytes`: the real
    size of optimizer.bin (0: a few bytes)."""
    os.makedirs(state_dir, exist_ok=True)
    # pre-hook first: sd-scripts writes train_state.json before accelerate writes the weights
    with open(os.path.join(state_dir, "train_state.json"), "w", encoding="utf-8") as f:
        json.dump({"current_epoch": current_epoch, "current_step": current_step}, f)
    weights_path = os.path.join(state_dir, "model.safetensors")
    if isinstance(network_weights, bytes):
        write_file(weights_path, network_weights)
    else:
        network_weights(weights_path)
    # torch pickles in reality; opaque bytes here: nobody but accelerate reads them
    prefix = b"stand-in optimizer state "
    if optimizer_bytes > len(prefix) and pace is not None:
        write_real_blob(os.path.join(state_dir, "optimizer.bin"), optimizer_bytes, current_step, pace, prefix)
    else:
        write_file(os.path.join(state_dir, "optimizer.bin"), prefix + os.urandom(64))
    write_file(os.path.join(state_dir, "scheduler.bin"), b"stand-in scheduler state")
    with open(os.path.join(state_dir, "random_states_0.pkl"), "wb") as f:
        pickle.dump({"step": current_step, "random_state": random.getstate()}, f)


# --- real sizes (LORABOT_STANDIN_REAL_SIZES=1) --------------------------------------------------------------
# Sum of (in + out features) over the layers sd-scripts' LoRA wraps by default, per part; LoRA parameters are
# dim x that sum (lora_down: dim x in, lora_up: out x dim). Counted from the models' structure:
# - SD1.5 U-Net: 16 transformers (320 ch x5, 640 x5, 1280 x6; context 768), 1x1-conv proj_in/out, attn1, attn2,
#   GEGLU ff: 32C + 1536 each. CLIP-L: 12 layers (q, k, v, out 768; fc1/fc2 768<->3072) = 13,824 each.
# - SDXL U-Net: transformers of 640 ch (5, depth 2) and 1280 (6, depth 10), context 2048, linear proj_in/out:
#   4C + depth x (28C + 4096) each. Text encoders: CLIP-L as above + bigG (32 layers of 1280, mlp 5120) = 23,040 each.
# - Flux (networks.lora_flux): 19 double blocks, two streams of mod 3072->18432, qkv 3072->9216, proj, mlp
#   3072->12288->3072 (70,656 each); 38 single blocks: linear1 3072->21504, linear2 15360->3072, modulation
#   3072->9216 (55,296). Its text encoders are not trained by default.
# Check: SD1.5 dim 32 fp16 = 18.9 M params = 37.8 MB, the size of a real one.
LORA_FEATURE_SUMS = {
    "sd": {"unet": 423_936, "te": 165_888},
    "sdxl": {"unet": 2_659_840, "te": 903_168},
    "flux": {"unet": 4_786_176},
}
# Optimizer state per trained parameter in accelerate's optimizer.bin (bitsandbytes' 8-bit moments are one byte each).
OPTIMIZER_BYTES_PER_PARAM = {"adamw8bit": 2, "pagedadamw8bit": 2, "lion8bit": 1, "lion": 4, "prodigy": 16}
DEFAULT_OPTIMIZER_BYTES_PER_PARAM = 8  # AdamW: exp_avg + exp_avg_sq in fp32
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
# The byte of each value that holds the sign and the exponent's high bits: keeping it small keeps values finite.
_EXPONENT_BYTE = {"F32": 3, "F16": 1, "BF16": 1}
_SMALL_EXPONENT = bytes((b & 0x80) | 0x3C for b in range(256))  # about 1e-2..1e-3 in every format
CHUNK = 8 << 20


def lora_parts(architecture: str, unet_only: bool) -> dict[str, int]:
    parts = dict(LORA_FEATURE_SUMS[architecture])
    if unet_only:
        parts.pop("te", None)
    return parts


def real_lora_params(architecture: str, dim: int, unet_only: bool) -> int:
    return dim * sum(lora_parts(architecture, unet_only).values())


class Pace:
    """Writes no faster than `bytes_per_s` (simulated), as a Network Volume would take them."""

    def __init__(self, sleep: Callable[[float], None], bytes_per_s: float) -> None:
        self.sleep = sleep
        self.bytes_per_s = bytes_per_s

    def wrote(self, count: int) -> None:
        if self.bytes_per_s > 0:
            self.sleep(count / self.bytes_per_s)


def _filler(count: int, dtype: str, rng: random.Random) -> bytes:
    data = bytearray(rng.randbytes(count))
    width, at = _DTYPE_BYTES[dtype], _EXPONENT_BYTE[dtype]
    data[at::width] = bytes(data[at::width]).translate(_SMALL_EXPONENT)
    return bytes(data)


def write_real_lora(
    path: str,
    architecture: str,
    dim: int,
    alpha: float,
    unet_only: bool,
    dtype: str,
    metadata: dict[str, str],
    seed: int,
    pace: Pace,
) -> None:
    """A LoRA of the real size: the small named tensors plus, per part, one pair holding the rest of the weights
    (lora_down [dim, Σ in+out]); written in chunks at the volume's pace, straight to the final name."""
    small = lora_tensors(architecture, dim, alpha, seed)
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    chunks = []
    offset = 0
    for name in sorted(small):
        shape, values = small[name]
        data = _encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    filler: list[tuple[str, int]] = []
    for part, features in lora_parts(architecture, unet_only).items():
        name = f"lora_{part}_standin_rest.lora_down.weight"
        size = dim * features * _DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": [dim, features], "data_offsets": [offset, offset + size]}
        filler.append((name, size))
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks))
        for _name, size in filler:
            left = size
            while left > 0:
                count = min(CHUNK, left)
                f.write(_filler(count, dtype, rng))
                pace.wrote(count)
                left -= count


def write_real_blob(path: str, size: int, seed: int, pace: Pace, prefix: bytes = b"") -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(prefix)
        left = size - len(prefix)
        while left > 0:
            count = min(CHUNK, left)
            f.write(rng.randbytes(count))
            pace.wrote(count)
            left -= count
