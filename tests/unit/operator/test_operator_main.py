"""`python -m distcache_operator`: kopf's flags from the environment."""

from __future__ import annotations

from distcache_operator.__main__ import kopf_args


def test_defaults_standalone_every_namespace() -> None:
    assert kopf_args({}, []) == ["run", "--liveness=http://0.0.0.0:8080/healthz",
                                 "--standalone", "--all-namespaces", "-m",
                                 "distcache_operator.kopf_main"]


def test_peering_with_distinct_priorities_and_namespaces() -> None:
    a = kopf_args({"DISTCACHE_OPERATOR_PEERING": "distcache", "POD_NAME": "op-a",
                   "DISTCACHE_OPERATOR_NAMESPACES": "x, y"}, ["--verbose"])
    b = kopf_args({"DISTCACHE_OPERATOR_PEERING": "distcache", "POD_NAME": "op-b"}, [])
    assert "--peering=distcache" in a and "--standalone" not in a
    assert "--namespace=x" in a and "--namespace=y" in a and "--all-namespaces" not in a
    assert a[-1] == "--verbose"
    prio = [x for x in a if x.startswith("--priority=")]
    assert prio and prio != [x for x in b if x.startswith("--priority=")]


def test_no_handler_puts_a_finalizer_on_a_distcache() -> None:
    """A finalizer would leave a DistCache (and its namespace) Terminating whenever the
    operator is removed first; kopf adds one for any handler that requires it, daemons and
    timers always (kopf_main._without_finalizer undoes that for ours). The namespace
    deletion itself: e2e/test_operator_v2.py."""
    import kopf

    import distcache_operator.kopf_main  # noqa: F401 - registers the handlers

    registry = kopf.get_default_registry()
    handlers = [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]
    daemons = [h for h in handlers if type(h).__name__ == "DaemonHandler"]
    assert [h.id for h in daemons] == ["life"], "one daemon per DistCache"
    assert not [h.id for h in handlers if h.requires_finalizer], "a handler needs a finalizer"
