"""The cache container's resources: spec.resources as given, plus an ephemeral-storage request
and limit when it names neither (kube-score's container-ephemeral-storage-request-and-limit;
tests/unit/chart/test_kube_score.py runs the real linter)."""

from __future__ import annotations

from typing import Any

from distcache_operator.builders import build_statefulset


def node_resources(dc: Any) -> dict[str, Any]:
    container = build_statefulset(dc, 3)["spec"]["template"]["spec"]["containers"][0]
    resources: dict[str, Any] = container["resources"]
    return resources


def test_default_resources_get_an_ephemeral_storage_request_and_limit(make_dc) -> None:
    assert node_resources(make_dc()) == {
        "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "512Mi", "ephemeral-storage": "1Gi"},
    }


def test_users_resources_without_ephemeral_storage_keep_theirs_and_get_the_defaults(
        make_dc) -> None:
    given = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert node_resources(make_dc(resources=given)) == {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "1Gi"},
    }
    # Only requests given: the limits are created for the default alone.
    assert node_resources(make_dc(resources={"requests": {"cpu": "1"}}))["limits"] == {
        "ephemeral-storage": "1Gi"}


def test_ephemeral_storage_the_user_names_is_left_as_given(make_dc) -> None:
    """A default beside the user's value could contradict it (a 64Mi request over a 32Mi
    limit, which the API server refuses); a limit alone is also the request."""
    given = {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi",
                                                        "ephemeral-storage": "32Mi"}}
    assert node_resources(make_dc(resources=given)) == given
    given = {"requests": {"memory": "1Gi", "ephemeral-storage": "2Gi"}}
    assert node_resources(make_dc(resources=given)) == given
