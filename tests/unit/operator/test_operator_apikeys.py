"""apikeys: which pods have loaded the keys of a rotated Secret, from their /cluster/status.
The statuses are what real nodes report (keyfile.KeySet.report), not hand-written shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distcache_node.keyfile import KeySet
from distcache_operator.apikeys import (
    CLUSTER_SECRET,
    fingerprints,
    loaded,
    pods_behind,
    sent_key,
)


def _status(tmp_path: Path, name: str, api_key: str, secret: str = "s\n") -> dict[str, Any]:
    """A pod's /cluster/status credentials, as a node with these files reports them."""
    (tmp_path / f"{name}-api").write_text(api_key)
    (tmp_path / f"{name}-peer").write_text(secret)
    return {"id": name, "credentials": {
        "api_key": KeySet("api_key", path=str(tmp_path / f"{name}-api")).report(),
        "cluster_secret": KeySet("cluster_secret", path=str(tmp_path / f"{name}-peer")).report(),
    }}


def test_pods_still_on_the_old_secret_are_named(tmp_path: Path) -> None:
    rotated = "old-key\nnew-key\n"
    statuses = {
        "cache-0": _status(tmp_path, "cache-0", rotated),
        "cache-2": _status(tmp_path, "cache-2", "old-key\n"),  # volume not updated yet
        "cache-1": _status(tmp_path, "cache-1", "  old-key\n\nnew-key  "),  # same keys
    }
    assert pods_behind(rotated, statuses) == ["cache-2"]
    statuses["cache-2"] = _status(tmp_path, "cache-2b", rotated)
    assert pods_behind(rotated, statuses) == []


def test_a_pod_that_does_not_answer_or_reports_no_keys_is_behind(tmp_path: Path) -> None:
    statuses: dict[str, dict[str, Any] | None] = {
        "cache-0": _status(tmp_path, "cache-0", "k\n"),
        "cache-1": None,  # unreachable
        "cache-2": {"id": "cache-2"},  # a node from before key files
        "cache-3": {"credentials": {"api_key": {"fingerprints": "not a list"}}},
    }
    assert pods_behind("k", statuses) == ["cache-1", "cache-2", "cache-3"]
    assert loaded(statuses["cache-1"]) is None


def test_the_cluster_secret_is_checked_on_its_own(tmp_path: Path) -> None:
    statuses = {"cache-0": _status(tmp_path, "cache-0", "k\n", "peer-old\n"),
                "cache-1": _status(tmp_path, "cache-1", "k\n", "peer-old\npeer-new\n")}
    assert pods_behind("peer-old\npeer-new", statuses, CLUSTER_SECRET) == ["cache-0"]
    assert pods_behind("k", statuses) == []


def test_the_order_of_the_lines_matters() -> None:
    # The first line is what a node sends its peers: a pod with the lines swapped sends
    # another key than the Secret says, so it has not loaded this Secret.
    assert fingerprints("a\nb") != fingerprints("b\na")
    assert [len(f) for f in fingerprints("aaaa\nbbbb")] == [12, 12]
    assert sent_key("\n  first \nsecond\n") == "first"
    assert sent_key(" \n") == ""
