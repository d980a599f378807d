"""Images onto the kind cluster behind KUBECONFIG: its name from the kubectl context
(kind-<name>), the pinned kind binary from the test bed's cache (or PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from kubehelp import REPO, kubectl


def kind_cluster() -> str | None:
    """The kind cluster behind KUBECONFIG (its context is kind-<name>), if it is one."""
    ctx = kubectl("config", "current-context", namespace=None, check=False).stdout.strip()
    return ctx[len("kind-"):] if ctx.startswith("kind-") else None


def kind_binary() -> str | None:
    cache = os.environ.get("DISTCACHE_DEV_CACHE", "/var/cache/distcache")
    versions = (REPO / "scripts" / "kind" / "versions.env").read_text()
    version = next(line.split("=", 1)[1] for line in versions.splitlines()
                   if line.startswith("KIND_VERSION="))
    path = f"{cache}/kind/bin/kind-{version}/kind"
    return path if os.path.exists(path) else shutil.which("kind")


def docker_has(image: str) -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True).returncode == 0


def load_image(image: str, what: str) -> None:
    """`kind load docker-image` onto the cluster's nodes, or a skip naming what is missing
    (`what` says how to build the image)."""
    if not docker_has(image):
        pytest.skip(f"image {image} is not in the local Docker ({what})")
    cluster, kind = kind_cluster(), kind_binary()
    if cluster is None or kind is None:
        pytest.skip(f"cannot load {image}: the cluster is not a kind cluster (context "
                    "kind-<name>) or the kind binary is missing")
    subprocess.run([kind, "load", "docker-image", image, "--name", cluster],
                   capture_output=True, text=True, check=True, timeout=300)
