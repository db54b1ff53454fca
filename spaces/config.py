"""Server configuration: a strict TOML file (unknown keys and wrong types are errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from spaces.errors import SpacesError


class ConfigError(SpacesError):
    code = "config"


class ServerSection(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./salon-data"
    public_url: str = ""
    log_level: str = "info"


class SpacesSection(msgspec.Struct, forbid_unknown_fields=True):
    allow_create: bool = True
    creation_tokens: list[str] = []


class LimitsSection(msgspec.Struct, forbid_unknown_fields=True):
    max_message_bytes: int = 262_144
    max_record_bytes: int = 16_384
    max_records_per_append: int = 64
    max_envelopes_per_append: int = 2048
    requests_per_second: float = 50.0
    request_burst: int = 200
    join_attempts_per_minute_per_address: int = 30
    join_attempts_per_minute_per_invite: int = 60
    auth_timeout_seconds: float = 10.0
    # chat and stories (spaces/chat.py)
    max_chat_message_bytes: int = 16_384
    max_story_bytes: int = 4_194_304
    max_story_thumb_bytes: int = 131_072
    max_story_meta_bytes: int = 8_192
    messages_per_second_per_member: float = 10.0
    message_burst_per_member: int = 50
    expiry_sweep_seconds: float = 5.0


class ConferenceSection(msgspec.Struct, forbid_unknown_fields=True):
    mesh_max: int = 4
    max_participants: int = 100
    max_signal_bytes: int = 65_536


class Config(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    spaces: SpacesSection = msgspec.field(default_factory=SpacesSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    conference: ConferenceSection = msgspec.field(default_factory=ConferenceSection)


def load_config(path: str | Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
