"""Settings: TOML under environment, every problem named at start-up, secrets never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobs.config import ConfigError, install_secret_redaction, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads_and_equals_the_defaults():
    """config.example.toml documents the defaults: loading it changes nothing."""
    assert load_settings(REPO / "config.example.toml", env={}) == load_settings(env={})


def test_environment_wins_over_the_toml_file(tmp_path: Path):
    path = write(tmp_path, '[runpod]\nvolume_size_gb = 50\ndata_centers = ["US-KS-2"]\n[s3]\nbucket = "from-file"\n')
    settings = load_settings(path, env={"S3_BUCKET": "from-env", "RUNPOD_VOLUME_SIZE_GB": "80"})
    assert settings.s3.bucket == "from-env"
    assert settings.runpod.volume_size_gb == 80
    assert settings.runpod.data_centers == ["US-KS-2"]


def test_every_invalid_value_is_named_with_its_section(tmp_path: Path):
    path = write(tmp_path, "[runpod]\nvolume_size_gb = 3\n[limits]\nmax_jobs_per_user = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert "RUNPOD_VOLUME_SIZE_GB (runpod.volume_size_gb): Input should be greater than or equal to 10" in message
    assert "LORABOT_MAX_JOBS_PER_USER (limits.max_jobs_per_user)" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LORABOT_MAX_DATASET_MB": "abc"}, "- LORABOT_MAX_DATASET_MB (limits.max_dataset_mb): Input should"),
        ({"DISCORD_GUILD_IDS": "1,2"}, "- DISCORD_GUILD_IDS (discord.guild_ids): cannot be read; it must be"),
        ({"DISCORD_GUILD_IDS": "[1, x]"}, "a JSON list of numbers, e.g. [123456789012345678, 234567890123456789]"),
        ({"DISCORD_TRAIN_ROLES": "trainers"}, "DISCORD_TRAIN_ROLES (discord.train_roles): cannot be read"),
        ({"LORABOT_FETCH_ALLOW_NETWORKS": "10.0.0.0/8"}, 'a JSON list of strings, e.g. ["first", "second"]'),
        ({"LORABOT_HTTP_PORT": "99999"}, "- LORABOT_HTTP_PORT (http_port): Input should be less than or equal to"),
        ({"DATABASE_URL": "x", "LORABOT_TICK_SECONDS": "-1"}, "- LORABOT_TICK_SECONDS (tick_seconds): Input should"),
    ],
)
def test_an_operators_bad_environment_is_named_by_its_variable_without_a_traceback(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert expected in str(caught.value)


def test_the_cli_prints_one_line_per_bad_setting_and_no_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DISCORD_GUILD_IDS": "1,2", "LORABOT_MAX_DATASET_MB": "lots"}
    env["LORABOT_DATA_DIR"] = str(tmp_path)
    env.pop("LORABOT_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "lorabot doctor: invalid configuration:"
    assert [line.split(" ")[1] for line in lines[1:]] == ["DISCORD_GUILD_IDS", "LORABOT_MAX_DATASET_MB"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nonsense = 1\n", "unknown setting(s) in"),
        ("[runpod]\ngpu_fallback = [{gpu_type_id = 'x', cloud = 'CHEAP'}]\n", "runpod.gpu_fallback.0.cloud"),
        ("public_url = 'ftp://x'\n", "public_url"),
        ("[s3]\nbucket = 'b'\naccess_key_id = 'only-one'\n", "must be set together"),
        ("this is not toml", "is not valid TOML"),
    ],
)
def test_bad_config_files_get_a_specific_message(tmp_path: Path, text: str, expected: str):
    with pytest.raises(ConfigError, match=None) as caught:
        load_settings(write(tmp_path, text), env={})
    assert expected in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(env={"LORABOT_CONFIG": str(tmp_path / "nope.toml")})


SECRETS = {
    "DISCORD_TOKEN": "discord-token-value-123",
    "RUNPOD_API_KEY": "rpa_runpodsecret456",
    "S3_BUCKET": "bucket",
    "S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY789",
    "S3_SECRET_ACCESS_KEY": "s3-secret-access-key-000",
    "HF_TOKEN": "hf_huggingfacetoken111",
    "LORABOT_URL_SECRET": "url-signing-secret-222",
}


def test_secrets_are_redacted_in_repr_and_listed_for_log_redaction():
    settings = load_settings(env=SECRETS)
    shown = repr(settings) + str(settings)
    for name, value in SECRETS.items():
        if name != "S3_BUCKET":
            assert value not in shown
            assert value in settings.secret_values()


def test_log_lines_never_carry_a_secret(caplog: pytest.LogCaptureFixture):
    settings = load_settings(env=SECRETS)
    flt = install_secret_redaction(settings)
    try:
        logger = logging.getLogger("lorabot.test")
        with caplog.at_level(logging.INFO):
            logger.info("calling RunPod with %s", SECRETS["RUNPOD_API_KEY"])
            try:
                raise RuntimeError(f"token {SECRETS['HF_TOKEN']} refused")
            except RuntimeError:
                logger.exception("download failed")
        text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert "***" in text
        assert SECRETS["RUNPOD_API_KEY"] not in text and SECRETS["HF_TOKEN"] not in text
    finally:
        logging.getLogger().removeFilter(flt)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(flt)


def test_sandbox_is_the_default_only_without_a_runpod_key():
    assert load_settings(env={}).effective_cloud == "sandbox"
    assert load_settings(env={"RUNPOD_API_KEY": "rpa_x"}).effective_cloud == "runpod"
    assert load_settings(env={"RUNPOD_API_KEY": "rpa_x", "LORABOT_CLOUD": "sandbox"}).effective_cloud == "sandbox"


def test_missing_settings_for_real_pods_are_listed():
    assert [m.split(" ")[0] for m in load_settings(env={}).missing_for_real_pods()] == ["RUNPOD_API_KEY", "S3_BUCKET"]
    assert load_settings(env={"RUNPOD_API_KEY": "k", "S3_BUCKET": "b"}).missing_for_real_pods() == []


def test_rest_v2_is_the_default_api_and_its_address_is_a_setting():
    settings = load_settings(env={"RUNPOD_API_URL": "http://127.0.0.1:9999"})
    assert (settings.runpod.api, settings.runpod.api_url) == ("rest", "http://127.0.0.1:9999")
    assert load_settings(env={"RUNPOD_API": "graphql"}).runpod.api == "graphql"


def test_a_community_gpu_in_the_fallback_is_refused_because_it_cannot_mount_the_volume(tmp_path: Path):
    path = write(tmp_path, '[[runpod.gpu_fallback]]\ngpu_type_id = "NVIDIA GeForce RTX 4090"\ncloud = "COMMUNITY"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "Network Volumes only on Secure Cloud" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("spot = true", "no longer offers spot"),
        ('spot_bid_per_hr = "0.30"', "no longer offers spot"),
        ('cpu_instance_id = "cpu3g-2-8"', "now `cpu_flavor`"),
        ('api_base_url = "https://example.invalid"', "now `api_url`"),
    ],
)
def test_settings_runpod_retired_say_what_replaced_them(tmp_path: Path, line: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[runpod]\n{line}\n"), env={})
    assert expected in str(caught.value)


def test_plan_on_a_link_names_a_bad_fetch_setting_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.delenv("LORABOT_CONFIG", raising=False)
    monkeypatch.setenv("LORABOT_FETCH_MIN_RATE_KB_S", "abc")
    assert main(["plan", "https://example.com/kana.zip"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "refused: dataset link: the link cannot be fetched with these settings" in err
    assert "LORABOT_FETCH_MIN_RATE_KB_S (fetch.min_rate_kb_s)" in err
