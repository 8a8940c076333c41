"""Settings: a TOML file (optional) under environment variables, validated once at start-up.

Environment variables win over the TOML file so an operator can keep secrets out of the file. Secrets are
`SecretStr` (their repr is `**********`) and `install_secret_redaction()` scrubs their values from every log record.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

CONFIG_ENV = "LORABOT_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; str() lists every problem, one per line, without secret values."""


class _Section(BaseSettings):
    """A settings section: environment first, then values from the TOML file (passed as init kwargs)."""

    model_config = SettingsConfigDict(extra="forbid", env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


class DiscordSettings(_Section):
    model_config = SettingsConfigDict(env_prefix="DISCORD_", extra="forbid", env_ignore_empty=True)

    token: SecretStr | None = None
    # Unset in production; the test world and the sandbox point discord.py at a local server.
    api_base: str | None = None
    gateway_url: str | None = None
    # Sync commands to these guilds at start-up (instant) instead of globally (up to an hour).
    guild_ids: list[int] = Field(default_factory=list)
    train_roles: list[str] = Field(default_factory=list, description="empty = everyone may /train")
    admin_roles: list[str] = Field(default_factory=lambda: ["lorabot-admin"])
    max_attachment_mb: int = Field(default=500, ge=1)


class GpuChoice(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    gpu_type_id: str
    cloud: Literal["COMMUNITY", "SECURE"] = "SECURE"

    @model_validator(mode="after")
    def _secure_only(self) -> GpuChoice:
        if self.cloud != "SECURE":
            # Every lorabot GPU pod trains on the Network Volume the CPU pod prepared, and RunPod mounts volumes
            # only on Secure Cloud pods: a community choice could never run (RunPod refuses it).
            raise ValueError(
                f"{self.gpu_type_id} in COMMUNITY cloud cannot be used: RunPod mounts Network Volumes only on "
                'Secure Cloud pods, and lorabot trains on the volume. Use cloud = "SECURE".'
            )
        return self


class RunpodSettings(_Section):
    model_config = SettingsConfigDict(env_prefix="RUNPOD_", extra="forbid", env_ignore_empty=True)

    api_key: SecretStr | None = None
    # "rest": RunPod's REST API v2 (the default). "graphql": the runpod SDK's GraphQL, a fallback while RunPod
    # still serves it (it retires GraphQL in early 2027).
    api: Literal["rest", "graphql"] = "rest"
    # RunPod's API address; the default is RunPod's own (REST: https://api.runpod.io, GraphQL: the SDK's).
    api_url: str | None = None
    data_centers: list[str] = Field(default_factory=lambda: ["EU-RO-1"], min_length=1)
    volume_size_gb: int = Field(default=30, ge=10, le=4000)
    # A job whose estimated need (jobs/estimate.py volume_size_gb) exceeds the volume grows it up to this; above it
    # the job is refused before any pod (RunPod's largest Network Volume is 4096 GB).
    volume_max_gb: int = Field(default=500, ge=10, le=4096)
    volume_mount_path: str = "/workspace"
    # Seed 000's CPU pod: 2 vCPU / 8 GB at $0.08/h is the cpu3g flavor (4 GB per vCPU) with 2 vCPUs.
    cpu_flavor: str = Field(default="cpu3g", pattern=r"^[a-z0-9]{2,16}$")
    cpu_vcpus: int = Field(default=2, ge=2, le=64)
    cpu_image: str = "runpod/base:1.0.2-ubuntu2204"
    gpu_image: str = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
    # RunPod caps a CPU pod's container disk per vCPU; the GPU pod gets the same size.
    container_disk_gb: int = Field(default=20, ge=5)
    # Only what can mount the volume: the secure 4090 (seed 000), then other 24 GB secure cards under the cap.
    gpu_fallback: list[GpuChoice] = Field(
        default_factory=lambda: [
            GpuChoice(gpu_type_id="NVIDIA GeForce RTX 4090", cloud="SECURE"),
            GpuChoice(gpu_type_id="NVIDIA GeForce RTX 3090", cloud="SECURE"),
            GpuChoice(gpu_type_id="NVIDIA RTX A5000", cloud="SECURE"),
        ],
        min_length=1,
    )
    min_gpu_memory_gb: int = 24
    max_gpu_price_per_hr: Decimal = Decimal("0.80")
    # Create the GPU pod when the CPU stage's remaining time <= observed GPU start-up + this margin.
    reserve_margin_s: int = Field(default=120, ge=0)
    gpu_startup_guess_s: int = Field(default=120, ge=0)
    low_stock_threshold: int = Field(default=2, ge=0)
    no_stock_deadline_s: int = Field(default=1800, ge=0)
    startup_timeout_s: int = Field(default=1200, ge=60)
    status_stale_s: int = Field(default=600, ge=30)

    @model_validator(mode="before")
    @classmethod
    def _retired_settings(cls, data: Any) -> Any:
        """Settings of the GraphQL era get a message saying what replaced them, not pydantic's 'extra input'."""
        if isinstance(data, dict):
            retired = {
                "spot": "RunPod no longer offers spot (interruptible) pods; remove `spot`",
                "spot_bid_per_hr": "RunPod no longer offers spot (interruptible) pods; remove `spot_bid_per_hr`",
                "cpu_instance_id": '`cpu_instance_id` is now `cpu_flavor` (e.g. "cpu3g") and `cpu_vcpus` (e.g. 2)',
                "api_base_url": "`api_base_url` is now `api_url` (env RUNPOD_API_URL)",
            }
            found = [message for key, message in retired.items() if key in data]
            if found:
                raise ValueError("; ".join(found))
        return data


class S3Settings(_Section):
    model_config = SettingsConfigDict(env_prefix="S3_", extra="forbid", env_ignore_empty=True)

    bucket: str | None = None
    prefix: str = "lorabot/"
    endpoint_url: str | None = None
    region: str = "auto"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    link_lifetime_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    keep_epoch_checkpoints_days: int = Field(default=14, ge=0)


class TokenSettings(_Section):
    model_config = SettingsConfigDict(extra="forbid", env_ignore_empty=True)

    hf_token: SecretStr | None = None
    civitai_token: SecretStr | None = None


class LimitsSettings(_Section):
    model_config = SettingsConfigDict(env_prefix="LORABOT_", extra="forbid", env_ignore_empty=True)

    max_dataset_mb: int = Field(default=2048, ge=1)
    max_jobs_per_user: int = Field(default=2, ge=1)
    max_concurrent_gpu_jobs: int = Field(default=2, ge=1)
    monthly_budget_user_usd: Decimal = Decimal("10")
    monthly_budget_team_usd: Decimal = Decimal("50")
    job_wall_time_h: Decimal = Decimal("6")
    # /try and the test window (issue 15). Minutes the training GPU pod stays up after training to answer /try in
    # seconds (LORABOT_TEST_WINDOW_MIN; 0 = no window); a /train may ask for 0..test_window_max_min instead.
    test_window_min: int = Field(default=0, ge=0, le=24 * 60)
    test_window_max_min: int = Field(default=60, ge=0, le=24 * 60)
    # A /try pod stays this long after its last request, so the next /try on the job shares it (LORABOT_TRY_LINGER_S).
    try_linger_s: int = Field(default=300, ge=0, le=3600)


class FetchSettings(_Section):
    """Datasets that arrive as links or through the upload page (section `fetch`, env `LORABOT_FETCH_*`)."""

    model_config = SettingsConfigDict(env_prefix="LORABOT_FETCH_", extra="forbid", env_ignore_empty=True)

    # Plain http lets anyone on the path swap the zip; only for operators who know their network.
    allow_http: bool = False
    # Networks the SSRF guard lets through although they are private (e.g. ["127.0.0.1/32"] for tests or a
    # LAN file server). Empty in production.
    allow_networks: list[str] = Field(default_factory=list)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    # A whole download (redirects included) and its minimum average rate, judged once read_timeout_s of body has
    # passed: a server that trickles a byte just inside the read timeout would otherwise hold the download (and its
    # temp file) forever. 0 kB/s turns the rate check off; the deadline always holds.
    total_timeout_s: float = Field(default=3600.0, gt=0)
    min_rate_kb_s: float = Field(default=50.0, ge=0)
    max_redirects: int = Field(default=5, ge=0, le=10)
    progress_interval_s: float = Field(default=3.0, gt=0)
    # Upload page links: how long a link from /upload stays valid.
    upload_link_lifetime_s: int = Field(default=30 * 60, ge=60, le=24 * 3600)


class Settings(_Section):
    model_config = SettingsConfigDict(env_prefix="LORABOT_", extra="forbid", env_ignore_empty=True)

    data_dir: Path = Path("data")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    cloud: Literal["runpod", "sandbox"] | None = None
    public_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8750, ge=0, le=65535)
    # Signs local artifact and upload-page URLs; generated into the data folder when unset.
    url_secret: SecretStr | None = None
    tick_seconds: float = Field(default=10.0, gt=0)
    # How long the orchestrator lease lasts unrenewed (LORABOT_LEASE_SECONDS): a standby bot on the same database
    # takes over this long (plus a tick) after the leader died. At least three ticks, so a live leader never loses it.
    lease_seconds: float = Field(default=30.0, gt=0)
    # Simulated seconds per real second of the sandbox cloud (LORABOT_SANDBOX_TIME_SCALE).
    sandbox_time_scale: float = Field(default=60.0, gt=0, le=10_000)
    log_level: str = "INFO"

    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    runpod: RunpodSettings = Field(default_factory=RunpodSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// behind a proxy)")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _s3_keys_come_together(self) -> Settings:
        if self.s3.bucket and (self.s3.access_key_id is None) != (self.s3.secret_access_key is None):
            raise ValueError("s3.access_key_id and s3.secret_access_key must be set together")
        return self

    @property
    def effective_cloud(self) -> Literal["runpod", "sandbox"]:
        """The sandbox is the default without a RunPod key and is never chosen silently when a key is set."""
        if self.cloud is not None:
            return self.cloud
        return "runpod" if self.runpod.api_key is not None else "sandbox"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'lorabot.db').resolve()}"

    def missing_for_real_pods(self) -> list[str]:
        """What an operator still has to set before lorabot can rent real pods (empty when nothing is missing)."""
        missing = []
        if self.runpod.api_key is None:
            missing.append("RUNPOD_API_KEY (a RunPod API key with pod and volume rights)")
        if self.s3.bucket is None and self.public_url is None:
            missing.append(
                "S3_BUCKET (+ S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_ENDPOINT_URL for R2), or LORABOT_PUBLIC_URL "
                "so pods can reach the bot's own artifact server"
            )
        return missing

    def secret_values(self) -> list[str]:
        """Every configured secret value, for log redaction and the security tests."""
        secrets = [
            self.discord.token,
            self.runpod.api_key,
            self.s3.access_key_id,
            self.s3.secret_access_key,
            self.tokens.hf_token,
            self.tokens.civitai_token,
            self.url_secret,
        ]
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


_SECTIONS: dict[str, type[_Section]] = {
    "discord": DiscordSettings,
    "runpod": RunpodSettings,
    "s3": S3Settings,
    "tokens": TokenSettings,
    "limits": LimitsSettings,
    "fetch": FetchSettings,
}


def load_settings(config_path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Reads the TOML file (`LORABOT_CONFIG` or `config_path`) and the environment; raises ConfigError."""
    environ = os.environ if env is None else env
    path = config_path or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_SECTIONS) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    saved = _swap_environ(env)
    problems: list[str] = []
    try:
        sections: dict[str, Any] = {}
        for name, cls in _SECTIONS.items():
            try:
                sections[name] = cls(**raw.pop(name, {}))
            except ValidationError as exc:
                problems.extend(_describe(exc, cls, prefix=f"{name}."))
            except SettingsError as exc:
                problems.append(_describe_unparsed(exc, cls, prefix=f"{name}."))
        if not problems:
            try:
                return Settings(**raw, **sections)
            except ValidationError as exc:
                problems.extend(_describe(exc, Settings))
            except SettingsError as exc:
                problems.append(_describe_unparsed(exc, Settings))
        raise ConfigError("\n".join(["invalid configuration:", *problems]))
    finally:
        _restore_environ(saved)


def _swap_environ(env: dict[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    return saved


def _restore_environ(saved: dict[str, str] | None) -> None:
    if saved is not None:
        os.environ.clear()
        os.environ.update(saved)


def _describe(exc: ValidationError, section: type[_Section], prefix: str = "") -> list[str]:
    """One line per problem, naming the environment variable and the config-file key it can come from."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"])
        where = _setting_name(section, str(error["loc"][0]), prefix + key) if error["loc"] else prefix.rstrip(".")
        lines.append(f"- {where or '(top level)'}: {error['msg']}")
    return lines


_UNPARSED_FIELD = re.compile(r'field "(\w+)"')


def _describe_unparsed(exc: SettingsError, section: type[_Section], prefix: str = "") -> str:
    """pydantic-settings reads list and table settings from the environment as JSON and raises before validating:
    say which setting, and the form it takes."""
    match = _UNPARSED_FIELD.search(str(exc))
    field = match.group(1) if match else ""
    where = _setting_name(section, field, prefix + field) if field else prefix.rstrip(".") or "(top level)"
    annotation = str(section.model_fields[field].annotation) if field in section.model_fields else ""
    if "list[int]" in annotation:
        expected = "a JSON list of numbers, e.g. [123456789012345678, 234567890123456789]"
    elif "list" in annotation:
        expected = 'a JSON list of strings, e.g. ["first", "second"]'
    elif "dict" in annotation:
        expected = 'a JSON object, e.g. {"key": "value"}'
    else:
        expected = "a value of the documented form"
    return f"- {where}: cannot be read; it must be {expected}"


def _setting_name(section: type[_Section], field: str, key: str) -> str:
    """`LORABOT_MAX_DATASET_MB (limits.max_dataset_mb)`: what the operator may have set, in both places."""
    info = section.model_fields.get(field)
    alias = info.validation_alias if info is not None and isinstance(info.validation_alias, str) else None
    env = alias or (str(section.model_config.get("env_prefix", "")) + field).upper()
    return f"{env} ({key})"


class SecretRedactingFilter(logging.Filter):
    """Replaces every configured secret value in a log record's final message with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = redact(message, self._secrets)
        if redacted != message or record.exc_info:
            record.msg, record.args = redacted, None
            if record.exc_info:
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = redact(text, self._secrets)
        return True


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def install_secret_redaction(settings: Settings) -> SecretRedactingFilter:
    """Adds the filter to every root handler (and to the root logger for handlers added later)."""
    flt = SecretRedactingFilter(settings.secret_values())
    root = logging.getLogger()
    root.addFilter(flt)
    for handler in root.handlers:
        handler.addFilter(flt)
    return flt
