"""errors.py's kinds of refusal as each edge answers them: the HTTP edge's one table
(http_errors.py) and the RESP edge's (resp/errors.py). A kind without a row in the HTTP
table would answer 500, a bug's status, for a refusal that is the client's to see."""

from __future__ import annotations

import orjson
import pytest

from distcache_node import errors
from distcache_node.http_errors import error_response
from distcache_node.resp.errors import from_backend

KINDS = [kind for kind in vars(errors).values()
         if isinstance(kind, type) and issubclass(kind, errors.CacheError)
         and kind is not errors.CacheError]


def _refusal(kind: type[errors.CacheError]) -> errors.CacheError:
    if kind is errors.Unavailable:
        return errors.Unavailable("no live owner for this key", retry_after=3)
    return kind("some_code", "what to fix")


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_kind_has_a_client_error_status_and_the_json_error_shape(
    kind: type[errors.CacheError],
) -> None:
    refusal = _refusal(kind)
    answer = error_response(refusal)
    assert 400 <= answer.status < 600 and answer.status != 500
    assert answer.body is not None
    assert orjson.loads(bytes(answer.body)) == {"error": refusal.code,
                                               "message": refusal.message}


def test_unavailable_is_a_503_with_its_retry_after() -> None:
    answer = error_response(_refusal(errors.Unavailable))
    assert answer.status == 503 and answer.headers["Retry-After"] == "3"


def test_unauthenticated_is_a_401_naming_the_accepted_scheme() -> None:
    answer = error_response(errors.Unauthenticated("unauthorized", "invalid API key"))
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


def test_the_resp_edge_answers_unavailable_with_tryagain_and_other_kinds_with_err() -> None:
    tryagain = from_backend(_refusal(errors.Unavailable))
    assert tryagain is not None and tryagain.text == "TRYAGAIN no live owner for this key"
    err = from_backend(errors.InvalidInput("invalid_key", "'key' must not be empty"))
    assert err is not None and err.text == "ERR 'key' must not be empty"
    assert from_backend(RuntimeError("a bug")) is None
