"""Which images sd-scripts would train on, and the warnings it prints while finding them.

Follows library/config_util.py (`load_user_config`, `generate_dreambooth_subsets_config_by_subdirs`,
"ignore directory without repeats") and library/train_util.py (`DreamBoothDataset.__init__`: "not directory",
"found directory ... contains N image files", "No caption file found for N images ...").
Buckets are not modelled: batches per dataset = ceil(images x repeats / batch_size).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

try:
    import tomllib as _toml  # Python 3.11+
except ImportError:  # RunPod images may ship Python 3.10
    _toml = None  # type: ignore[assignment]

# library/train_util.py IMAGE_EXTENSIONS (without the optional avif/jxl plugins)
IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"]

Log = Callable[[str, str], None]  # (level, message)


@dataclass
class Subset:
    image_dir: str
    num_repeats: int
    caption_extension: str
    class_tokens: str | None = None
    img_count: int = 0


@dataclass
class Dataset:
    batch_size: int
    resolution: str
    subsets: list[Subset] = field(default_factory=list)

    @property
    def num_train_images(self) -> int:
        return sum(s.img_count * s.num_repeats for s in self.subsets)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_train_images / self.batch_size)


def load_user_config(path: str) -> dict[str, Any]:
    # config_util.load_user_config: same messages, raised as ValueError
    if not os.path.exists(path):
        raise ValueError(f"file not found / ファイルが見つかりません: {path}")
    if not path.lower().endswith(".toml"):
        raise ValueError(f"not supported config file format / 対応していない設定ファイルの形式です: {path}")
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    return _toml.loads(text) if _toml is not None else parse_simple_toml(text)


def parse_simple_toml(text: str) -> dict[str, Any]:
    """The TOML our dataset configs use: [table], [[array.of.tables]], key = scalar or [scalars]."""
    root: dict[str, Any] = {}
    current = root
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            path = line.strip("[]").strip().split(".")
            parent = root
            for part in path[:-1]:
                parent = parent[part][-1] if isinstance(parent[part], list) else parent[part]
            current = {}
            parent.setdefault(path[-1], []).append(current)
        elif line.startswith("["):
            current = root.setdefault(line.strip("[]").strip(), {})
        else:
            key, _, value = line.partition("=")
            current[key.strip()] = _scalar(value.strip())
    return root


def _scalar(value: str) -> Any:
    if value.startswith("[") and value.endswith("]"):
        return [_scalar(v.strip()) for v in value[1:-1].split(",") if v.strip()]
    if value[:1] in "\"'":
        return value[1:-1].encode().decode("unicode_escape") if value[0] == '"' else value[1:-1]
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        return float(value)


def datasets_from_config(config: dict[str, Any], args: Any) -> list[Dataset]:
    """[general] < [[datasets]] < [[datasets.subsets]], falling back to the command line like BlueprintGenerator."""
    general = config.get("general", {})
    datasets = []
    for ds in config.get("datasets", []):
        merged = {**general, **{k: v for k, v in ds.items() if k != "subsets"}}
        dataset = Dataset(
            batch_size=int(merged.get("batch_size", args.train_batch_size)),
            resolution=str(merged.get("resolution", args.resolution)),
        )
        for sub in ds.get("subsets", []):
            values = {**merged, **sub}
            dataset.subsets.append(
                Subset(
                    image_dir=str(values.get("image_dir", "")),
                    num_repeats=int(values.get("num_repeats", 1)),
                    caption_extension=str(values.get("caption_extension", args.caption_extension)),
                    class_tokens=values.get("class_tokens"),
                )
            )
        datasets.append(dataset)
    return datasets


def datasets_from_train_data_dir(args: Any, log: Log) -> list[Dataset]:
    """config_util.generate_dreambooth_subsets_config_by_subdirs: `{repeats}_{class tokens}` folders only."""
    dataset = Dataset(batch_size=args.train_batch_size, resolution=str(args.resolution))
    base = args.train_data_dir
    if base and os.path.isdir(base):
        for name in os.listdir(base):
            if not os.path.isdir(os.path.join(base, name)):
                continue
            tokens = name.split("_")
            try:
                repeats = int(tokens[0])
            except ValueError:
                log("WARNING", f"ignore directory without repeats / 繰り返し回数のないディレクトリを無視します: {name}")
                continue
            if repeats < 1:
                continue
            dataset.subsets.append(
                Subset(os.path.join(base, name), repeats, args.caption_extension, "_".join(tokens[1:]))
            )
    return [dataset]


def scan(datasets: list[Dataset], log: Log) -> None:
    """Count images per subset and warn about missing captions, as DreamBoothDataset does."""
    for dataset in datasets:
        for subset in dataset.subsets:
            if not os.path.isdir(subset.image_dir):
                log("WARNING", f"not directory: {subset.image_dir}")
                continue
            images = sorted(
                os.path.join(subset.image_dir, n)
                for n in os.listdir(subset.image_dir)
                if os.path.splitext(n)[1] in IMAGE_EXTENSIONS
            )
            subset.img_count = len(images)
            log("INFO", f"found directory {subset.image_dir} contains {len(images)} image files")
            missing = [p for p in images if not os.path.isfile(os.path.splitext(p)[0] + subset.caption_extension)]
            if not subset.class_tokens:
                for path in missing:
                    log(
                        "WARNING",
                        "neither caption file nor class tokens are found. use empty caption for "
                        f"{path} / キャプションファイルもclass tokenも見つかりませんでした。空のキャプションを使用します: {path}",  # noqa: E501 - sd-scripts' exact text
                    )
            if missing:
                n = len(missing)
                log(
                    "WARNING",
                    f"No caption file found for {n} images. Training will continue without captions for these images. "
                    f"If class token exists, it will be used. / {n}枚の画像にキャプションファイルが見つかりませんでした。"  # noqa: E501 - sd-scripts' exact text
                    "これらの画像についてはキャプションなしで学習を続行します。class tokenが存在する場合はそれを使います。",  # noqa: E501 - sd-scripts' exact text
                )
                for i, path in enumerate(missing):
                    if i >= 5:
                        log("WARNING", path + f"... and {n - 5} more")
                        break
                    log("WARNING", path)
