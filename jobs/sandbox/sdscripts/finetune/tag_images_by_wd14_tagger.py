"""Stand-in for sd-scripts' finetune/tag_images_by_wd14_tagger.py at 48d368fa (standard library only).

Same command line (every option of the real parser, same defaults), same model folder rule
(`<model_dir>/<repo_id with / as _>/`, downloaded only when missing or with --force_download: here that fails, as
it does with the Hub offline), same files read with --onnx (`model.onnx`, `selected_tags.csv` with the header
check), same caption files written (`<image stem><caption_extension>`, tags joined by --caption_separator), the same
log line for an image it cannot load when images go through its dataset class (--max_data_loader_n_workers), and
the same crash without it. It does not run the network: a tag's score for an image comes from the image's bytes
(sha256), except that a general tag the CSV counts at least 1,000,000 times scores 0.99 on every image, the way WD14
gives `1girl`/`solo` to every image of one character. Tests rely on that to see shared tags pruned.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from pathlib import Path

DEFAULT_WD14_TAGGER_REPO = "SmilingWolf/wd-v1-4-convnext-tagger-v2"
CSV_FILE = "selected_tags.csv"
# library/train_util.py IMAGE_EXTENSIONS (the common ones; the real list adds .bmp and upper-case forms).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ALWAYS_COUNT = 1_000_000


def log(level: str, message: str) -> None:
    print(f"{level:<8} {message}", flush=True)


def image_error(path: str) -> str | None:
    """What Pillow would say about a file it cannot open, or None for a PNG/JPEG/WEBP/BMP it can."""
    try:
        head = Path(path).read_bytes()[:16]
    except OSError as exc:
        return str(exc)
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8") or head.startswith(b"BM"):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return None
    return f"cannot identify image file '{path}'"


def score(image_bytes: bytes, tag: str, count: int) -> float:
    if count >= ALWAYS_COUNT:
        return 0.99
    digest = hashlib.sha256(image_bytes + tag.encode()).digest()
    return int.from_bytes(digest[:2], "big") / 65535


def main(args: argparse.Namespace) -> None:
    tokens = args.repo_id.split("/")
    if len(tokens) > 2:
        raise NotImplementedError("the stand-in knows only SmilingWolf-style repos (namespace/name)")
    model_location = os.path.join(args.model_dir, args.repo_id.replace("/", "_"))
    if not os.path.exists(model_location) or args.force_download:
        log("INFO", f"downloading wd14 tagger model from hf_hub. id: {args.repo_id}")
        # The agent runs it with HF_HUB_OFFLINE=1, where hf_hub_download raises for a file not in its cache.
        raise OSError(
            "Cannot find the requested files in the disk cache and outgoing traffic has been disabled."
            " To enable hf.co look-ups and downloads online, set 'local_files_only' to False."
        )
    log("INFO", "using existing wd14 tagger model")
    if not args.onnx:
        raise ModuleNotFoundError("No module named 'tensorflow'")
    onnx_path = os.path.join(model_location, "model.onnx")
    log("INFO", "Running wd14 tagger with onnx")
    log("INFO", f"loading onnx model: {onnx_path}")
    if not os.path.exists(onnx_path):
        raise Exception(
            f"onnx model not found: {onnx_path}, please redownload the model with --force_download"
            " / onnxモデルが見つかりませんでした。--force_downloadで再ダウンロードしてください"
        )
    with open(onnx_path, "rb") as model_file:
        # An ONNX ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08; onnx.load fails otherwise.
        if model_file.read(1) != b"\x08":
            raise Exception(f"Error parsing message with type 'onnx.ModelProto': {onnx_path}")
    log("INFO", "Using onnxruntime providers: ['CPUExecutionProvider']")

    with open(os.path.join(model_location, CSV_FILE), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    assert header[0] == "tag_id" and header[1] == "name" and header[2] == "category", f"unexpected csv format: {header}"
    general = [(row[1], int(row[3]) if len(row) > 3 and row[3].isdigit() else 0) for row in rows if row[2] == "0"]
    character = [(row[1], int(row[3]) if len(row) > 3 and row[3].isdigit() else 0) for row in rows if row[2] == "4"]
    if args.remove_underscore:
        general = [(t.replace("_", " ") if len(t) > 3 else t, n) for t, n in general]
        character = [(t.replace("_", " ") if len(t) > 3 else t, n) for t, n in character]

    root = Path(args.train_data_dir)
    pattern = "**/*" if args.recursive else "*"
    image_paths = sorted(str(p) for p in root.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)
    log("INFO", f"found {len(image_paths)} images.")

    separator = args.caption_separator
    undesired = {t.strip() for t in args.undesired_tags.split(separator.strip()) if t.strip()}
    tag_freq: dict[str, int] = {}
    for path in image_paths:
        error = image_error(path)
        if error is not None:
            if args.max_data_loader_n_workers is None:
                # The real script opens images in its main loop without a try: one bad file ends the run.
                raise OSError(error)
            log("ERROR", f"Could not load image path / 画像を読み込めません: {path}, error: {error}")
            continue
        data = Path(path).read_bytes()
        tags = []
        for tag, count in general:
            if score(data, tag, count) >= args.general_threshold and tag not in undesired:
                tags.append(tag)
        for tag, count in character:
            if score(data, tag, count) >= args.character_threshold and tag not in undesired:
                tags.append(tag)
        for tag in tags:
            tag_freq[tag] = tag_freq.get(tag, 0) + 1
        caption_file = os.path.splitext(path)[0] + args.caption_extension
        with open(caption_file, "w", encoding="utf-8") as f:
            f.write(separator.join(tags) + "\n")
    if args.frequency_tags:
        print("Tag frequencies:")
        for tag, freq in sorted(tag_freq.items(), key=lambda x: x[1], reverse=True):
            print(f"{tag}: {freq}")
    log("INFO", "done!")


def setup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("train_data_dir", type=str)
    parser.add_argument("--repo_id", type=str, default=DEFAULT_WD14_TAGGER_REPO)
    parser.add_argument("--model_dir", type=str, default="wd14_tagger_model")
    parser.add_argument("--force_download", action="store_true")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--max_data_loader_n_workers", type=int, default=None)
    parser.add_argument("--output_path", type=str, default=None)
    parser.add_argument("--caption_extention", type=str, default=None)
    parser.add_argument("--caption_extension", type=str, default=".txt")
    parser.add_argument("--thresh", type=float, default=0.35)
    for category in ("general", "character", "meta", "model", "copyright", "artist"):
        parser.add_argument(f"--{category}_threshold", type=float, default=None)
    parser.add_argument("--recursive", action="store_true")
    parser.add_argument("--remove_underscore", action="store_true")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--undesired_tags", type=str, default="")
    parser.add_argument("--frequency_tags", action="store_true")
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--append_tags", action="store_true")
    parser.add_argument("--use_rating_tags", action="store_true")
    parser.add_argument("--use_rating_tags_as_last_tag", action="store_true")
    parser.add_argument("--use_quality_tags", action="store_true")
    parser.add_argument("--use_quality_tags_as_last_tag", action="store_true")
    parser.add_argument("--character_tags_first", action="store_true")
    parser.add_argument("--always_first_tags", type=str, default=None)
    parser.add_argument("--caption_separator", type=str, default=", ")
    parser.add_argument("--tag_replacement", type=str, default=None)
    parser.add_argument("--character_tag_expand", action="store_true")
    return parser


if __name__ == "__main__":
    parsed = setup_parser().parse_args()
    if parsed.caption_extention is not None:
        parsed.caption_extension = parsed.caption_extention
    for name in ("general", "character", "meta", "model", "copyright", "artist"):
        if getattr(parsed, f"{name}_threshold") is None:
            setattr(parsed, f"{name}_threshold", parsed.thresh)
    if parsed.output_path is not None:
        sys.exit("the stand-in writes caption files only (--output_path is not mirrored)")
    main(parsed)
