"""Server configuration: a strict TOML file (unknown keys and wrong types are errors)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from protocol.errors import ErrorCode, ProtocolError


class ConfigError(ProtocolError):
    code = ErrorCode.CONFIG


class ServerSection(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./salon-data"
    public_url: str = ""
    web_dir: str = ""  # the built web app; "": the one in the package (spaces/web_dist)
    log_level: str = "info"
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed: rate limits then count the client they name. A server
    # behind one needs public_url (the origin clients sign is the proxy's, not ours).
    trusted_proxies: list[str] = []


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True):
    """``/metrics`` (Prometheus): aggregate counters only (``spaces/metrics.py``)."""

    enabled: bool = False
    # "": answered only to a direct loopback peer (a scraper on the host, not via a proxy);
    # set: answered to any peer sending ``Authorization: Bearer TOKEN``.
    token: str = ""


class StorageSection(msgspec.Struct, forbid_unknown_fields=True):
    # "": SQLite in [server] data_dir (salon.db); "sqlite:PATH" or a bare path: that SQLite
    # file; "postgresql://…": a PostgreSQL database (spaces/storage/engines.py)
    url: str = ""


class SpacesSection(msgspec.Struct, forbid_unknown_fields=True):
    allow_create: bool = True
    creation_tokens: list[str] = []


class LimitsSection(msgspec.Struct, forbid_unknown_fields=True):
    max_message_bytes: int = 262_144
    max_record_bytes: int = 16_384
    max_records_per_append: int = 64
    max_envelopes_per_append: int = 2048
    # the record chain (spaces/membership.py): pages of GetRecords, per-member quotas
    records_page_max: int = 1024
    records_page_bytes: int = 1_048_576
    records_per_minute_per_member: float = 30.0
    record_burst_per_member: int = 200
    profiles_per_hour_per_member: float = 20.0
    profile_burst_per_member: int = 10
    record_clock_skew_seconds: int = 600
    requests_per_second: float = 50.0
    request_burst: int = 200
    join_attempts_per_minute_per_address: int = 30
    join_attempts_per_minute_per_invite: int = 60
    auth_timeout_seconds: float = 10.0
    # what one client address may hold or start (an anonymous internet, spaces/limits.py)
    websockets_per_address: int = 128
    space_creations_per_hour_per_address: int = 20
    max_queued_bytes_per_connection: int = 8_388_608
    # chat and stories (spaces/chat.py)
    max_chat_message_bytes: int = 16_384
    max_story_bytes: int = 4_194_304
    max_story_thumb_bytes: int = 131_072
    max_story_meta_bytes: int = 8_192
    # story uploads staged in memory until posted
    max_staged_story_bytes_per_space: int = 8_388_608
    max_staged_stories_per_space: int = 8
    max_staged_story_bytes: int = 33_554_432
    max_staged_stories: int = 256
    messages_per_second_per_member: float = 10.0
    message_burst_per_member: int = 50
    expiry_sweep_seconds: float = 5.0


class ConferenceSection(msgspec.Struct, forbid_unknown_fields=True):
    mesh_max: int = 4
    mesh_return_max: int = 3  # an auto call on the SFU goes back to a mesh at this size
    max_participants: int = 100
    max_signal_bytes: int = 65_536
    # Several instances: the call seats held through an instance not heard from (its
    # heartbeat) for this long are freed by the others; until then its clients may come
    # back through another instance and take their seats over unseen.
    seat_grace_seconds: float = 10.0
    # The joins, resumes and actions one member may send in one call (the room's log keeps
    # them until the call ends: spaces/call_log.py); then its requests are refused.
    max_inputs_per_member: int = 2000


class SfuSection(msgspec.Struct, forbid_unknown_fields=True):
    """The SFU: an in-process node under ``salon serve`` and standalone ``salon sfu`` nodes
    (``spaces/sfu_registry.py`` and ``sfu/standalone.py`` say how they meet)."""

    enabled: bool = True  # salon serve runs a node in-process
    node_secret: str = ""  # shared by the server and its standalone nodes; "": none accepted
    max_offer_bytes: int = 32_768
    request_timeout_seconds: float = 10.0
    mesh_grace_seconds: float = 10.0  # after a call moves back to a mesh, drop SFU links
    # salon sfu (a standalone node): it registers with every one of server_urls (each
    # salon serve instance of a deployment), or with server_url when that list is empty.
    server_url: str = "http://127.0.0.1:8080"
    server_urls: list[str] = []
    # An instance's channel dropped: its participants' media keeps flowing this long while
    # they rejoin through another instance, then the node lets them go.
    orphan_grace_seconds: float = 30.0
    node_name: str = ""  # "": HOSTNAME:PORT
    host: str = "127.0.0.1"
    port: int = 8081
    ice_hosts: list[str] = []  # addresses offered for media; []: every interface
    # The address clients reach the node's media at, when it is behind a 1:1 NAT (a cloud
    # VM's public IP): its ICE host candidates carry this address instead of the local one.
    public_address: str = ""
    load_report_seconds: float = 1.0


class IceSection(msgspec.Struct, forbid_unknown_fields=True):
    """STUN and TURN servers handed to members (``spaces/handlers/ice.py``,
    ``protocol/ice_wire.py``)."""

    stun_urls: list[str] = []
    turn_urls: list[str] = []
    turn_secret: str = ""  # coturn's static-auth-secret (use-auth-secret)
    turn_ttl_seconds: int = 86_400
    # "Relay calls": tell every client to connect only through the TURN server (hides the
    # participants' IP addresses from each other; needs turn_urls).
    relay_only: bool = False


MIN_NODE_SECRET = 32
MIN_TURN_SECRET = 16
MAX_TURN_TTL = 7 * 86_400


class Config(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    storage: StorageSection = msgspec.field(default_factory=StorageSection)
    spaces: SpacesSection = msgspec.field(default_factory=SpacesSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    conference: ConferenceSection = msgspec.field(default_factory=ConferenceSection)
    sfu: SfuSection = msgspec.field(default_factory=SfuSection)
    ice: IceSection = msgspec.field(default_factory=IceSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)


def _ice_problem(ice: IceSection) -> str | None:
    for key, urls, schemes in (
        ("stun_urls", ice.stun_urls, ("stun:", "stuns:")),
        ("turn_urls", ice.turn_urls, ("turn:", "turns:")),
    ):
        for url in urls:
            if not url.startswith(schemes) or len(url) <= len(url.split(":")[0]) + 1:
                return f"ice.{key}: {url!r} is not a {' or '.join(schemes)} URL"
    if ice.turn_urls and not ice.turn_secret:
        return "ice.turn_secret must be set when ice.turn_urls is (coturn's static-auth-secret)"
    if ice.relay_only and not ice.turn_urls:
        return "ice.relay_only needs a TURN server (ice.turn_urls and ice.turn_secret)"
    if ice.turn_secret and not ice.turn_urls:
        return "ice.turn_urls must list the TURN server when ice.turn_secret is set"
    if ice.turn_secret and len(ice.turn_secret) < MIN_TURN_SECRET:
        return f"ice.turn_secret must be at least {MIN_TURN_SECRET} characters"
    if not 60 <= ice.turn_ttl_seconds <= MAX_TURN_TTL:
        return f"ice.turn_ttl_seconds must be between 60 and {MAX_TURN_TTL}"
    return None


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MIN_METRICS_TOKEN = 16


def _http_url_problem(key: str, url: str) -> str | None:
    """An origin-like URL: http(s)://HOST[:PORT], no path beyond "/", no query."""
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 — raises on a bad port
    except ValueError:
        return f"{key}: {url!r} is not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"{key}: {url!r} is not an http:// or https:// URL with a host"
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
        return f"{key}: {url!r} must be a bare origin (scheme, host, port), no path or query"
    return None


def _port_problem(key: str, port: int) -> str | None:
    if not 0 <= port <= 65_535:
        return f"{key}: {port} is not a port (0-65535)"
    return None


def _server_problem(config: Config) -> str | None:
    server, metrics = config.server, config.metrics
    if server.log_level.lower() not in LOG_LEVELS:
        return f"server.log_level: {server.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
    problem = _port_problem("server.port", server.port) or _port_problem(
        "sfu.port", config.sfu.port
    )
    if problem:
        return problem
    if server.public_url and (problem := _http_url_problem("server.public_url", server.public_url)):
        return problem
    if problem := _http_url_problem("sfu.server_url", config.sfu.server_url):
        return problem
    for url in config.sfu.server_urls:
        if problem := _http_url_problem("sfu.server_urls", url):
            return problem
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            return f"server.trusted_proxies: {proxy!r} is not an IP address or network"
    if server.trusted_proxies and not server.public_url:
        return (
            "server.public_url is required behind a reverse proxy (server.trusted_proxies): "
            "clients sign the origin they reach, https://… at the proxy"
        )
    if metrics.token and len(metrics.token) < MIN_METRICS_TOKEN:
        return f"metrics.token must be at least {MIN_METRICS_TOKEN} characters (or empty)"
    return None


def _ranges_problem(config: Config) -> str | None:
    """Every limit is a positive number; sizes and counts that must hold something do."""
    for name in config.limits.__struct_fields__:
        value = getattr(config.limits, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            return f"limits.{name}: {value} must be greater than 0"
    conf = config.conference
    if conf.max_participants < 2:
        return f"conference.max_participants: {conf.max_participants} must be at least 2"
    if conf.max_signal_bytes < 1024:
        return f"conference.max_signal_bytes: {conf.max_signal_bytes} must be at least 1024"
    if conf.max_inputs_per_member < 10:
        return f"conference.max_inputs_per_member: {conf.max_inputs_per_member} must be at least 10"
    if conf.seat_grace_seconds < 4:  # at least two heartbeats (2 s apart)
        return f"conference.seat_grace_seconds: {conf.seat_grace_seconds} must be at least 4"
    return None


def config_problem(config: Config) -> str | None:
    """What is wrong with values that are well-typed but out of range, malformed or do not
    fit together, if anything: one line naming the key."""
    if problem := _server_problem(config) or _ranges_problem(config):
        return problem
    conf, sfu = config.conference, config.sfu
    limits = config.limits
    if min(limits.websockets_per_address, limits.space_creations_per_hour_per_address) < 1:
        return "limits.websockets_per_address and space_creations_per_hour_per_address must be >= 1"
    if limits.max_queued_bytes_per_connection < 65_536:
        return "limits.max_queued_bytes_per_connection must be at least 65536"
    if not (
        limits.max_story_bytes
        <= limits.max_staged_story_bytes_per_space
        <= limits.max_staged_story_bytes
    ):
        return (
            "limits: max_story_bytes <= max_staged_story_bytes_per_space "
            "<= max_staged_story_bytes is required (one story must fit)"
        )
    if not 1 <= limits.max_staged_stories_per_space <= limits.max_staged_stories:
        return "limits: 1 <= max_staged_stories_per_space <= max_staged_stories is required"
    if conf.mesh_max < 1:
        return "conference.mesh_max must be at least 1"
    if not 0 <= conf.mesh_return_max < conf.mesh_max:
        return "conference.mesh_return_max must be at least 0 and below conference.mesh_max"
    if sfu.node_secret and len(sfu.node_secret) < MIN_NODE_SECRET:
        return f"sfu.node_secret must be at least {MIN_NODE_SECRET} characters (or empty)"
    if sfu.max_offer_bytes < 1024 or sfu.request_timeout_seconds <= 0:
        return "sfu.max_offer_bytes must be at least 1024 and sfu.request_timeout_seconds > 0"
    if sfu.load_report_seconds <= 0 or sfu.mesh_grace_seconds < 0:
        return "sfu.load_report_seconds must be > 0 and sfu.mesh_grace_seconds >= 0"
    if sfu.orphan_grace_seconds < 0:
        return "sfu.orphan_grace_seconds must be >= 0"
    if sfu.public_address and not _is_ip_address(sfu.public_address):
        return f"sfu.public_address: {sfu.public_address!r} is not an IP address"
    return _ice_problem(config.ice)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    problem = config_problem(config)
    if problem is not None:
        raise ConfigError(f"config file {path}: {problem}")
    return config
