"""`lorabot plan` end to end on seed 000's dataset shape; refusals exit 2 and leave nothing on disk."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bot.cli import main
from tests.jobs.data.character_zip import write_character_zip

SEED_ARGS = ["--trigger", "kanachan", "--class-word", "1girl", "--repeats", "10", "--epochs", "10"]


@pytest.fixture
def seed_zip(tmp_path: Path) -> Path:
    return write_character_zip(tmp_path / "kanachan.zip")


def _totals(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\w+) \|.*\*\*\$([\d.]+)\*\* \|$", text, re.M)}


@pytest.fixture(autouse=True)
def no_runpod_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key `lorabot plan` prices with the built-in table; tests that ask RunPod set one."""
    for name in ("RUNPOD_API_KEY", "RUNPOD_API", "RUNPOD_API_URL", "LORABOT_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _temp_leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("lorabot-plan-*")}


def _assert_seed_000_plan(out: str) -> None:
    assert "Steps: 5,900" in out
    assert "--caption_extension=.txt" in out
    for flag in (
        "--sample_prompts={job_dir}/sample_prompts.txt",
        "--sample_every_n_epochs=1",
        "--sample_sampler=euler_a",
    ):
        assert flag in out
    assert "sdxl_train_network.py" in out and "Preset sdxl-character" in out
    # Secure Cloud only: the GPU pod trains on the Network Volume, which RunPod mounts only on Secure Cloud pods.
    totals = _totals(out)
    assert set(totals) == {"secure"}
    assert abs(totals["secure"] - 0.75) <= 0.75 * 0.20
    assert "community" not in out and "spot" not in out
    assert "Prices: built-in prices (RunPod could not be asked: no RUNPOD_API_KEY set)." in out


def test_plan_prints_seed_000s_steps_flags_and_secure_cost(seed_zip: Path, capsys) -> None:
    before = _temp_leftovers()
    assert main(["plan", str(seed_zip), *SEED_ARGS]) == 0
    out = capsys.readouterr().out
    _assert_seed_000_plan(out)
    assert "== Dataset" in out and "== Notices" in out
    assert _temp_leftovers() == before
    assert sorted(p.name for p in seed_zip.parent.iterdir()) == ["kanachan.zip"]


def test_plan_runs_as_the_installed_console_script(seed_zip: Path) -> None:
    script = Path(sys.executable).with_name("lorabot")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    done = subprocess.run([*argv, "plan", str(seed_zip), *SEED_ARGS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _assert_seed_000_plan(done.stdout)


def test_plan_json_has_args_files_steps_and_integer_costs(seed_zip: Path, capsys) -> None:
    assert main(["plan", str(seed_zip), *SEED_ARGS, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["steps"] == 5900 and plan["script"] == "sdxl_train_network.py"
    assert "--caption_extension=.txt" in plan["args"]
    assert set(plan["files"]) == {"dataset.toml", "sample_prompts.txt"}
    assert set(plan["costs_usd_micros"]) == {"secure"}
    secure = plan["costs_usd_micros"]["secure"]
    assert secure["total"] == secure["volume"] + secure["cpu_pod"] + secure["gpu_pod"]
    assert plan["prices"] == {
        "source": "built-in prices (RunPod could not be asked: no RUNPOD_API_KEY set)",
        "live": False,
        "age_s": None,
    }


def test_plan_asks_runpod_for_live_prices_when_a_key_is_set(
    seed_zip: Path, capsys, monkeypatch: pytest.MonkeyPatch, make_runpod_emulator
) -> None:
    emulator = make_runpod_emulator(time_scale=600.0)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    monkeypatch.setenv("RUNPOD_API_URL", emulator.base_url)
    monkeypatch.setenv("RUNPOD_API", "graphql")  # the emulator speaks RunPod's GraphQL
    emulator.set_stock("NVIDIA GeForce RTX 4090", "SECURE", 1)
    assert main(["plan", str(seed_zip), *SEED_ARGS]) == 0
    out = capsys.readouterr().out
    assert "Secure Cloud stock: Low" in out
    assert "Prices: live RunPod prices, less than a minute old." in out

    assert main(["plan", str(seed_zip), *SEED_ARGS, "--built-in-prices"]) == 0
    assert "Prices: built-in prices." in capsys.readouterr().out


def test_plan_says_so_when_runpod_cannot_be_asked(
    seed_zip: Path, capsys, monkeypatch: pytest.MonkeyPatch, make_runpod_emulator
) -> None:
    emulator = make_runpod_emulator(time_scale=600.0)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    monkeypatch.setenv("RUNPOD_API_URL", emulator.base_url)
    monkeypatch.setenv("RUNPOD_API", "graphql")
    emulator.fail_next(5, 500)
    assert main(["plan", str(seed_zip), *SEED_ARGS]) == 0
    out = capsys.readouterr().out
    assert "Prices: built-in prices (RunPod could not be asked: Something went wrong." in out
    assert abs(_totals(out)["secure"] - 0.75) <= 0.75 * 0.20


def test_spot_is_no_longer_an_option(seed_zip: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", str(seed_zip), "--spot"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --spot" in capsys.readouterr().err


def test_a_refused_plan_exits_2_with_every_reason(seed_zip: Path, capsys) -> None:
    code = main(["plan", str(seed_zip), *SEED_ARGS, "--base-model", "flux1-dev", "--sample-prompt", "a --n b"])
    assert code == 2
    err = capsys.readouterr().err
    assert "lorabot plan: refused:" in err
    assert "  - base model flux1-dev is a flux model but preset sdxl-character trains sdxl" in err
    assert "  - sample prompt 1 contains ' --'" in err


def test_a_bad_dataset_exits_2_and_leaves_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notazip.zip"
    bad.write_bytes(b"hello")
    before = _temp_leftovers()
    assert main(["plan", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("lorabot plan: refused: dataset: ")
    assert _temp_leftovers() == before
    assert [p.name for p in tmp_path.iterdir()] == ["notazip.zip"]


def test_a_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(tmp_path / "nope.zip")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_bad_numbers_are_argument_errors_with_the_value(seed_zip: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", str(seed_zip), "--epochs", "ten"])
    assert exit_info.value.code == 2
    assert "'ten' is not a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "module"), [("run", "bot.launcher"), ("demo", "jobs.sandbox.demo")])
def test_run_and_demo_delegate_or_say_they_are_not_built(
    command: str, module: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    fake = types.ModuleType(module)
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    assert main([command, "--flag"]) == 0
    assert calls == [["--flag"]]
    monkeypatch.setitem(sys.modules, module, None)  # import now fails as if the module were missing
    assert main([command]) == 1
    assert capsys.readouterr().err == f"lorabot: {module} is not built yet\n"
