"""The stand-in trainer: sd-scripts' `train_network.py` flow without torch, on a scaled clock.

The order of checks, messages and files follows train_network.py `NetworkTrainer.train` at 48d368fa;
architecture checks follow sdxl_train_network.py / flux_train_network.py `assert_extra_args`.
Environment:
- LORABOT_TIME_SCALE: simulated seconds per real second (docs/CONTRACTS.md), default 1.
- LORABOT_STANDIN_STEPS_PER_SECOND: simulated training speed (it/s), default 2.0.
- LORABOT_STANDIN_REAL_SIZES=1: LoRAs and state folders of their real size (parameter count of the architecture's
  LoRA at --network_dim, see _standin_files.py), written at LORABOT_STANDIN_DISK_MB_PER_S (simulated MB/s, default
  200) instead of the default few-KB files; for benchmarks (default off so tests stay fast).
- LORABOT_STANDIN_FAULT: `oom@N`, `nan@N`, `crash@N`, `hang@N` (N = the N-th optimisation step this process runs),
  or `hang_before_samples@E`: silent for good after epoch E's checkpoint and state are saved, before its samples
  (where a pod lost for real leaves an epoch that a resume never samples).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from typing import Any

from _standin_cli import build_parser
from _standin_console import Clock, Console, bar_line
from _standin_dataset import Dataset, datasets_from_config, datasets_from_train_data_dir, load_user_config, scan
from _standin_files import (
    DEFAULT_OPTIMIZER_BYTES_PER_PARAM,
    OPTIMIZER_BYTES_PER_PARAM,
    Pace,
    lora_tensors,
    png_bytes,
    read_safetensors_header,
    real_lora_params,
    safetensors_bytes,
    write_file,
    write_real_lora,
    write_state_dir,
)
from _standin_latents import cache_latents_to_disk
from _standin_tokenizers import load_tokenizers

ARCHITECTURES = {"sdxl_train_network.py": "sdxl", "train_network.py": "sd", "flux_train_network.py": "flux"}
KNOWN_NETWORK_MODULES = {"networks.lora", "networks.lora_flux", "networks.dylora", "networks.oft", "lycoris.kohya"}
SAMPLE_SIM_SECONDS = 1.5  # simulated time to render one sample image
SAVE_SIM_SECONDS = 0.5  # simulated time to write one checkpoint or state


class OutOfMemoryError(RuntimeError):
    """Printed by Python's traceback as `torch.OutOfMemoryError: ...`, like the real one."""


OutOfMemoryError.__module__ = "torch"


class Fault:
    def __init__(self, spec: str) -> None:
        self.kind, self.step = "", 0
        if spec:
            kind, _, step = spec.partition("@")
            if kind not in ("oom", "nan", "crash", "hang", "hang_before_samples") or not step.isdigit():
                raise SystemExit(
                    "LORABOT_STANDIN_FAULT must be oom@N, nan@N, crash@N, hang@N or hang_before_samples@E, "
                    f"got {spec!r}"
                )
            self.kind, self.step = kind, int(step)

    def at(self, step: int) -> str:
        if self.kind == "hang_before_samples":
            return ""  # keyed by epoch: see before_samples
        return self.kind if self.kind and step >= self.step else ""

    def before_samples(self, epoch: int) -> None:
        if self.kind == "hang_before_samples" and epoch == self.step:
            while True:  # stops printing; only a signal ends it
                time.sleep(3600)


def default_if_none(value: str | None, default: str) -> str:
    return default if value is None else value


class LossRecorder:
    """train_util.LossRecorder: moving average over the last epoch's worth of steps."""

    def __init__(self) -> None:
        self.loss_list: list[float] = []
        self.loss_total = 0.0

    def add(self, epoch: int, step: int, loss: float) -> None:
        if epoch == 0:
            self.loss_list.append(loss)
        else:
            while len(self.loss_list) <= step:
                self.loss_list.append(0.0)
            self.loss_total -= self.loss_list[step]
            self.loss_list[step] = loss
        self.loss_total += loss

    @property
    def moving_average(self) -> float:
        return self.loss_total / len(self.loss_list)


class Trainer:
    def __init__(self, script: str, args: Any, console: Console, clock: Clock) -> None:
        self.script = script
        self.arch = ARCHITECTURES[script]
        self.args = args
        self.console = console
        self.clock = clock
        self.fault = Fault(os.environ.get("LORABOT_STANDIN_FAULT", ""))
        self.steps_per_second = float(os.environ.get("LORABOT_STANDIN_STEPS_PER_SECOND", "2.0"))
        if self.steps_per_second <= 0:
            raise SystemExit("LORABOT_STANDIN_STEPS_PER_SECOND must be > 0")
        self.real_sizes = os.environ.get("LORABOT_STANDIN_REAL_SIZES", "") == "1"
        disk_mb_per_s = float(os.environ.get("LORABOT_STANDIN_DISK_MB_PER_S", "200"))
        self.pace = Pace(clock.sleep, disk_mb_per_s * 1_000_000)

    def log(self, level: str, message: str) -> None:
        self.console.log(level, message, self.script)

    # --- dataset and argument checks ------------------------------------------------------------

    def load_datasets(self) -> tuple[list[Dataset], dict[str, Any]]:
        args = self.args
        general: dict[str, Any] = {}
        if args.dataset_config is not None:
            self.log("INFO", f"Loading dataset config from {args.dataset_config}")
            config = load_user_config(args.dataset_config)
            general = config.get("general", {})
            ignored = ["train_data_dir", "reg_data_dir", "in_json"]
            if any(getattr(args, attr) is not None for attr in ignored):
                self.log(
                    "WARNING",
                    "ignoring the following options because config file is found: {0} / "
                    "設定ファイルが利用されるため以下のオプションは無視されます: {0}".format(", ".join(ignored)),
                )
            datasets = datasets_from_config(config, args)
        elif args.in_json is None:
            self.log("INFO", "Using DreamBooth method.")
            datasets = datasets_from_train_data_dir(args, self.log)
        else:
            raise ValueError("stand-in sd-scripts: fine-tuning datasets (--in_json) are not modelled")
        scan(datasets, self.log)
        return datasets, general

    def assert_extra_args(self, general: dict[str, Any]) -> None:
        args = self.args
        enable_bucket = bool(general.get("enable_bucket", args.enable_bucket))
        bucket_reso_steps = int(general.get("bucket_reso_steps", args.bucket_reso_steps))
        if self.arch == "sdxl":
            # library/sdxl_train_util.py verify_sdxl_training_args
            assert not args.v2, "v2 cannot be enabled in SDXL training / SDXL学習ではv2を有効にすることはできません"
            if args.clip_skip is not None:
                self.log("WARNING", "clip_skip will be unexpected / SDXL学習ではclip_skipは動作しません")
            if args.cache_text_encoder_outputs_to_disk and not args.cache_text_encoder_outputs:
                args.cache_text_encoder_outputs = True
                self.log(
                    "WARNING",
                    "cache_text_encoder_outputs is enabled because cache_text_encoder_outputs_to_disk is enabled / "
                    "cache_text_encoder_outputs_to_diskが有効になっているためcache_text_encoder_outputsが有効になりました",
                )
        else:
            # train_network.py NetworkTrainer.assert_extra_args (flux calls it through super() first)
            self._verify_bucket_reso_steps(enable_bucket, bucket_reso_steps, 64)
        if self.arch in ("sdxl", "flux") and args.cache_text_encoder_outputs:
            cacheable = not (
                (args.caption_dropout_rate or 0) > 0
                or args.shuffle_caption
                or (args.token_warmup_step or 0) > 0
                or (args.caption_tag_dropout_rate or 0) > 0
            )
            assert cacheable, (
                "when caching Text Encoder output, either caption_dropout_rate, shuffle_caption, token_warmup_step or "
                "caption_tag_dropout_rate cannot be used / Text Encoderの出力をキャッシュするときはcaption_dropout_rate, "  # noqa: E501 - sd-scripts' exact text
                "shuffle_caption, token_warmup_step, caption_tag_dropout_rateは使えません"
            )
        if self.arch == "sdxl":
            assert args.network_train_unet_only or not args.cache_text_encoder_outputs, (
                "network for Text Encoder cannot be trained with caching Text Encoder outputs / "
                "Text Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません"
            )
        if self.arch == "flux" and args.max_token_length is not None:
            self.log(
                "WARNING",
                "max_token_length is not used in Flux training / max_token_lengthはFluxのトレーニングでは使用されません",  # noqa: E501 - sd-scripts' exact text
            )
        if self.arch in ("sdxl", "flux"):
            self._verify_bucket_reso_steps(enable_bucket, bucket_reso_steps, 32)

    @staticmethod
    def _verify_bucket_reso_steps(enable_bucket: bool, steps: int, min_steps: int) -> None:
        # train_util.BaseDataset.verify_bucket_reso_steps: bucket_reso_steps is None unless buckets are on
        assert not enable_bucket or steps % min_steps == 0, (
            f"bucket_reso_steps is {steps}. it must be divisible by {min_steps}.\n"
            + f"bucket_reso_stepsが{steps}です。{min_steps}で割り切れる必要があります"
        )

    def load_model(self) -> None:
        args = self.args
        path = args.pretrained_model_name_or_path
        if self.arch == "flux":
            # flux_utils.load_flow_model / load_ae / load_clip_l / load_t5xxl open each file with safetensors
            for name in ("pretrained_model_name_or_path", "ae", "clip_l", "t5xxl"):
                value = getattr(args, name)
                if value is None or not os.path.isfile(value):
                    raise FileNotFoundError(2, "No such file or directory", str(value))
            self.log("INFO", f"Loading state dict from {path}")
            return
        # sdxl_train_util._load_target_model: a file is a checkpoint, anything else goes to Diffusers/Hugging Face
        if path is not None and os.path.isfile(path):
            self.log("INFO", f"load StableDiffusion checkpoint: {path}")
            return
        self.log(
            "ERROR",
            "model is not found as a file or in Hugging Face, perhaps file name is wrong? / 指定したモデル名のファイル、"  # noqa: E501 - sd-scripts' exact text
            f"またはHugging Faceのモデルが見つかりません。ファイル名が誤っているかもしれません: {path}",
        )
        raise OSError(
            f"{path} is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'\n"
            "If this is a private repository, make sure to pass a token having permission to this repo either by logging "  # noqa: E501 - sd-scripts' exact text
            "in with `huggingface-cli login` or by passing `token=<your_token>`"
        )

    def import_network(self) -> None:
        module = self.args.network_module
        self.console.print(f"import network module: {module}")
        if module not in KNOWN_NETWORK_MODULES:
            raise ModuleNotFoundError(f"No module named '{module}'")
        if self.arch == "flux" and module != "networks.lora_flux":
            raise ValueError(
                f"stand-in sd-scripts: flux_train_network.py needs --network_module=networks.lora_flux, got {module}"
            )

    # --- training -------------------------------------------------------------------------------

    def train(self) -> int:
        args = self.args
        training_started_at = self.clock.now()
        session_id = random.randint(0, 2**32)
        # train_network.py loads its tokenizers first: the datasets need them.
        load_tokenizers(self.arch, args.tokenizer_cache_dir, self.log)
        datasets, general = self.load_datasets()
        num_train_images = sum(d.num_train_images for d in datasets)
        if num_train_images == 0:
            self.log(
                "ERROR",
                "No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / "
                "画像がありません。引数指定を確認してください（train_data_dirには画像があるフォルダではなく、"
                "画像があるフォルダの親フォルダを指定する必要があります）",
            )
            return 0  # train() simply returns: sd-scripts exits 0 having written nothing
        if args.cache_latents:
            assert not (args.color_aug or args.random_crop), (
                "when caching latents, either color_aug or random_crop cannot be used / "
                "latentをキャッシュするときはcolor_augとrandom_cropは使えません"
            )
        self.assert_extra_args(general)
        self.log("INFO", "preparing accelerator")
        self.load_model()
        if args.cache_latents and args.cache_latents_to_disk:
            cache_latents_to_disk(self.arch, datasets, args.pretrained_model_name_or_path, self.log)
        self.import_network()
        self.console.print("prepare optimizer, data loader etc.")

        batches_per_epoch = sum(d.num_batches for d in datasets)  # len(train_dataloader)
        grad_acc = args.gradient_accumulation_steps
        updates_per_epoch = math.ceil(batches_per_epoch / grad_acc)
        if args.max_train_epochs is not None:
            args.max_train_steps = args.max_train_epochs * updates_per_epoch
            self.console.print(
                f"override steps. steps for {args.max_train_epochs} epochs is / 指定エポックまでのステップ数: "
                f"{args.max_train_steps}"
            )
        steps_from_state = self.resume()
        num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)

        p = self.console.print
        p("running training / 学習開始")
        p(f"  num train images * repeats / 学習画像の数×繰り返し回数: {num_train_images}")
        p("  num validation images * repeats / 学習画像の数×繰り返し回数: 0")
        p("  num reg images / 正則化画像の数: 0")
        p(f"  num batches per epoch / 1epochのバッチ数: {batches_per_epoch}")
        p(f"  num epochs / epoch数: {num_train_epochs}")
        p(f"  batch size per device / バッチサイズ: {', '.join(str(d.batch_size) for d in datasets)}")
        p(f"  gradient accumulation steps / 勾配を合計するステップ数 = {grad_acc}")
        p(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}")

        metadata = self.metadata(
            session_id, training_started_at, datasets, num_train_images, batches_per_epoch, num_train_epochs
        )

        # train_network.py: initial_step / epoch_to_start, including its quirk that global_step restarts at 0
        initial_step = 0
        if args.initial_epoch is not None or args.initial_step is not None:
            if args.initial_step is not None:
                initial_step = args.initial_step
            else:
                initial_step = (args.initial_epoch - 1) * updates_per_epoch
        elif steps_from_state is not None:
            initial_step = steps_from_state
        if initial_step > 0:
            assert args.max_train_steps > initial_step, (
                "max_train_steps should be greater than initial step / max_train_stepsは初期ステップより大きい必要があります: "  # noqa: E501 - sd-scripts' exact text
                f"{args.max_train_steps} vs {initial_step}"
            )
        epoch_to_start = 0
        if initial_step > 0:
            if args.skip_until_initial_step:
                self.log("INFO", f"skipping {initial_step} steps / {initial_step}ステップをスキップします")
                initial_step *= grad_acc
                epoch_to_start = initial_step // updates_per_epoch
            else:
                epoch_to_start = initial_step // updates_per_epoch
                initial_step = 0

        global_step = 0
        self.sample_images(0, 0)  # --sample_at_first
        if initial_step > 0:
            for skip_epoch in range(epoch_to_start):
                self.log("INFO", f"skipping epoch {skip_epoch + 1} because initial_step (multiplied) is {initial_step}")
                initial_step -= batches_per_epoch
            global_step = initial_step

        bar_total = args.max_train_steps - initial_step
        bar_done = 0
        bar_started = bar_printed = self.clock.now()
        recorder = LossRecorder()
        steps_run = 0
        loss = 0.0
        self.console.bar_update(bar_line("steps", 0, bar_total, 0.0, {}))
        for epoch in range(epoch_to_start, num_train_epochs):
            p(f"\nepoch {epoch + 1}/{num_train_epochs}\n")
            metadata["ss_epoch"] = str(epoch + 1)
            for step in range(updates_per_epoch):
                steps_run += 1
                fault = self.fault.at(steps_run)
                self.inject(fault, steps_run)
                self.clock.sleep(1.0 / self.steps_per_second)
                global_step += 1
                bar_done += 1
                loss = math.nan if fault == "nan" else self.loss_at(epoch * updates_per_epoch + step, epoch)
                recorder.add(epoch=epoch, step=step, loss=loss)
                bar_printed = self.clock.now()
                self.console.bar_update(
                    bar_line(
                        "steps", bar_done, bar_total, bar_printed - bar_started, {"avr_loss": recorder.moving_average}
                    )
                )
                if fault == "nan":
                    self.console.bar_close()
                    print(
                        f"[stand-in] loss is nan at step {global_step}; stopping (LORABOT_STANDIN_FAULT=nan)",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                self.sample_images(None, global_step)
                # progress_bar.unpause(): tqdm moves its start by the time since its last print, so the bar's
                # elapsed and rate leave sampling out (step-wise saves come after it and do count, as in sd-scripts)
                bar_started += self.clock.now() - bar_printed
                bar_printed = self.clock.now()
                if args.save_every_n_steps is not None and global_step % args.save_every_n_steps == 0:
                    name = f"{default_if_none(args.output_name, 'at')}-step{global_step:08d}"
                    self.save_model(name, metadata, global_step, epoch)
                    if args.save_state:
                        self.log("INFO", "")
                        self.log("INFO", f"saving state at step {global_step}")
                        self.save_state(f"{name}-state", epoch + 1, global_step)
                if global_step >= args.max_train_steps:
                    break
            saving = (
                args.save_every_n_epochs is not None
                and (epoch + 1) % args.save_every_n_epochs == 0
                and (epoch + 1) < num_train_epochs
            )
            if saving:
                name = f"{default_if_none(args.output_name, 'epoch')}-{epoch + 1:06d}"
                self.save_model(name, metadata, global_step, epoch + 1)
                self.remove_old_epoch(epoch + 1)
                if args.save_state:
                    self.log("INFO", "")
                    self.log("INFO", f"saving state at epoch {epoch + 1}")
                    self.save_state(f"{name}-state", epoch + 1, global_step)
                    self.remove_old_state(epoch + 1)
            self.fault.before_samples(epoch + 1)
            self.sample_images(epoch + 1, global_step)
            # progress_bar.unpause() after the epoch's saves and samples: none of it shows in the bar's time
            bar_started += self.clock.now() - bar_printed
            bar_printed = self.clock.now()

        self.console.bar_close()
        metadata["ss_training_finished_at"] = str(self.clock.now())
        if args.save_state or args.save_state_on_train_end:
            self.log("INFO", "")
            self.log("INFO", "saving last state.")
            self.save_state(f"{default_if_none(args.output_name, 'last')}-state", num_train_epochs, global_step)
        self.save_model(default_if_none(args.output_name, "last"), metadata, global_step, num_train_epochs)
        self.log("INFO", "model saved.")
        return 0

    def resume(self) -> int | None:
        """accelerate.load_state + train_network.py load_model_hook: the step count in train_state.json."""
        state_dir = self.args.resume
        if not state_dir:
            return None
        self.log("INFO", f"resume training from local state: {state_dir}")
        if not os.path.isdir(state_dir):
            raise ValueError(f"Tried to find {state_dir} but folder does not exist")
        read_safetensors_header(os.path.join(state_dir, "model.safetensors"))  # FileNotFoundError if torn
        for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
            if not os.path.isfile(os.path.join(state_dir, name)):
                raise FileNotFoundError(2, "No such file or directory", os.path.join(state_dir, name))
        state_file = os.path.join(state_dir, "train_state.json")
        if not os.path.exists(state_file):
            return None
        with open(state_file, encoding="utf-8") as f:
            data = json.load(f)
        self.log("INFO", f"load train state from {state_file}: {data}")
        return int(data["current_step"])

    def inject(self, fault: str, step: int) -> None:
        if fault == "hang":
            while True:  # stops printing; only a signal ends it
                time.sleep(3600)
        if fault == "crash":
            raise RuntimeError(
                f"stand-in trainer crashed at step {step} (LORABOT_STANDIN_FAULT=crash@{self.fault.step})"
            )
        if fault == "oom":
            raise OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 1.25 GiB. GPU 0 has a total capacity of 23.65 GiB of which "
                "812.31 MiB is free. Process 4242 has 22.85 GiB memory in use. Of the allocated memory 21.93 GiB is "
                "allocated by PyTorch, and 512.40 MiB is reserved by PyTorch but unallocated. If reserved but unallocated "  # noqa: E501 - sd-scripts' exact text
                "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
                "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
            )

    def loss_at(self, position: int, epoch: int) -> float:
        rng = random.Random(position * 7919 + (self.args.seed or 0))
        return 0.03 + 0.09 * math.exp(-0.35 * epoch) + rng.uniform(-0.01, 0.01)

    # --- outputs --------------------------------------------------------------------------------

    def save_dtype(self) -> str:
        precision = self.args.save_precision or self.args.mixed_precision
        return {"fp16": "F16", "bf16": "BF16"}.get(precision, "F32")

    def network_bytes(self, seed: int, metadata: dict[str, str]) -> bytes:
        args = self.args
        dim = args.network_dim or 4  # networks/lora.py create_network: network_dim defaults to 4
        alpha = args.network_alpha if args.network_alpha is not None else 1.0
        return safetensors_bytes(lora_tensors(self.arch, dim, alpha, seed), self.save_dtype(), metadata)

    def save_model(self, name: str, metadata: dict[str, str], steps: int, epoch_no: int) -> None:
        args = self.args
        if args.save_model_as != "safetensors":
            raise ValueError(f"stand-in sd-scripts writes safetensors only, got --save_model_as={args.save_model_as}")
        os.makedirs(args.output_dir, exist_ok=True)
        ckpt_file = os.path.join(args.output_dir, name + ".safetensors")
        self.console.print(f"\nsaving checkpoint: {ckpt_file}")
        metadata["ss_training_finished_at"] = str(self.clock.now())
        metadata["ss_steps"] = str(steps)
        metadata["ss_epoch"] = str(epoch_no)
        to_save = dict(metadata)
        if args.no_metadata:
            to_save = {k: metadata[k] for k in MINIMUM_KEYS if k in metadata}
        to_save.update(self.sai_metadata(name))
        self.clock.sleep(SAVE_SIM_SECONDS)
        if self.real_sizes:
            self.write_real_network(ckpt_file, self.save_dtype(), to_save, epoch_no * 1000 + steps)
        else:
            write_file(ckpt_file, self.network_bytes(epoch_no * 1000 + steps, to_save))

    def write_real_network(self, path: str, dtype: str, metadata: dict[str, str], seed: int) -> None:
        args = self.args
        dim = args.network_dim or 4
        alpha = args.network_alpha if args.network_alpha is not None else 1.0
        unet_only = bool(args.network_train_unet_only)
        write_real_lora(path, self.arch, dim, alpha, unet_only, dtype, metadata, seed, self.pace)

    def remove_old_epoch(self, epoch_no: int) -> None:
        args = self.args
        if args.save_last_n_epochs is None:
            return
        remove_no = epoch_no - args.save_every_n_epochs * args.save_last_n_epochs
        old = os.path.join(args.output_dir, f"{default_if_none(args.output_name, 'epoch')}-{remove_no:06d}.safetensors")
        if remove_no >= 0 and os.path.exists(old):
            self.console.print(f"removing old checkpoint: {old}")
            os.remove(old)

    def remove_old_state(self, epoch_no: int) -> None:
        """train_util.save_and_remove_state_on_epoch_end: after the new state is written (never before), the state
        `save_every_n_epochs x N` epochs older goes, N = --save_last_n_epochs_state, else --save_last_n_epochs.
        Only that one folder: an older one (left by an earlier run) stays, as does `<name>-state`."""
        args = self.args
        last_n = args.save_last_n_epochs_state if args.save_last_n_epochs_state else args.save_last_n_epochs
        if last_n is None:
            return
        remove_no = epoch_no - args.save_every_n_epochs * last_n
        old = os.path.join(args.output_dir, f"{default_if_none(args.output_name, 'epoch')}-{remove_no:06d}-state")
        if os.path.exists(old):
            self.log("INFO", f"removing old state: {old}")
            shutil.rmtree(old)

    def save_state(self, dir_name: str, current_epoch: int, current_step: int) -> None:
        state_dir = os.path.join(self.args.output_dir, dir_name)
        self.log(
            "INFO",
            f"save train state to {os.path.join(state_dir, 'train_state.json')} at epoch {current_epoch} "
            f"step {current_step}",
        )
        self.clock.sleep(SAVE_SIM_SECONDS)
        if not self.real_sizes:
            write_state_dir(state_dir, self.network_bytes(current_step, {}), current_epoch, current_step)
            return
        # accelerate saves the trained network in fp32 and the optimizer's moments beside it
        params = real_lora_params(self.arch, self.args.network_dim or 4, bool(self.args.network_train_unet_only))
        per_param = OPTIMIZER_BYTES_PER_PARAM.get(
            (self.args.optimizer_type or "AdamW").lower(), DEFAULT_OPTIMIZER_BYTES_PER_PARAM
        )
        write_state_dir(
            state_dir,
            lambda path: self.write_real_network(path, "F32", {}, current_step),
            current_epoch,
            current_step,
            optimizer_bytes=params * per_param,
            pace=self.pace,
        )

    def sample_images(self, epoch: int | None, steps: int) -> None:
        """train_util.sample_images_common: when to sample, and the exact file names."""
        args = self.args
        if steps == 0:
            if not args.sample_at_first:
                return
        else:
            if args.sample_every_n_steps is None and args.sample_every_n_epochs is None:
                return
            if args.sample_every_n_epochs is not None:
                if epoch is None or epoch % args.sample_every_n_epochs != 0:
                    return
            elif steps % args.sample_every_n_steps != 0 or epoch is not None:
                return
        self.log("INFO", "")
        self.log("INFO", f"generating sample images at step / サンプル画像生成 ステップ: {steps}")
        if not args.sample_prompts or not os.path.isfile(args.sample_prompts):
            self.log("ERROR", f"No prompt file / プロンプトファイルがありません: {args.sample_prompts}")
            return
        save_dir = os.path.join(args.output_dir, "sample")
        os.makedirs(save_dir, exist_ok=True)
        for i, prompt in enumerate(load_prompts(args.sample_prompts)):
            width = max(64, int(prompt.get("width", 512)) // 8 * 8)
            height = max(64, int(prompt.get("height", 512)) // 8 * 8)
            seed = prompt.get("seed")
            self.log("INFO", f"prompt: {prompt.get('prompt', '')}")
            self.log("INFO", f"height: {height}")
            self.log("INFO", f"width: {width}")
            self.clock.sleep(SAMPLE_SIM_SECONDS)
            ts_str = time.strftime("%Y%m%d%H%M%S", time.localtime(self.clock.now()))
            num_suffix = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
            seed_suffix = "" if seed is None else f"_{seed}"
            prefix = "" if args.output_name is None else args.output_name + "_"
            filename = f"{prefix}{num_suffix}_{i:02d}_{ts_str}{seed_suffix}.png"
            image_seed = hash_seed(f"{epoch}|{steps}|{i}|{prompt.get('prompt', '')}")
            write_file(os.path.join(save_dir, filename), png_bytes(width, height, image_seed))

    # --- metadata -------------------------------------------------------------------------------

    def metadata(
        self,
        session_id: int,
        started_at: float,
        datasets: list[Dataset],
        num_train_images: int,
        batches_per_epoch: int,
        num_train_epochs: int,
    ) -> dict[str, str]:
        """train_network.py's metadata dict (values made str), the keys a LoRA browser reads."""
        args = self.args
        te_lr = args.text_encoder_lr
        meta: dict[str, Any] = {
            "ss_session_id": session_id,
            "ss_training_started_at": started_at,
            "ss_output_name": args.output_name,
            "ss_learning_rate": args.learning_rate,
            "ss_text_encoder_lr": (te_lr[0] if len(te_lr) == 1 else te_lr) if te_lr else te_lr,
            "ss_unet_lr": args.unet_lr,
            "ss_num_train_images": num_train_images,
            "ss_num_validation_images": 0,
            "ss_num_reg_images": 0,
            "ss_num_batches_per_epoch": batches_per_epoch,
            "ss_num_epochs": num_train_epochs,
            "ss_gradient_checkpointing": args.gradient_checkpointing,
            "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
            "ss_max_train_steps": args.max_train_steps,
            "ss_lr_warmup_steps": args.lr_warmup_steps,
            "ss_lr_scheduler": args.lr_scheduler,
            "ss_network_module": args.network_module,
            "ss_network_dim": args.network_dim,
            "ss_network_alpha": args.network_alpha,
            "ss_network_dropout": args.network_dropout,
            "ss_mixed_precision": args.mixed_precision,
            "ss_full_fp16": bool(args.full_fp16),
            "ss_v2": bool(args.v2),
            "ss_base_model_version": {"sdxl": "sdxl_base_v1-0", "flux": "flux1"}.get(
                self.arch, "sd_v2" if args.v2 else "sd_v1"
            ),
            "ss_clip_skip": args.clip_skip,
            "ss_max_token_length": args.max_token_length,
            "ss_cache_latents": bool(args.cache_latents),
            "ss_seed": args.seed,
            "ss_noise_offset": args.noise_offset,
            "ss_min_snr_gamma": args.min_snr_gamma,
            "ss_optimizer": args.optimizer_type or "AdamW",
            "ss_max_grad_norm": args.max_grad_norm,
            "ss_caption_dropout_rate": args.caption_dropout_rate,
            "ss_loss_type": args.loss_type,
            "ss_sd_scripts_commit_hash": "48d368fa",
        }
        if args.dataset_config is not None:
            meta["ss_datasets"] = json.dumps(
                [
                    {
                        "batch_size_per_device": d.batch_size,
                        "num_train_images": d.num_train_images,
                        "resolution": d.resolution,
                        "subsets": [
                            {
                                "img_count": s.img_count,
                                "num_repeats": s.num_repeats,
                                "image_dir": os.path.basename(s.image_dir),
                            }
                            for s in d.subsets
                        ],
                    }
                    for d in datasets
                ]
            )
        else:
            meta["ss_batch_size_per_device"] = args.train_batch_size
            meta["ss_resolution"] = args.resolution
            meta["ss_dataset_dirs"] = json.dumps(
                {
                    os.path.basename(s.image_dir): {"n_repeats": s.num_repeats, "img_count": s.img_count}
                    for d in datasets
                    for s in d.subsets
                }
            )
        if args.network_args:
            meta["ss_network_args"] = json.dumps(dict(a.split("=", 1) for a in args.network_args if "=" in a))
        model = args.pretrained_model_name_or_path
        if model is not None:
            if os.path.exists(model):
                meta["ss_sd_model_hash"] = model_hash(model)
                model = os.path.basename(model)
            meta["ss_sd_model_name"] = model
        return {k: str(v) for k, v in meta.items()}

    def sai_metadata(self, title: str) -> dict[str, str]:
        # library/sai_model_spec.py build_metadata: the modelspec.* keys next to ss_*
        arch = {"sdxl": "stable-diffusion-xl-v1-base", "flux": "flux-1-dev", "sd": "stable-diffusion-v1"}[self.arch]
        return {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": f"{arch}/lora",
            "modelspec.implementation": "https://github.com/kohya-ss/sd-scripts",
            "modelspec.title": self.args.metadata_title or title,
            "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.clock.now())),
        }


# train_util.SS_METADATA_MINIMUM_KEYS
MINIMUM_KEYS = [
    "ss_v2",
    "ss_base_model_version",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_args",
]


def model_hash(filename: str) -> str:
    """train_util.model_hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    import hashlib

    with open(filename, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]


def hash_seed(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def load_prompts(path: str) -> list[dict[str, Any]]:
    """train_util.load_prompts + line_to_prompt_dict for .txt and .json prompt files."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    else:
        with open(path, encoding="utf-8") as f:
            items = [line.strip() for line in f if len(line.strip()) > 0 and line[0] != "#"]
    prompts = []
    for item in items:
        prompts.append(line_to_prompt_dict(item) if isinstance(item, str) else dict(item))
    return prompts


def line_to_prompt_dict(line: str) -> dict[str, Any]:
    import re

    parts = line.split(" --")
    prompt: dict[str, Any] = {"prompt": parts[0]}
    patterns = [
        ("width", r"w (\d+)", int),
        ("height", r"h (\d+)", int),
        ("seed", r"d (\d+)", int),
        ("sample_steps", r"s (\d+)", int),
        ("scale", r"l ([\d\.]+)", float),
        ("guidance_scale", r"g ([\d\.]+)", float),
        ("negative_prompt", r"n (.+)", str),
    ]
    for part in parts[1:]:
        for key, pattern, convert in patterns:
            m = re.match(pattern, part, re.IGNORECASE)
            if m:
                prompt[key] = convert(m.group(1))
                break
    return prompt


def main(script: str) -> None:
    parser = build_parser(script)
    args = parser.parse_args()
    clock = Clock.from_env()
    trainer = Trainer(script, args, Console(clock, script), clock)
    sys.exit(trainer.train())
