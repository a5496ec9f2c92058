"""The pure parts of capserve on Ray Serve: the affinity key, the router's ranking, the cores of
a replica, the checks of this mode and the deployment options it produces."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from deploy.affinity_router import affinity_order, rendezvous_rank
from deploy.application import ROUTER_CLASS, RayModeError, check_ray_config, replica_options
from deploy.forwarding import affinity_key
from deploy.replica_cores import replica_cores
from schemas.config import CapServeConfig

REPLICAS = ["r-a", "r-b", "r-c"]


def config(**overrides: object) -> CapServeConfig:
    data: dict[str, object] = {"models": {"m": {"source": "x", "runner": "pooling"}}}
    data.update(overrides)
    return CapServeConfig.model_validate(data)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_the_affinity_key_is_the_texts_in_order_and_none_without_texts():
    one = affinity_key("/classify", body(texts=["a", "b"], capabilities=["x"]))
    assert one is not None
    assert one == affinity_key("/classify", body(texts=["a", "b"], capabilities=["y", "z"]))
    assert one != affinity_key("/classify", body(texts=["b", "a"], capabilities=["x"]))
    assert affinity_key("/classify", body(texts=["ab"])) != affinity_key(
        "/classify", body(texts=["a", "b"])
    )  # texts are delimited, not concatenated
    single = affinity_key("/classify/single", body(text="a", capabilities=["x"]))
    assert single == affinity_key("/classify", body(texts=["a"]))
    for path, raw in [
        ("/stats", b""),
        ("/classify", b"{not json"),
        ("/classify", body(texts=[])),
        ("/classify", body(texts=[1, 2])),
        ("/classify", b"[1]"),
        ("/classify/single", body(capabilities=["x"])),
    ]:
        assert affinity_key(path, raw) is None, (path, raw)


def test_rendezvous_ranking_is_stable_and_moves_only_a_removed_replicas_keys():
    keys = [f"key-{i}" for i in range(300)]
    firsts = {k: rendezvous_rank(k, REPLICAS)[0] for k in keys}
    assert firsts == {k: rendezvous_rank(k, list(reversed(REPLICAS)))[0] for k in keys}
    spread = Counter(firsts.values())
    assert set(spread) == set(REPLICAS) and min(spread.values()) > 60  # about 100 each
    survivors = ["r-a", "r-c"]
    for key in keys:
        after = rendezvous_rank(key, survivors)[0]
        if firsts[key] != "r-b":
            assert after == firsts[key]  # only r-b's keys moved


def test_affinity_yields_to_the_least_loaded_replica_past_the_threshold():
    key = "k"
    first, second, third = rendezvous_rank(key, REPLICAS)
    balanced = affinity_order(key, {first: 5, second: 0, third: 3}, imbalance_threshold=8)
    assert balanced == [[first], [second], [third]]
    busy = affinity_order(key, {first: 9, second: 0, third: 3}, imbalance_threshold=8)
    assert busy == [[second], [first], [third]]
    tied = affinity_order(key, {first: 20, second: 1, third: 1}, imbalance_threshold=8)
    assert tied[0] == [second, third] and tied[1:] == [[first]]
    unknown = affinity_order(key, {first: None, second: 0, third: None}, imbalance_threshold=8)
    assert unknown == [[first], [second], [third]]  # no figure for the first: affinity holds


@pytest.mark.parametrize(
    ("rank", "cpus", "cores", "expected"),
    [
        (0, 1, [0, 1], [0]),
        (1, 1, [0, 1], [1]),
        (2, 1, [0, 1], [0]),  # more replicas than cores: they wrap around
        (1, 2, [0, 1, 2, 3], [2, 3]),
        (0, 1.5, [0, 1, 2, 3], [0, 1]),
        (3, 8, [4, 5], [4, 5]),  # more CPUs than cores: every core
    ],
)
def test_a_replica_binds_to_cores_of_its_own_by_rank(rank, cpus, cores, expected):
    assert replica_cores(rank, cpus, cores) == expected


def test_replica_cores_refuses_nonsense():
    with pytest.raises(ValueError, match="no core"):
        replica_cores(0, 1, [])
    with pytest.raises(ValueError, match="negative"):
        replica_cores(-1, 1, [0])


def test_ray_mode_requires_the_shared_l2_and_its_secret_when_the_cache_is_on():
    with pytest.raises(RayModeError) as missing:
        check_ray_config(config(), {})
    assert "cache.redis_url is null" in str(missing.value)
    assert "$CAPSERVE_CACHE_SECRET is unset" in str(missing.value)
    with_redis = config(cache={"redis_url": "redis://127.0.0.1:6379/0"})
    with pytest.raises(RayModeError, match="CAPSERVE_CACHE_SECRET"):
        check_ray_config(with_redis, {"CAPSERVE_CACHE_SECRET": ""})
    check_ray_config(with_redis, {"CAPSERVE_CACHE_SECRET": "s3cret"})
    check_ray_config(config(cache={"enabled": False}), {})  # no cache: nothing to share


def test_the_replica_deployment_options_come_from_the_config():
    options = replica_options(
        config(ray={"num_replicas": 3, "replica_cpus": 2, "max_ongoing_requests": 7})
    )
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.0}
    assert options["max_ongoing_requests"] == 7
    router = options["request_router_config"]
    assert router.request_router_class == ROUTER_CLASS
    assert router.request_router_kwargs == {"imbalance_threshold": 8}
    scaled = replica_options(config(ray={"autoscaling": {"min_replicas": 1, "max_replicas": 4}}))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"].max_replicas == 4
    with pytest.raises(RayModeError, match="below min_replicas"):
        replica_options(config(ray={"autoscaling": {"min_replicas": 3, "max_replicas": 2}}))


def test_a_gpu_replica_holds_its_gpus():
    options = replica_options(config(ray={"replica_gpus": 1, "replica_cpus": 4}))
    assert options["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}


def test_no_module_of_processors_capabilities_or_server_imports_the_ray_package():
    """deploy/ wraps the runtime; nothing below it may depend on it (or on Ray)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("processors", "capabilities", "server", "schemas"):
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in ("deploy", "ray"):
                        offenders.append(f"{path.relative_to(root)}: {name}")
    # The one exception: `capserve serve --ray` starts the application from the CLI.
    assert offenders == [
        "server/cli.py: deploy.application",
        "server/cli.py: deploy.run",
    ], offenders
