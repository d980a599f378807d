"""The OpenAPI document against the code, and property-based fuzzing of a live node from it.

One `distcache-node` process serves the whole module (a real socket server, loopback only).
Schemathesis derives requests from the document the node serves at /openapi.json: its
examples, boundary and wrong-type cases (coverage phase) and random valid and invalid ones
(fuzzing phase), then checks every response: never a 5xx, a documented status code, media
type, headers and body schema, invalid input rejected, 401 without the API key, 405 with
`Allow` for undocumented methods. /debug/* is left out (each call sleeps); test_api.py
covers it. So is /cluster/* (the fuzzed node is not clustered): the cluster tier fuzzes it,
with the rest of the API, through one node of a live 3-node cluster
(tests/cluster/test_openapi_cluster_fuzz.py).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from distcache_node import errors
from distcache_node.app import create_app
from distcache_node.config import NodeConfig
from support import API_KEY, clean_env, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT / "node" / "distcache_node" / "openapi.json"
NODE_SOURCES = ["handlers.py", "pipeline.py", "debug.py", "serve.py", "routes.py", "validate.py",
                "httpbody.py", "http_errors.py", "httpserver.py"]
# What a clustered node adds (/cluster/*, the peer check, 503 `unavailable` from the router
# and the clock): every module of the cluster package, however it is split.
CLUSTER_SOURCES = sorted(
    f"cluster/{path.name}" for path in (ROOT / "node" / "distcache_node" / "cluster").glob("*.py"))
MAX_EXAMPLES = 100  # per operation and phase: the whole module stays well under a minute


@pytest.fixture(scope="module")
def live_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`distcache-node` as a process of its own, shared by every fuzzed operation.

    Module-scoped (conftest's `node_process` is per test): one node for all operations also
    fuzzes how they combine, e.g. /incr on a key /set filled with a string. Its log goes to
    a file, checked at the end for tracebacks: the node must never log an internal error.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("fuzzed-node") / "node.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distcache_node.cli", "--host", "127.0.0.1",
             "--port", str(port), "--api-key", API_KEY, "--max-memory", "64MiB",
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
        )
    try:
        wait_ready(proc, url, log=log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    logged = log_path.read_text(errors="replace")
    assert "Traceback" not in logged and "internal error" not in logged, logged[-5000:]


def fuzz_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "request-timeout": 10,
        "auth": {"openapi": {"ApiKeyHeader": {"api_key": API_KEY}}},
        "generation": {
            "mode": "all",  # valid and invalid requests
            "max-examples": MAX_EXAMPLES,
            "database": "none",  # no .hypothesis directory in the repo
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "negative_data_rejection": {
                "enabled": True, "expected-statuses": [400, 401, 404, 405, 413],
            },
            # A valid request may still find no key (404) or a non-integer to /incr (409),
            # and a key within maxLength characters may be over 1024 bytes (400), which JSON
            # Schema cannot express; a write whose X-DistCache-Deadline is already past is
            # refused (408), and "past" is not a property of the value.
            "positive_data_acceptance": {
                "enabled": True, "expected-statuses": ["2xx", 400, 404, 408, 409],
            },
            "ignored_auth": {"enabled": True},
            "unsupported_method": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "use_after_free": {"enabled": False},
            "ensure_resource_availability": {"enabled": False},
        },
    })


# Loaded at import, as parametrization needs the operations before any fixture runs (and
# schemathesis' fixture-based lazy loading does not work with pytest 9). The served document
# is this file byte for byte: test_served_document_is_the_repo_file.
SCHEMA = schemathesis.openapi.from_path(OPENAPI_PATH, config=fuzz_config()).exclude(
    path_regex=r"^/(debug|cluster)/"
)


@SCHEMA.parametrize()
def test_fuzz_live_node_against_the_document(case: Any, live_node: str) -> None:
    case.call_and_validate(base_url=live_node)


# ---------------------------------------------------------------------------------------------
# The document itself


def test_served_document_is_the_repo_file(live_node: str) -> None:
    with urllib.request.urlopen(f"{live_node}/openapi.json", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "application/json"
        served = resp.read()
    assert served == OPENAPI_PATH.read_bytes()


def test_document_is_valid_openapi() -> None:
    document = json.loads(OPENAPI_PATH.read_text())
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    # ...which does reject a broken document:
    broken = {**document, "paths": {"/set": {"post": {"responses": {"200": {}}}}}}
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(broken).validate()
    operations = [op.ok() for op in schemathesis.openapi.from_dict(document).get_all_operations()]
    ids = [op.definition.raw["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) == 23


def test_every_route_is_documented_and_nothing_else() -> None:
    """Every route of a clustered node, the nodes' own /cluster/* wire protocol included:
    the document describes every answer a node in a cluster gives."""
    app = create_app(NodeConfig(api_key=API_KEY, advertise_url="http://127.0.0.1:1",
                                cluster_secret="s"))
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }
    document = json.loads(OPENAPI_PATH.read_text())
    documented = {
        (method, path) for path, item in document["paths"].items() for method in item
    }
    assert routes == documented
    # Every /cluster/* operation that reads a body describes it (so bad input is a 400).
    for path, item in document["paths"].items():
        for method, op in item.items():
            if path.startswith("/cluster/") and method in ("post", "put") \
                    and path != "/cluster/drain":
                assert "requestBody" in op, (method, path)


# errors.py's kinds of refusal, whose first argument is the code.
_KINDS = {name for name, kind in vars(errors).items()
          if isinstance(kind, type) and issubclass(kind, errors.CacheError)
          and name not in ("CacheError", "Unavailable")}


def _raised_codes(names: list[str] = NODE_SOURCES) -> set[str]:
    """Error codes the node code writes as literals: the first argument of a refusal of
    errors.py's kinds (NotFound(...), Conflict(...)...), the second of HttpError(...),
    json_error(...) and bad_request(...) calls, `unavailable` for Unavailable(...) (its
    default code), and the connection-limit answer's body."""
    codes: set[str] = set()
    for name in names:
        source = (ROOT / "node" / "distcache_node" / name).read_text()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("HttpError", "json_error", "bad_request")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            ):
                codes.add(node.args[1].value)
            if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _KINDS and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                codes.add(node.args[0].value)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "Unavailable":
                codes.add("unavailable")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "bad_request" and len(node.args) == 1
                    and not node.keywords):
                codes.add("bad_request")  # its default code
            # `code, text = "internal_error", ...` before a json_error(status, code, text)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Tuple | ast.Name) and "code" in ast.unparse(t).split(", ")
                for t in node.targets
            ):
                value = node.value.elts[0] if isinstance(node.value, ast.Tuple) else node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    codes.add(value.value)
        codes.update(re.findall(r'"error":"([a-z_]+)"', source))
    return codes


def test_every_error_code_is_documented() -> None:
    document = json.loads(OPENAPI_PATH.read_text())
    text = json.dumps(document)
    documented = set(re.findall(r'"error": {"enum": \[([^\]]*)\]', text))  # error codes only
    enum_codes = {code for group in documented for code in re.findall(r'"([a-z_]+)"', group)}
    raised = _raised_codes()
    # Built from the field name in _batch(): missing_keys, invalid_keys, missing_items, ...
    raised |= {f"{kind}_{field}" for kind in ("missing", "invalid") for field in ("keys", "items")}
    raised |= {"not_found", "method_not_allowed", "body_too_large"}  # aiohttp's, mapped
    assert "key_too_long" in raised and "unauthorized" in raised  # the scan finds codes
    undocumented = raised - enum_codes - {"internal_error"}  # a 500 is a bug, not a contract
    assert not undocumented, f"raised by the node but not in openapi.json: {undocumented}"
    cluster = _raised_codes(CLUSTER_SOURCES)
    assert {"unavailable", "forbidden", "invalid_ring", "stale_ring", "ring_conflict",
            "bad_request"} <= cluster  # the scan finds the cluster's codes
    undocumented = cluster - enum_codes
    assert not undocumented, f"raised by a clustered node but not in openapi.json: {undocumented}"
    stale = enum_codes - raised - cluster
    assert not stale, f"documented but never raised: {stale}"


def _responses(document: dict[str, Any], path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, status, response) of every operation on `path`, references resolved."""
    for method, op in document["paths"][path].items():
        for status, response in op["responses"].items():
            if "$ref" in response:
                response = document["components"]["responses"][response["$ref"].split("/")[-1]]
            yield method, status, response


def _header_names(document: dict[str, Any], response: dict[str, Any]) -> set[str]:
    return set(response.get("headers", {}))


def test_cluster_answers_and_headers_are_documented() -> None:
    """What a clustered node adds to each answer, as the node code names it."""
    from distcache_node.cluster.peers import RING_HEADER, SECRET_HEADER
    from distcache_node.pipeline import RING_VERSION_HEADER

    document = json.loads(OPENAPI_PATH.read_text())
    assert RING_VERSION_HEADER == RING_HEADER == "X-DistCache-Ring-Version"
    assert document["components"]["securitySchemes"]["ClusterSecret"]["name"] == SECRET_HEADER
    data = ["/get", "/set", "/delete", "/mget", "/mset", "/incr"]
    for path in document["paths"]:
        for method, status, response in _responses(document, path):
            headers = _header_names(document, response)
            where = (method, path, status)
            # The pipeline sets the ring version on every answer of the API-key routes.
            if path in [*data, "/status"] and not response["description"].startswith(
                    ("`malformed_request`", "`too_many_connections`")):
                assert "X-DistCache-Ring-Version" in headers, where
                if status != "401":  # the limiter runs after the key check
                    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining"} <= headers, where
            if "content" in response and path != "/cluster/export":
                assert "Content-Encoding" in headers, where  # gzip at >= 1 KiB
            if status == "429":
                assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= headers
            if status == "503" and path != "/readyz":  # /readyz: also "not ready"
                assert response["headers"]["Retry-After"].get("required"), where
            if path.startswith("/cluster/"):
                assert {"403", "404"} <= set(document["paths"][path][method]["responses"])
    for path in [*data, "/cluster/incr"]:
        for _, status, response in _responses(document, path):
            if status == "503":  # a write without its quorum, a read no owner answered
                assert "unavailable" in json.dumps(response["content"]), path
