"""Key files (keyfile.py) and their settings: what a file lists, the grace period on a
clock of the test's own, and the configuration errors a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from distcache_node.config import ConfigError, NodeConfig, load_config
from distcache_node.keyfile import KeySet, fingerprint, parse_keys
from support import publish_secret_volume


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_file_lists_one_key_a_line_whitespace_and_blank_lines_ignored() -> None:
    assert parse_keys("  one \n\n\ttwo\r\none\n   \nthree") == ("one", "two", "three")
    assert parse_keys("\n \n") == ()


def test_a_dropped_key_is_accepted_until_its_grace_ends_and_not_after(tmp_path: Path) -> None:
    clock = Clock()
    publish_secret_volume(tmp_path, "1", {"key": b"a\n"})
    keys = KeySet("api_key", path=str(tmp_path / "key"), grace=30, clock=clock)
    publish_secret_volume(tmp_path, "2", {"key": b"b\n"})
    assert keys.check() is True
    clock.now += 29.9
    assert keys.accepts("a") and keys.accepts("b")
    publish_secret_volume(tmp_path, "3", {"key": b"c\n"})  # another rotation meanwhile
    assert keys.check() is True
    clock.now += 0.1
    assert not keys.accepts("a")  # its own grace, not renewed by the later change
    assert keys.accepts("b") and keys.accepts("c")
    clock.now += 30
    assert not keys.accepts("b") and keys.accepts("c")
    assert keys.report()["retiring"] == {}


def test_a_key_listed_again_is_no_longer_retiring(tmp_path: Path) -> None:
    clock = Clock()
    publish_secret_volume(tmp_path, "1", {"key": b"a\n"})
    keys = KeySet("api_key", path=str(tmp_path / "key"), grace=5, clock=clock)
    publish_secret_volume(tmp_path, "2", {"key": b"b\n"})
    keys.check()
    publish_secret_volume(tmp_path, "3", {"key": b"b\na\n"})  # rotation rolled back
    keys.check()
    clock.now += 60
    assert keys.accepts("a") and keys.accepts("b")


def test_listeners_hear_of_a_new_first_key_only(tmp_path: Path) -> None:
    publish_secret_volume(tmp_path, "1", {"key": b"a\n"})
    keys = KeySet("cluster_secret", path=str(tmp_path / "key"))
    heard: list[str] = []
    keys.listeners.append(lambda: heard.append(keys.primary))
    publish_secret_volume(tmp_path, "2", {"key": b"a\nb\n"})  # b added second: still send a
    keys.check()
    publish_secret_volume(tmp_path, "3", {"key": b"b\n"})
    keys.check()
    assert heard == ["b"]


def test_the_report_shows_fingerprints_never_keys(tmp_path: Path) -> None:
    publish_secret_volume(tmp_path, "1", {"key": b"secret-one\nsecret-two\n"})
    report = KeySet("api_key", path=str(tmp_path / "key")).report()
    assert report["fingerprints"] == [fingerprint("secret-one"), fingerprint("secret-two")]
    assert len(fingerprint("secret-one")) == 12
    assert "secret" not in repr(report).replace(str(tmp_path), "")


def test_a_key_given_both_as_a_value_and_as_a_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    with pytest.raises(ConfigError, match="--api-key and --api-key-file both given"):
        load_config([], {"DISTCACHE_API_KEY": "k", "DISTCACHE_API_KEY_FILE": str(key)})
    with pytest.raises(ConfigError, match="--cluster-secret and --cluster-secret-file"):
        NodeConfig(cluster_secret="s", cluster_secret_file=str(key)).validate()


@pytest.mark.parametrize("content", [None, b"", b" \n\n"])
def test_a_key_file_without_a_key_at_start_is_a_configuration_error(
    tmp_path: Path, content: bytes | None
) -> None:
    key = tmp_path / "key"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(ConfigError, match=r"--api-key-file: .*(no key|cannot be read)"):
        load_config(["--api-key-file", str(key)], {})


def test_key_files_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "api").write_text("a\n")
    (tmp_path / "peer").write_text("p\n")
    config = load_config([], {"DISTCACHE_API_KEY_FILE": str(tmp_path / "api"),
                              "DISTCACHE_CLUSTER_SECRET_FILE": str(tmp_path / "peer"),
                              "DISTCACHE_API_KEY_GRACE_SECONDS": "12.5",
                              "DISTCACHE_ADVERTISE_URL": "http://127.0.0.1:1"})
    assert config.has_api_key and config.api_key_grace_seconds == 12.5
    with pytest.raises(ConfigError, match="grace"):
        NodeConfig(api_key_grace_seconds=float("nan")).validate()


def test_keys_that_are_not_ascii_compare_as_the_bytes_a_header_carries(tmp_path: Path) -> None:
    # A header value that is not UTF-8 arrives surrogate-escaped, and a file is read so too.
    publish_secret_volume(tmp_path, "1", {"key": "clé\n".encode() + b"\xffraw\nplain\n"})
    keys = KeySet("api_key", path=str(tmp_path / "key"))
    assert keys.accepts("clé") and keys.accepts("\udcffraw") and keys.accepts("plain")
    for wrong in ("cle", "clé ", "raw", "\udcfeRaw", "\ud800", "plai"):
        assert not keys.accepts(wrong), wrong
