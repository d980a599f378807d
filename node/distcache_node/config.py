"""Node configuration: one dataclass, filled from defaults < YAML file < DISTCACHE_* env < flags."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value a user gave is wrong; the message says which and why."""


def parse_size(value: str | int) -> int:
    """Parse '256MiB', '1g', '1048576' into bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"size must not be negative: {value}")
        return value
    match = _SIZE_RE.match(str(value))
    multiplier = _SIZE_UNITS.get((match.group(2) or "").lower()) if match else None
    if match is None or multiplier is None:  # the pattern also lets through 'ib' and 'i'
        raise ConfigError(f"not a size: {value!r} (examples: 1048576, 512KiB, 256MiB, 1GiB)")
    try:
        return int(float(match.group(1)) * multiplier)
    except OverflowError:  # hundreds of digits: float is inf
        raise ConfigError(f"size too large: {value!r}") from None


def parse_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """'10.0.0.0/8, 192.168.1.7, fd00::/8' -> networks (a bare address is a /32 or /128)."""
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxies: not an IP network: {item!r} (a CIDR such "
                              "as 10.0.0.0/8 or an address, comma-separated)") from None
    return tuple(networks)


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str = ""
    # The API key(s) from a file instead (a mounted Secret): one per line, all accepted,
    # re-read when the file changes (keyfile.py). A key the file drops is still accepted
    # for the grace period, as is a dropped cluster secret, while the other pods catch up.
    api_key_file: str = ""
    api_key_grace_seconds: float = 300.0
    max_memory: int = 256 * 1024**2
    max_value_size: int = 1024**2
    max_key_size: int = 1024
    max_body_size: int = 0  # 0: derived from max_value_size (see body_limit)
    node_id: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # Per-IP rate limiting: off (0) by default on a local node.
    rate_limit: float = 0.0  # requests per second per client IP
    rate_limit_burst: int = 0  # extra requests allowed in a burst; 0 means equal to the rate
    # Comma-separated CIDRs of reverse proxies / load balancers whose X-Forwarded-For the
    # rate limiter believes; from anyone else the TCP peer's address counts.
    trusted_proxies: str = ""
    # /metrics without the API key (for a scraper that cannot send one); off by default:
    # with an API key configured nothing but the probes and the API description is public.
    metrics_public: bool = False
    gzip_min_size: int = 1024
    max_connections: int = 1024
    request_read_timeout: float = 10.0  # seconds a client may take to send one request
    shutdown_timeout: float = 10.0
    # A clustered node keeps serving this long after SIGTERM, marked stopping (not ready,
    # dead to its peers, a header to clients), before it closes its port: load balancers
    # and clients move off it while it still answers.
    shutdown_drain: float = 2.0
    active_expiry_interval: float = 0.1
    # The Redis protocol (RESP) listener beside HTTP, on the same host and with the same
    # TLS, API key, rate limit and metrics: 0 = off. resp_idle_timeout closes a connection
    # that sent nothing for that many seconds (0: never, as Redis's default).
    resp_port: int = 0
    resp_idle_timeout: float = 300.0
    access_log: bool = False
    log_level: str = "INFO"
    # Cluster settings, used once a ring is configured.
    ring_file: str = ""
    cluster_secret: str = ""
    cluster_secret_file: str = ""  # as api_key_file; the first line is the one sent to peers
    advertise_url: str = ""
    replication: int = 2
    write_quorum: int = 0  # 0: all live owners, at least 2 when R >= 2
    heartbeat_interval: float = 1.0
    # Seconds a node waits on a peer to connect, and for each read of its answer; a whole
    # call gets at most about twice that. A peer that drops packets costs this much per
    # forwarded read, which then goes to another owner.
    peer_timeout: float = 3.0
    # A refused connection convicts a peer at once (a killed process); mere silence only
    # after this long, so a node slowed by load is not declared dead and written around.
    suspect_after: float = 5.0

    @property
    def body_limit(self) -> int:
        """Largest accepted request body: a full /mset of max-size values needs room."""
        return self.max_body_size or max(4 * self.max_value_size, 8 * 1024**2)

    @property
    def has_api_key(self) -> bool:
        """Whether the data API asks for a key (given as a value or as a file)."""
        return bool(self.api_key or self.api_key_file)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_enabled else "http"

    def validate(self) -> NodeConfig:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port out of range: {self.port}")
        if not 0 <= self.resp_port <= 65535:
            raise ConfigError(f"--resp-port out of range: {self.resp_port}")
        if self.resp_port and self.resp_port == self.port:
            raise ConfigError(f"--resp-port {self.resp_port} is also --port: give it its own")
        if not self.resp_idle_timeout >= 0:
            raise ConfigError("--resp-idle-timeout must not be negative")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        for name in ("tls_cert", "tls_key", "tls_ca", "ring_file"):
            path = getattr(self, name)
            if path and name != "ring_file" and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: no such file: {path}")
        self._validate_key_files()
        if self.max_memory <= 0:
            raise ConfigError("--max-memory must be positive")
        from distcache_node.store import ENTRY_OVERHEAD

        largest_entry = self.max_value_size + self.max_key_size + ENTRY_OVERHEAD
        if self.max_value_size <= 0 or largest_entry > self.max_memory:
            # Otherwise a valid /mset item could still not fit, half-way through the batch.
            raise ConfigError("--max-value-size must be positive and leave room in --max-memory "
                              f"for the largest entry ({largest_entry} bytes with key and "
                              "overhead)")
        if self.rate_limit < 0 or self.rate_limit_burst < 0:
            raise ConfigError("--rate-limit and --rate-limit-burst must not be negative")
        parse_cidrs(self.trusted_proxies)
        from distcache_node.cluster.ring import MAX_REPLICATION

        if not 1 <= self.replication <= MAX_REPLICATION:
            raise ConfigError(f"--replication must be from 1 to {MAX_REPLICATION}")
        if (self.ring_file or self.advertise_url) and not (
                self.cluster_secret or self.cluster_secret_file or self.tls_ca):
            # Peers must prove they are peers: the data API key is not enough.
            raise ConfigError("clustering (--ring-file/--advertise-url) needs --cluster-secret "
                              "(or --cluster-secret-file) or mutual TLS (--tls-cert, --tls-key "
                              "and --tls-ca)")
        if self.max_connections < 1:
            raise ConfigError("--max-connections must be at least 1")
        # `not x > 0` rather than `x <= 0`: also refuses nan.
        for name in ("request_read_timeout", "active_expiry_interval", "peer_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not self.shutdown_timeout >= 0:
            raise ConfigError("--shutdown-timeout must not be negative")
        if not self.shutdown_drain >= 0:
            raise ConfigError("--shutdown-drain must not be negative")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"--log-level: unknown level {self.log_level!r} (one of {', '.join(_LOG_LEVELS)})"
            )
        return self

    def _validate_key_files(self) -> None:
        """A credential comes as a value or as a file, not both (which would win is a guess
        a user should not have to make), and a file must list a key at start."""
        from distcache_node.keyfile import KeyFileError, read_keys

        for value, path in (("api_key", "api_key_file"), ("cluster_secret", "cluster_secret_file")):
            flag, file_flag = (f"--{n.replace('_', '-')}" for n in (value, path))
            if getattr(self, value) and getattr(self, path):
                raise ConfigError(f"{flag} and {file_flag} both given: they are two ways to "
                                  f"set the same credential, give one (DISTCACHE_"
                                  f"{value.upper()} or DISTCACHE_{path.upper()})")
            if getattr(self, path):
                try:
                    read_keys(getattr(self, path))
                except KeyFileError as exc:
                    raise ConfigError(f"{file_flag}: {exc}") from None
        if not self.api_key_grace_seconds >= 0:  # also refuses nan
            raise ConfigError("--api-key-grace-seconds must not be negative")


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}
_SIZE_FIELDS = {"max_memory", "max_value_size", "max_key_size", "max_body_size", "gzip_min_size"}


def _coerce(name: str, raw: Any) -> Any:
    field_type = _FIELDS[name].type
    try:
        if name in _SIZE_FIELDS:
            return parse_size(raw)
        if field_type in ("int", int):
            return int(raw)
        if field_type in ("float", float):
            return float(raw)
        if field_type in ("bool", bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


# The node's environment namespace is DISTCACHE_*, less the sub-namespaces other parts of
# DistCache own: a developer's shell may hold the tooling's DISTCACHE_DEV_CACHE (the build
# cache) and an operator's settings without stopping every node started from it. Any other
# unknown DISTCACHE_* variable is still refused, naming it: a typo must not be ignored.
ENV_PREFIX = "DISTCACHE_"
NOT_NODE_PREFIXES = ("DISTCACHE_DEV_", "DISTCACHE_OPERATOR_")


def _from_mapping(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in values.items():
        name = str(key).replace("-", "_").lower()  # YAML may give bool or int keys
        if name not in _FIELDS:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        out[name] = _coerce(name, raw)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distcache-node", description="Run one DistCache node (HTTP JSON cache server)."
    )
    parser.add_argument("--config", help="YAML config file (keys as the flags, - or _)")
    for field in dataclasses.fields(NodeConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=None)
        else:
            parser.add_argument(flag, dest=field.name, default=None,
                                help=f"(default: {field.default!r})")
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Merge defaults, the YAML file, DISTCACHE_* environment variables and flags."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = args.config or env.get("DISTCACHE_CONFIG")
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: expected a mapping at the top level")
        values.update(_from_mapping(loaded, config_path))
    env_values = {
        k[len(ENV_PREFIX):]: v
        for k, v in env.items()
        if k.startswith(ENV_PREFIX) and k != "DISTCACHE_CONFIG"
        and not k.startswith(NOT_NODE_PREFIXES)
    }
    try:
        values.update(_from_mapping(env_values, "environment"))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (DISTCACHE_* variables configure the node; the build and "
                          f"test tooling's own are DISTCACHE_DEV_*, the operator's "
                          f"DISTCACHE_OPERATOR_*)") from None
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    values.update(_from_mapping(flags, "flags"))
    return NodeConfig(**values).validate()
