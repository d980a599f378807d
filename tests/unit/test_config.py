"""Node configuration: sizes, precedence defaults < YAML < DISTCACHE_* env < flags, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from distcache_node.config import ConfigError, NodeConfig, load_config, parse_cidrs, parse_size

# --- parse_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("256MiB", 256 * 1024**2),
        ("256mib", 256 * 1024**2),
        ("256Mi", 256 * 1024**2),
        ("1g", 1000**3),  # k/M/G/T are decimal, as in Kubernetes quantities
        ("1G", 1000**3),
        ("1GiB", 1024**3),
        ("1048576", 1048576),
        (1048576, 1048576),
        ("512KiB", 512 * 1024),
        ("512kb", 512 * 1000),
        ("10b", 10),
        (" 64 MiB ", 64 * 1024**2),
        ("1.5KiB", 1536),
        ("2T", 2 * 1000**4),
        ("0", 0),
    ],
)
def test_parse_size(raw: str | int, expected: int) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "abc", "MiB", "-5", -5, "1.2.3", "12 parsecs", "1e3", "5ib", "5i", "5 MiBs", "0x10",
     "9" * 400, True, None],
)
def test_parse_size_rejects_bad_values(raw: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(raw)  # type: ignore[arg-type]


def test_parse_size_error_shows_examples() -> None:
    with pytest.raises(ConfigError, match=r"not a size: 'lots'.*256MiB"):
        parse_size("lots")


# --- precedence ----------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_without_any_source() -> None:
    config = load_config([], environ={})
    assert config == NodeConfig()
    assert config.max_memory == 256 * 1024**2
    assert config.scheme == "http"


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml",
                 "max_memory: 64MiB\nmax_value_size: 2MiB\nport: 9000\napi_key: from-file\n"
                 "gzip-min-size: 2KiB\n")
    env = {"DISTCACHE_MAX_VALUE_SIZE": "3MiB", "DISTCACHE_PORT": "9100",
           "DISTCACHE_RATE_LIMIT": "7.5"}
    config = load_config(["--config", path, "--port", "9200"], environ=env)
    assert config.max_memory == 64 * 1024**2  # file over default
    assert config.gzip_min_size == 2048  # dashes work in the file too
    assert config.api_key == "from-file"  # file, nothing later overrides it
    assert config.max_value_size == 3 * 1024**2  # env over file
    assert config.rate_limit == 7.5  # env over default
    assert config.port == 9200  # flag over env and file
    assert config.host == "127.0.0.1"  # default


def test_env_overrides_file_and_flag_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml", "api_key: file-key\n")
    assert load_config(["--config", path], environ={}).api_key == "file-key"
    env = {"DISTCACHE_API_KEY": "env-key"}
    assert load_config(["--config", path], environ=env).api_key == "env-key"
    assert load_config(["--config", path, "--api-key", "flag-key"], environ=env).api_key == (
        "flag-key"
    )


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml", "node_id: from-env-file\n")
    config = load_config([], environ={"DISTCACHE_CONFIG": path})
    assert config.node_id == "from-env-file"


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.yaml", "# nothing here\n")
    assert load_config(["--config", path], environ={}) == NodeConfig()


def test_the_shipped_config_file_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(["--config", str(root / "config.yaml")], environ={})
    assert config.api_key == "my-secret-key"
    assert config.max_memory == 256 * 1024**2
    assert config.rate_limit == 0


def test_boolean_settings(tmp_path: Path) -> None:
    assert load_config([], environ={"DISTCACHE_ACCESS_LOG": "true"}).access_log is True
    assert load_config([], environ={"DISTCACHE_ACCESS_LOG": "0"}).access_log is False
    path = write(tmp_path / "node.yaml", "access_log: yes\n")
    assert load_config(["--config", path], environ={}).access_log is True
    assert load_config(["--config", path, "--no-access-log"], environ={}).access_log is False
    assert load_config(["--access-log"], environ={}).access_log is True


def test_numbers_are_coerced() -> None:
    config = load_config(["--rate-limit", "2.5", "--max-connections", "10",
                          "--shutdown-timeout", "3"], environ={})
    assert config.rate_limit == 2.5
    assert config.max_connections == 10
    assert config.shutdown_timeout == 3.0


# --- unknown keys and bad values -----------------------------------------------------------


def test_unknown_key_in_file_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml", "max_memroy: 1GiB\n")
    with pytest.raises(ConfigError, match=r"node\.yaml: unknown setting 'max_memroy'"):
        load_config(["--config", path], environ={})


def test_unknown_environment_variable_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"environment: unknown setting 'MAX_MEMROY'"):
        load_config([], environ={"DISTCACHE_MAX_MEMROY": "1GiB"})


def test_an_unknown_variable_is_refused_naming_the_tooling_namespaces() -> None:
    # The build cache's old name: a node must say what it is, not fail as a refused socket.
    with pytest.raises(ConfigError, match=r"unknown setting 'CACHE'.*DISTCACHE_DEV_\*"):
        load_config([], environ={"DISTCACHE_CACHE": "/tmp/cache"})


def test_the_tooling_and_operator_namespaces_are_not_node_settings() -> None:
    environ = {"DISTCACHE_DEV_CACHE": "/tmp/cache", "DISTCACHE_DEV_KIND_SALT": "x",
               "DISTCACHE_OPERATOR_NODE_IMAGE": "img", "DISTCACHE_PORT": "9000"}
    assert load_config([], environ=environ).port == 9000


def test_unrelated_environment_is_ignored() -> None:
    assert load_config([], environ={"HOME": "/root", "MAX_MEMORY": "x"}) == NodeConfig()


def test_unknown_flag_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_config(["--max-memroy", "1GiB"], environ={})
    assert exc.value.code == 2
    assert "unrecognized arguments: --max-memroy" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_file_must_hold_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "node.yaml", text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(["--config", path], environ={})


def test_broken_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml", "port: [8080\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", path], environ={})


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", str(tmp_path / "absent.yaml")], environ={})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], r"^port: "),
        (["--max-memory", "lots"], r"^max_memory: not a size"),
        (["--rate-limit", "fast"], r"^rate_limit: "),
        (["--max-memory", "5ib"], r"^max_memory: not a size"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, environ={})


def test_non_string_yaml_key_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yaml", "yes: 1\n")  # YAML 1.1 reads the key as a boolean
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(["--config", path], environ={})


# --- validate() ----------------------------------------------------------------------------


@pytest.fixture
def pem(tmp_path: Path) -> str:
    return write(tmp_path / "some.pem", "not checked here, only that it exists\n")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "port out of range"),
        ({"port": -1}, "port out of range"),
        ({"max_memory": 0}, "--max-memory must be positive"),
        ({"max_value_size": 0}, "--max-value-size"),
        ({"max_memory": 1000, "max_value_size": 2000}, "leave room in --max-memory"),
        # A value that fits alone but not with its key and bookkeeping: /mset could stop
        # half-way, so the configuration is refused up front.
        ({"max_memory": 4096, "max_value_size": 4000}, "leave room in --max-memory"),
        ({"rate_limit": -1.0}, "must not be negative"),
        ({"rate_limit_burst": -1}, "must not be negative"),
        ({"replication": 0}, "--replication must be from 1 to 16"),
        ({"replication": 17}, "--replication must be from 1 to 16"),
        ({"tls_key": "/nonexistent/key.pem"}, "--tls-cert and --tls-key go together"),
        ({"max_connections": 0}, "--max-connections"),
        ({"request_read_timeout": 0.0}, "--request-read-timeout"),
        ({"active_expiry_interval": 0.0}, "--active-expiry-interval"),
        ({"shutdown_timeout": -1.0}, "--shutdown-timeout"),
        ({"shutdown_drain": -1.0}, "--shutdown-drain"),
        ({"log_level": "LOUD"}, "--log-level"),
    ],
)
def test_validate_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**overrides).validate()  # type: ignore[arg-type]


def test_tls_cert_without_key(pem: str) -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        NodeConfig(tls_cert=pem).validate()


def test_tls_files_must_exist(pem: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"--tls-key: no such file"):
        NodeConfig(tls_cert=pem, tls_key=missing).validate()
    with pytest.raises(ConfigError, match=r"--tls-cert: no such file"):
        NodeConfig(tls_cert=missing, tls_key=pem).validate()
    with pytest.raises(ConfigError, match=r"--tls-ca: no such file"):
        NodeConfig(tls_cert=pem, tls_key=pem, tls_ca=missing).validate()


def test_tls_enabled_switches_the_scheme(pem: str) -> None:
    config = NodeConfig(tls_cert=pem, tls_key=pem).validate()
    assert config.tls_enabled
    assert config.scheme == "https"


def test_log_level_is_case_insensitive() -> None:
    assert load_config(["--log-level", "debug"], environ={}).log_level == "debug"


def test_body_limit_is_derived_from_value_size() -> None:
    assert NodeConfig().body_limit == 8 * 1024**2
    assert NodeConfig(max_memory=1024**3, max_value_size=4 * 1024**2).body_limit == 16 * 1024**2
    assert NodeConfig(max_body_size=1000).body_limit == 1000


def test_clustering_without_peer_authentication_is_refused() -> None:
    with pytest.raises(ConfigError, match="--cluster-secret"):
        NodeConfig(ring_file="/tmp/ring.json").validate()
    NodeConfig(ring_file="/tmp/ring.json", cluster_secret="s").validate()  # enough


def test_trusted_proxies_from_flag_env_and_file(tmp_path: Path) -> None:
    assert load_config([], environ={}).trusted_proxies == ""
    assert parse_cidrs("") == ()
    path = write(tmp_path / "node.yaml", "trusted_proxies: 10.0.0.0/8\n")
    assert load_config(["--config", path], environ={}).trusted_proxies == "10.0.0.0/8"
    env = {"DISTCACHE_TRUSTED_PROXIES": "192.168.0.0/16, fd00::/8"}
    config = load_config(["--config", path], environ=env)
    assert [str(n) for n in parse_cidrs(config.trusted_proxies)] == [
        "192.168.0.0/16", "fd00::/8"]
    config = load_config(["--trusted-proxies", "127.0.0.1"], environ=env)
    assert [str(n) for n in parse_cidrs(config.trusted_proxies)] == ["127.0.0.1/32"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.local", "10.0.0.0/8,,nope", "1.2.3"])
def test_invalid_trusted_proxies_name_the_setting_and_the_value(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^--trusted-proxies: not an IP network: '"):
        load_config(["--trusted-proxies", bad], environ={})


def test_metrics_public_is_off_by_default() -> None:
    assert load_config([], environ={}).metrics_public is False
    assert load_config(["--metrics-public"], environ={}).metrics_public is True
    assert load_config([], environ={"DISTCACHE_METRICS_PUBLIC": "true"}).metrics_public


def test_peer_timeout_from_flag_env_and_file(tmp_path: Path) -> None:
    assert load_config([], environ={}).peer_timeout == 3.0
    config_file = tmp_path / "c.yaml"
    config_file.write_text("peer-timeout: 1.5\n")
    assert load_config(["--config", str(config_file)], environ={}).peer_timeout == 1.5
    assert load_config([], environ={"DISTCACHE_PEER_TIMEOUT": "2"}).peer_timeout == 2.0
    assert load_config(["--peer-timeout", "0.5"], environ={}).peer_timeout == 0.5
    for bad in ("0", "-1", "nan"):
        with pytest.raises(ConfigError, match="--peer-timeout must be positive"):
            load_config(["--peer-timeout", bad], environ={})
