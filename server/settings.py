"""Server settings: a TOML file, overridden by environment variables, overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import (
    DEFAULT_EMBEDDING_CACHE_BYTES,
    ModelConfig,
    ModelDefaults,
    ModelLimits,
    OtherSizes,
    PrecisionPolicy,
    demo_model_config,
)
from scheduler.fleet import FleetSettings
from server.auth import ApiKey, Role
from server.caller_identity import trusted_networks
from server.tls import TlsConfigError, server_credentials
from server.validation import MIN_SIDE, SIDE_MULTIPLE

DEFAULT_ADDRESS = "127.0.0.1:50051"


class ConfigError(Exception):
    """The configuration is malformed; the message says where."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``pointillist serve`` needs.

    ``inventory`` says where devices come from: ``auto`` (NVML when a GPU answers, else the
    CPU), ``nvml``, ``cpu``, or the path of a simulated-inventory TOML file.
    """

    address: str = DEFAULT_ADDRESS
    models: tuple[ModelConfig, ...] = field(default_factory=lambda: (demo_model_config(),))
    default_model: str | None = None
    drain_grace_s: float = 30.0
    # Past this a client connection gets GOAWAY and re-resolves (server.connection_age); 0: never.
    max_connection_age_s: float = 300.0
    # The transport's cap on a request message; None: the largest model's max_request_bytes
    # (each model then holds its requests to its own, server.submission).
    max_request_bytes: int | None = None
    max_response_bytes: int = 64 << 20
    inventory: str = "auto"
    scheduler: FleetSettings = field(default_factory=FleetSettings)
    # Prometheus text endpoint on this port (on the address's host); 0: none.
    metrics_port: int = 0
    # Result cache (server.storage): "memory" (in-process, the default), "off", or a redis:// URL.
    result_cache: str = "memory"
    result_cache_max_mib: float = 256.0  # in-process total; for Redis, the largest entry
    result_cache_ttl_s: float = 3600.0
    # Shared job space (scheduler.shared_jobs): "memory" (this server's jobs only, the default)
    # or a redis:// URL that every server of a deployment shares. A server that runs a job
    # renews a lease on it every job_lease_s / 3; past job_lease_s without one, the job ends
    # UNAVAILABLE for everyone.
    job_store: str = "memory"
    job_lease_s: float = 10.0
    # Output store (server.output_store): "" (none), file:///a/folder or s3://bucket/prefix.
    output_store: str = ""
    output_inline: bool = True  # images in the reply too; false: URLs only
    output_s3_endpoint_url: str = ""  # for S3-compatible stores other than AWS
    # The browser port (server/web_server.py): Connect and gRPC-Web for the same services, and
    # the page at / when web_page. None: off. CORS allows web_allowed_origins ("*": any).
    web_address: str | None = None
    web_allowed_origins: tuple[str, ...] = ()
    web_page: bool = True
    # Open StreamGenerate / Generate / WatchJob calls one caller may hold (0: no limit).
    max_streams_per_caller: int = 32
    # WatchJob streams on one job (0: no limit); past it RESOURCE_EXHAUSTED with RetryInfo.
    max_watchers_per_job: int = 256
    reflection: bool = True
    # PEM files: a certificate and key turn TLS on; a client CA makes it mutual TLS.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # API keys ([[server.api_keys]]): none means authentication is off.
    api_keys: tuple[ApiKey, ...] = ()
    # More keys from a TOML file of [[api_keys]] tables (a mounted Kubernetes Secret, say).
    api_keys_file: str | None = None
    # Proxies (CIDRs) whose x-forwarded-for names the caller when keys are off
    # (server.caller_identity); none: the peer's IP is the caller.
    trusted_proxies: tuple[str, ...] = ()

    def request_limit(self) -> int:
        """The transport's cap on a request message (gRPC and the browser port)."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return max(model.limits.max_request_bytes for model in self.models)


_SERVER_KEYS = {f.name for f in dataclasses.fields(ServerSettings)} - {"models", "scheduler"}
# The [scheduler] table speaks GiB and milliseconds; FleetSettings holds bytes and seconds.
_SCHEDULER_UNITS = {
    "reserve_gib": ("reserve_bytes", 2**30),
    "batch_window_ms": ("batch_window_s", 1e-3),
}
_SCHEDULER_KEYS = (
    {f.name for f in dataclasses.fields(FleetSettings)}
    - {"reserve_bytes", "batch_window_s", "worker_env"}
) | set(_SCHEDULER_UNITS)
_MODEL_KEYS = {
    "id",
    "source",
    "precision",
    "device",
    "revision",
    "limits",
    "defaults",
    "min_replicas",
    "max_replicas",
    "embedding_cache_mib",
    "compile",
    "compile_sizes",
    "compile_other_sizes",
}


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> ServerSettings:
    """Settings from the file (``POINTILLIST_CONFIG`` when no path), the environment, then flags.

    Environment: ``POINTILLIST_ADDRESS``, ``POINTILLIST_DEFAULT_MODEL``. ``overrides`` holds
    the CLI flags that were given (server keys, or ``model_source`` / ``model_id`` /
    ``precision`` / ``device`` to serve one model instead of the file's list).
    """
    config_path = config_path or (
        Path(environ["POINTILLIST_CONFIG"]) if environ.get("POINTILLIST_CONFIG") else None
    )
    document = _read_toml(config_path) if config_path else {}
    unknown = set(document) - {"server", "scheduler", "models"}
    if unknown:
        raise ConfigError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    server = dict(document.get("server", {}))
    _reject_unknown(server, _SERVER_KEYS, "[server]")
    if "POINTILLIST_ADDRESS" in environ:
        server["address"] = environ["POINTILLIST_ADDRESS"]
    if "POINTILLIST_DEFAULT_MODEL" in environ:
        server["default_model"] = environ["POINTILLIST_DEFAULT_MODEL"]
    overrides = dict(overrides or {})
    models = [_model_config(entry, index) for index, entry in enumerate(document.get("models", []))]
    single = _single_model_override(overrides)
    if single is not None:
        models = [single]
        server["default_model"] = single.id
    server.update({key: value for key, value in overrides.items() if key in _SERVER_KEYS})
    if "web_allowed_origins" in server:  # a TOML list
        server["web_allowed_origins"] = tuple(server["web_allowed_origins"])
    if "trusted_proxies" in server:  # a TOML list
        server["trusted_proxies"] = tuple(server["trusted_proxies"])
    server["api_keys"] = api_keys(
        [*server.get("api_keys", ()), *_api_keys_from_file(server.get("api_keys_file"))]
    )
    scheduler = dict(document.get("scheduler", {}))
    scheduler.update({key: value for key, value in overrides.items() if key in _SCHEDULER_KEYS})
    server["scheduler"] = scheduler_settings(scheduler)
    if not models:
        models = [demo_model_config()]
    ids = [model.id for model in models]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"model ids must be unique, got {ids}")
    try:
        settings = ServerSettings(models=tuple(models), **server)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    if settings.default_model is not None and settings.default_model not in ids:
        raise ConfigError(f"default_model {settings.default_model!r} is not one of {ids}")
    try:
        server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except TlsConfigError as exc:
        raise ConfigError(f"[server]: {exc}") from exc
    try:
        trusted_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"[server]: {exc}") from exc
    _check_storage(settings)
    if settings.job_store != "memory" and not settings.job_store.startswith(
        ("redis://", "rediss://")
    ):
        raise ConfigError(
            f"[server]: job_store {settings.job_store!r}: use memory or a redis:// URL"
        )
    if settings.job_lease_s <= 0:
        raise ConfigError("[server]: job_lease_s must be above 0")
    return settings


def _check_storage(settings: ServerSettings) -> None:
    from server.storage import check_storage_settings

    try:
        check_storage_settings(settings)
    except ValueError as exc:
        raise ConfigError(f"[server]: {exc}") from exc


def _api_keys_from_file(path: str | None) -> list[Any]:
    """The ``[[api_keys]]`` tables of ``api_keys_file`` (none without a file)."""
    if not path:
        return []
    document = _read_toml(Path(path))
    _reject_unknown(document, {"api_keys"}, f"api_keys_file {path}")
    entries = document.get("api_keys", [])
    if not isinstance(entries, list):
        raise ConfigError(f"api_keys_file {path}: api_keys must be an array of tables")
    return entries


def api_keys(entries: Any) -> tuple[ApiKey, ...]:
    """``[[server.api_keys]]`` entries (``name``, ``role``, ``sha256``) as ApiKeys."""
    if isinstance(entries, tuple) and all(isinstance(entry, ApiKey) for entry in entries):
        return entries
    keys = []
    for index, entry in enumerate(entries):
        where = f"[[server.api_keys]] #{index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table with name, role and sha256")
        _reject_unknown(entry, {"name", "role", "sha256"}, where)
        name, digest = str(entry.get("name", "")), str(entry.get("sha256", "")).lower()
        if not name:
            raise ConfigError(f"{where}: 'name' is required (it is the caller's identity)")
        if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
            raise ConfigError(
                f"{where} ({name}): 'sha256' must be 64 hex digits, as `pointillist keygen` prints"
            )
        try:
            role = Role(entry.get("role", "user"))
        except ValueError:
            raise ConfigError(f"{where} ({name}): role must be 'user' or 'admin'") from None
        keys.append(ApiKey(name=name, role=role, sha256=digest))
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        raise ConfigError("[[server.api_keys]]: names must be unique (each is a caller)")
    return tuple(keys)


def scheduler_settings(table: Mapping[str, Any]) -> FleetSettings:
    """FleetSettings from a ``[scheduler]`` table (GiB and milliseconds where it says so)."""
    _reject_unknown(table, _SCHEDULER_KEYS, "[scheduler]")
    values = {}
    for key, value in table.items():
        name, scale = _SCHEDULER_UNITS.get(key, (key, 1))
        values[name] = value * scale if scale != 1 else value
    if "reserve_bytes" in values:
        values["reserve_bytes"] = int(values["reserve_bytes"])
    try:
        return FleetSettings(**values)
    except TypeError as exc:
        raise ConfigError(f"[scheduler]: {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")


def _model_config(entry: Mapping[str, Any], index: int) -> ModelConfig:
    where = f"[[models]] #{index + 1}"
    _reject_unknown(entry, _MODEL_KEYS, where)
    if not entry.get("id"):
        raise ConfigError(f"{where}: 'id' is required")
    base = demo_model_config(entry["id"]) if entry.get("source", "demo") == "demo" else None
    limits = base.limits if base else ModelLimits()
    defaults = base.defaults if base else ModelDefaults()
    try:
        limits = dataclasses.replace(limits, **entry.get("limits", {}))
        defaults = dataclasses.replace(defaults, **entry.get("defaults", {}))
        precision = PrecisionPolicy(entry.get("precision", "auto"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} ({entry['id']}): {exc}") from exc
    min_replicas = entry.get("min_replicas", 1)
    max_replicas = entry.get("max_replicas")
    if not isinstance(min_replicas, int) or min_replicas < 0:
        raise ConfigError(f"{where}: min_replicas must be a whole number >= 0")
    if max_replicas is not None and (not isinstance(max_replicas, int) or max_replicas < 1):
        raise ConfigError(f"{where}: max_replicas must be a whole number >= 1")
    if max_replicas is not None and max_replicas < min_replicas:
        raise ConfigError(f"{where}: max_replicas is below min_replicas")
    embedding_cache_mib = entry.get("embedding_cache_mib", DEFAULT_EMBEDDING_CACHE_BYTES / 2**20)
    if not isinstance(embedding_cache_mib, int | float) or embedding_cache_mib < 0:
        raise ConfigError(f"{where}: embedding_cache_mib must be a number >= 0")
    compile_sizes, other_sizes = _compile_options(entry, where, limits)
    return ModelConfig(
        id=str(entry["id"]),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        source=str(entry.get("source", "demo")),
        precision=precision,
        device=str(entry.get("device", "auto")),
        revision=entry.get("revision"),
        limits=limits,
        defaults=defaults,
        embedding_cache_bytes=int(embedding_cache_mib * 2**20),
        compile=entry.get("compile", False),
        compile_sizes=compile_sizes,
        compile_other_sizes=other_sizes,
    )


def _compile_options(
    entry: Mapping[str, Any], where: str, limits: ModelLimits
) -> tuple[tuple[tuple[int, int], ...], OtherSizes]:
    """``compile_sizes`` (``[[width, height], ...]``) and ``compile_other_sizes``, checked."""
    if not isinstance(entry.get("compile", False), bool):
        raise ConfigError(f"{where}: compile must be true or false")
    if not entry.get("compile", False):
        given = {"compile_sizes", "compile_other_sizes"} & set(entry)
        if given:
            raise ConfigError(f"{where}: {', '.join(sorted(given))} need compile = true")
    sizes = []
    raw_sizes = entry.get("compile_sizes", [])
    if not isinstance(raw_sizes, list):
        raise ConfigError(f"{where}: compile_sizes must be a list of [width, height] pairs")
    for size in raw_sizes:
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        ):
            raise ConfigError(f"{where}: compile_sizes must be [width, height] pairs, got {size}")
        width, height = size
        if not (
            width % SIDE_MULTIPLE == 0
            and height % SIDE_MULTIPLE == 0
            and MIN_SIDE <= width <= limits.max_width
            and MIN_SIDE <= height <= limits.max_height
        ):
            raise ConfigError(
                f"{where}: compile_sizes {width}x{height} is not a size the model accepts "
                f"(multiples of {SIDE_MULTIPLE}, {MIN_SIDE} to "
                f"{limits.max_width}x{limits.max_height})"
            )
        sizes.append((width, height))
    try:
        other_sizes = OtherSizes(entry.get("compile_other_sizes", "uncompiled"))
    except ValueError:
        raise ConfigError(
            f"{where}: compile_other_sizes must be 'uncompiled' or 'refuse'"
        ) from None
    return tuple(dict.fromkeys(sizes)), other_sizes


def _single_model_override(overrides: dict[str, Any]) -> ModelConfig | None:
    source = overrides.pop("model_source", None)
    model_id = overrides.pop("model_id", None)
    precision = overrides.pop("precision", None)
    device = overrides.pop("device", None)
    if source is None and precision is None and device is None:
        return None
    source = source or "demo"
    entry: dict[str, Any] = {"id": model_id or _id_from_source(source), "source": source}
    if precision is not None:
        entry["precision"] = precision
    if device is not None:
        entry["device"] = device
    return _model_config(entry, 0)


def _id_from_source(source: str) -> str:
    return Path(source.rstrip("/")).name or source
