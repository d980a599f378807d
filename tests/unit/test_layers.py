"""The import-linter layers contract (pyproject.toml) checks only the modules it names: a
new module left out of it could import anything. So every module of the node must sit in a
layer, as itself or inside a package that does."""

from __future__ import annotations

import pkgutil
import re
import tomllib

import distcache_node
from support import ROOT


def _layered() -> set[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [c for c in contracts["contracts"] if c["type"] == "layers"]
    assert len(layers) == 1, "one layers contract for the node"
    return {name for layer in layers[0]["layers"] for name in re.split(r"[|:\s]+", layer)
            if name}


def _modules() -> set[str]:
    return {info.name for info in pkgutil.walk_packages(distcache_node.__path__,
                                                         "distcache_node.")}


def _placed(module: str, layered: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in layered)


def test_every_node_module_has_a_layer() -> None:
    layered = _layered()
    packages = {m for m in _modules() if any(o.startswith(m + ".") for o in _modules())}
    unplaced = {m for m in _modules() - packages if not _placed(m, layered)}
    assert not unplaced, (f"not in the layers contract of pyproject.toml, so unchecked: "
                          f"{sorted(unplaced)}; add each to its layer")


def test_the_contract_names_no_module_that_is_gone() -> None:
    modules = _modules()
    stale = {name for name in _layered() if name.startswith("distcache_node")
             and name not in modules}
    assert not stale, f"the layers contract names modules that do not exist: {sorted(stale)}"
