"""Engine replica placement: the core sets and GPUs each replica of a model gets, the placements
refused, and the placements and engine arguments configs/gpu.yaml and configs/default.yaml give."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from processors.engines import engine_kwargs
from processors.placement import (
    PlacementError,
    ReplicaPlacement,
    available_cpu_cores,
    format_core_set,
    parse_core_set,
    place_model,
    place_models,
)
from processors.precision import Hardware
from schemas.config import ModelConfig
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]
FOUR_CORES = [0, 1, 2, 3]


def model(**fields: Any) -> ModelConfig:
    return ModelConfig(source="m", runner="pooling", **fields)


def cpu_envs(config: ModelConfig, cores: list[int] = FOUR_CORES) -> list[dict[str, str]]:
    return [p.env for p in place_model("minilm", config, "cpu", cores, 0)]


def gpu_envs(config: ModelConfig, gpus: int = 4) -> list[dict[str, str]]:
    return [p.env for p in place_model("llm", config, "gpu", [], gpus)]


def bind(*sets: str) -> list[dict[str, str]]:
    return [{"VLLM_CPU_OMP_THREADS_BIND": s} for s in sets]


def visible(*sets: str) -> list[dict[str, str]]:
    return [{"CUDA_VISIBLE_DEVICES": s} for s in sets]


# --- the config fields -------------------------------------------------------------------------


def test_model_config_defaults_and_bounds():
    config = model()
    assert (config.replicas, config.tensor_parallel_size) == (1, 1)
    assert config.devices is None and config.cpu_cores is None
    with pytest.raises(ValidationError, match="replicas"):
        model(replicas=0)
    with pytest.raises(ValidationError, match="tensor_parallel_size"):
        model(tensor_parallel_size=0)


# --- core sets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cores"),
    [
        ("0-3,6", {0, 1, 2, 3, 6}),
        ("0-3", {0, 1, 2, 3}),
        ("0,2", {0, 2}),
        ("1", {1}),
        ("5-5", {5}),
        (" 1 , 3-4 ", {1, 3, 4}),
        ("2,2,1-2", {1, 2}),
    ],
)
def test_parse_core_set(spec: str, cores: set[int]):
    assert parse_core_set(spec) == frozenset(cores)


@pytest.mark.parametrize("spec", ["a", "3-1", "", "-1", "0,-2", "1,", "0-", "1-2-3", "0|1", "all"])
def test_parse_core_set_refuses_junk(spec: str):
    with pytest.raises(PlacementError, match="core set"):
        parse_core_set(spec)


def test_format_core_set_is_the_shortest_spelling():
    assert format_core_set({6, 0, 1, 2, 3}) == "0-3,6"
    assert format_core_set([1]) == "1"
    assert format_core_set([0, 2, 3]) == "0,2-3"


def test_available_cpu_cores_is_the_affinity_mask():
    cores = available_cpu_cores()
    assert cores and cores == sorted(set(cores))


# --- CPU ---------------------------------------------------------------------------------------


def test_cpu_single_replica_without_cores_keeps_the_global_binding():
    [placement] = place_model("minilm", model(), "cpu", FOUR_CORES, 0)
    assert placement == ReplicaPlacement("minilm", 0, {}, 1)
    assert placement.label == "0"


@pytest.mark.parametrize(
    ("cores", "replicas", "expected"),
    [
        ([0, 1], 2, ("0", "1")),
        ([0, 1, 2, 3], 2, ("0-1", "2-3")),
        ([0, 1, 2, 3, 4], 2, ("0-2", "3-4")),
        ([0, 1, 4, 5], 2, ("0-1", "4-5")),
        ([0, 1, 2, 3], 4, ("0", "1", "2", "3")),
    ],
)
def test_cpu_replicas_without_cores_split_the_machine_evenly(
    cores: list[int], replicas: int, expected: tuple[str, ...]
):
    placements = place_model("minilm", model(replicas=replicas), "cpu", cores, 0)
    assert [p.env for p in placements] == bind(*expected)
    assert [p.label for p in placements] == [str(i) for i in range(replicas)]
    assert all(p.model == "minilm" and p.tensor_parallel_size == 1 for p in placements)


def test_cpu_more_replicas_than_cores_is_refused():
    with pytest.raises(
        PlacementError, match=r"model 'minilm' needs at least 3 cores .*this machine has 2"
    ):
        cpu_envs(model(replicas=3), [0, 1])


def test_cpu_given_core_sets_one_per_replica():
    assert cpu_envs(model(cpu_cores=["2-3"])) == bind("2-3")  # a single replica binds too
    assert cpu_envs(model(replicas=2, cpu_cores=["0,2", "1"])) == bind("0,2", "1")
    assert cpu_envs(model(replicas=2, cpu_cores=["3-3", "1,0"])) == bind("3", "0-1")


def test_cpu_core_sets_must_be_one_per_replica():
    with pytest.raises(
        PlacementError,
        match=r"model 'minilm': cpu_cores lists 1 core sets; .* one per replica \(2\)",
    ):
        cpu_envs(model(replicas=2, cpu_cores=["0-1"]))
    with pytest.raises(PlacementError, match="model 'minilm': cpu_cores lists 3"):
        cpu_envs(model(replicas=2, cpu_cores=["0", "1", "2"]))


def test_cpu_replicas_of_one_model_must_not_overlap():
    with pytest.raises(
        PlacementError, match=r"replicas 0 and 1 of model 'minilm' share cores \{1\}"
    ):
        cpu_envs(model(replicas=2, cpu_cores=["0-1", "1-2"]))
    with pytest.raises(PlacementError, match=r"replicas 0 and 2 of model 'minilm' share cores"):
        cpu_envs(model(replicas=3, cpu_cores=["0", "1", "0"]))


def test_different_models_may_share_cores():
    models = {
        "a": model(replicas=2, cpu_cores=["0", "1"]),
        "b": model(replicas=2, cpu_cores=["1", "0"]),
        "c": model(),
    }
    placed = place_models(models, "cpu", cpu_cores=[0, 1])
    assert [p.env for p in placed["a"]] == bind("0", "1")
    assert [p.env for p in placed["b"]] == bind("1", "0")
    assert [p.env for p in placed["c"]] == [{}]


def test_cpu_cores_must_exist_on_this_machine():
    with pytest.raises(
        PlacementError,
        match=r"model 'minilm': replica 1 binds cores \{4, 5\}, .*not have \(available: 0-3\)",
    ):
        cpu_envs(model(replicas=2, cpu_cores=["0-1", "3-5"]))


def test_cpu_core_set_junk_names_the_model():
    with pytest.raises(PlacementError, match=r"model 'minilm': cpu_cores\[1\] '3-1'.*backwards"):
        cpu_envs(model(replicas=2, cpu_cores=["0", "3-1"]))
    with pytest.raises(PlacementError, match=r"model 'minilm': cpu_cores\[0\] ''"):
        cpu_envs(model(cpu_cores=[""]))


def test_cpu_devices_are_refused():
    with pytest.raises(
        PlacementError, match="model 'minilm': devices is for GPUs; on the CPU build use cpu_cores"
    ):
        cpu_envs(model(devices=[0]))


def test_cpu_tensor_parallel_splits_each_replica_into_rank_sets():
    # vLLM's CPU build takes one core set per rank, joined by "|".
    assert cpu_envs(model(tensor_parallel_size=2, replicas=2)) == bind("0|1", "2|3")
    assert cpu_envs(model(tensor_parallel_size=2, cpu_cores=["0-3"])) == bind("0-1|2-3")
    # One replica of several ranks needs rank sets too: the global binding has one set only.
    assert cpu_envs(model(tensor_parallel_size=2)) == bind("0-1|2-3")
    # Rank sets may be given as they are.
    assert cpu_envs(model(tensor_parallel_size=2, cpu_cores=["0,2|1,3"])) == bind("0,2|1,3")
    [placement] = place_model("minilm", model(tensor_parallel_size=2), "cpu", FOUR_CORES, 0)
    assert placement.tensor_parallel_size == 2


def test_cpu_tensor_parallel_needs_tp_cores_per_replica():
    with pytest.raises(
        PlacementError,
        match=r"model 'minilm': cpu_cores\[1\] '3' holds 1 core; tensor_parallel_size 2 needs "
        r"at least 2",
    ):
        cpu_envs(model(replicas=2, tensor_parallel_size=2, cpu_cores=["0-1", "3"]))
    with pytest.raises(
        PlacementError,
        match=r"model 'minilm' needs at least 6 cores \(3 replicas x tensor_parallel_size 2\); "
        r"this machine has 4",
    ):
        cpu_envs(model(replicas=3, tensor_parallel_size=2))


def test_cpu_rank_sets_must_match_tp_and_not_overlap():
    with pytest.raises(PlacementError, match=r"gives 3 rank sets; tensor_parallel_size is 2"):
        cpu_envs(model(tensor_parallel_size=2, cpu_cores=["0|1|2"]))
    with pytest.raises(PlacementError, match=r"ranks 0 and 1 share cores \{1\}"):
        cpu_envs(model(tensor_parallel_size=2, cpu_cores=["0-1|1-2"]))
    with pytest.raises(PlacementError, match=r"replicas 0 and 1 of model 'minilm' share cores"):
        cpu_envs(model(replicas=2, tensor_parallel_size=2, cpu_cores=["0|1", "1|2"]))


# --- GPU ---------------------------------------------------------------------------------------


def test_gpu_devices_default_to_the_first_gpus():
    assert gpu_envs(model()) == visible("0")
    assert gpu_envs(model(tensor_parallel_size=2)) == visible("0,1")
    assert gpu_envs(model(replicas=2, tensor_parallel_size=2)) == visible("0,1", "2,3")
    assert gpu_envs(model(replicas=3)) == visible("0", "1", "2")


def test_gpu_given_devices_are_sliced_per_replica():
    config = model(replicas=2, tensor_parallel_size=2, devices=[3, 1, 0, 2])
    placements = place_model("llm", config, "gpu", [], 4)
    assert [p.env for p in placements] == visible("3,1", "0,2")
    assert [(p.label, p.tensor_parallel_size) for p in placements] == [("0", 2), ("1", 2)]
    assert gpu_envs(model(devices=[2])) == visible("2")


def test_gpu_more_gpus_than_exist_are_refused():
    with pytest.raises(
        PlacementError,
        match=r"model 'llm' needs 4 GPUs \(2 replicas x tensor_parallel_size 2\); "
        r"this machine has 2",
    ):
        gpu_envs(model(replicas=2, tensor_parallel_size=2), gpus=2)
    with pytest.raises(PlacementError, match=r"model 'llm': devices names GPU 2, 5; .* has 2"):
        gpu_envs(model(replicas=3, devices=[0, 2, 5]), gpus=2)
    with pytest.raises(PlacementError, match=r"model 'llm': devices names GPU -1"):
        gpu_envs(model(devices=[-1]))


def test_gpu_devices_must_number_replicas_times_tp():
    with pytest.raises(
        PlacementError,
        match=r"model 'llm': devices lists 3 GPUs; 2 replicas x tensor_parallel_size 2 need "
        r"exactly 4",
    ):
        gpu_envs(model(replicas=2, tensor_parallel_size=2, devices=[0, 1, 2]))
    with pytest.raises(PlacementError, match="devices lists 2 GPUs; 1 replica x"):
        gpu_envs(model(devices=[0, 1]))


def test_gpu_devices_must_not_repeat():
    with pytest.raises(PlacementError, match="model 'llm': devices lists GPU 1 more than once"):
        gpu_envs(model(replicas=2, devices=[1, 1]))


def test_gpu_without_gpus_is_refused():
    with pytest.raises(PlacementError, match=r"model 'llm': the target is gpu but .* no GPU"):
        gpu_envs(model(), gpus=0)


def test_gpu_cpu_cores_are_refused():
    with pytest.raises(PlacementError, match="model 'llm': cpu_cores is for the CPU build"):
        gpu_envs(model(cpu_cores=["0"]))


def test_unknown_target_is_refused():
    with pytest.raises(PlacementError, match="model 'llm': unknown target 'tpu'"):
        place_model("llm", model(), "tpu", FOUR_CORES, 4)


def test_place_models_detects_the_gpus_when_not_given(monkeypatch: pytest.MonkeyPatch):
    import processors.placement as placement

    two = Hardware(target="gpu", gpu_capabilities=((8, 0), (8, 6)))
    monkeypatch.setattr(placement, "detect_hardware", lambda: two)
    placed = place_models({"llm": model(replicas=2)}, "gpu")
    assert [p.env for p in placed["llm"]] == visible("0", "1")
    with pytest.raises(PlacementError, match="this machine has 2"):
        place_models({"llm": model(replicas=3)}, "gpu")


# --- the shipped configs -----------------------------------------------------------------------


def test_gpu_config_places_each_model_and_builds_its_engine_arguments():
    hardware = Hardware(target="gpu", gpu_capabilities=((8, 0),) * 4)
    config = load_config(REPO / "configs/gpu.yaml", environ={}, hardware=hardware)
    assert config.capabilities_dir == REPO / "configs/capabilities"
    assert set(config.models) == {"smollm2", "minilm"}
    assert config.models["smollm2"].source == "embedded:smollm2-135m-instruct"
    assert config.models["minilm"].source == "embedded:all-minilm-l6-v2"
    placed = place_models(config.models, "gpu", gpu_count=4)
    assert {name: [p.env for p in ps] for name, ps in placed.items()} == {
        "smollm2": visible("0"),
        "minilm": visible("0"),
    }
    shared = 0.0
    for name, model_config in config.models.items():
        kwargs = engine_kwargs(model_config, f"/models/{name}")
        assert kwargs["model"] == f"/models/{name}"
        assert kwargs["tensor_parallel_size"] == 1
        assert kwargs["dtype"] == "bfloat16"
        assert kwargs["gpu_memory_utilization"] == 0.3
        assert kwargs["runner"] == model_config.runner
        shared += kwargs["gpu_memory_utilization"]
    assert shared < 0.9  # both engines share GPU 0


def test_gpu_config_takes_float16_on_older_gpus():
    hardware = Hardware(target="gpu", gpu_capabilities=((7, 5),))
    config = load_config(REPO / "configs/gpu.yaml", environ={}, hardware=hardware)
    assert {m.dtype for m in config.models.values()} == {"float16"}
    placed = place_models(config.models, "gpu", gpu_count=1)
    assert all(p.env == {"CUDA_VISIBLE_DEVICES": "0"} for ps in placed.values() for p in ps)


def _uncommented_examples(text: str) -> str:
    """configs/gpu.yaml with its commented example models made real (other comments dropped)."""
    lines = text.splitlines()
    start = lines.index("  # qwen7b:")
    out = lines[:start]
    for line in lines[start:]:
        if line.startswith("  #   ") or re.fullmatch(r"  # [\w-]+:", line):
            out.append("  " + line[4:])
    return "\n".join(out) + "\n"


def test_gpu_config_examples_place_and_build(tmp_path: Path):
    # The commented examples, uncommented (smollm2 and minilm moved off GPUs 0-1 as the comment
    # says): the 7B LLM on GPUs 0 and 1 with tensor parallelism, the embedder's two replicas
    # on GPUs 2 and 3.
    text = _uncommented_examples((REPO / "configs/gpu.yaml").read_text())
    assert "\n  qwen7b:\n" in text and "\n  bge-small:\n" in text
    path = tmp_path / "gpu.yaml"
    path.write_text(text)
    hardware = Hardware(target="gpu", gpu_capabilities=((8, 0),) * 4)
    env = {"CAPSERVE__MODELS__SMOLLM2__DEVICES": "[2]", "CAPSERVE__MODELS__MINILM__DEVICES": "[3]"}
    config = load_config(path, environ=env, hardware=hardware)
    placed = place_models(config.models, "gpu", gpu_count=4)
    assert {name: [p.env for p in ps] for name, ps in placed.items()} == {
        "smollm2": visible("2"),
        "minilm": visible("3"),
        "qwen7b": visible("0,1"),
        "bge-small": visible("2", "3"),
    }
    qwen = engine_kwargs(config.models["qwen7b"], "/models/qwen")
    assert qwen["tensor_parallel_size"] == 2 and qwen["dtype"] == "bfloat16"
    assert qwen["runner"] == "generate"
    assert config.models["qwen7b"].source == "Qwen/Qwen2.5-7B-Instruct"
    bge = engine_kwargs(config.models["bge-small"], "/models/bge")
    assert bge["tensor_parallel_size"] == 1 and bge["runner"] == "pooling"
    assert [p.label for p in placed["bge-small"]] == ["0", "1"]
    # Per GPU, the engines on it stay below 0.9 together.
    for gpu in "0123":
        on_it = [
            config.models[name].gpu_memory_utilization or 0.0
            for name, ps in placed.items()
            if any(gpu in p.env["CUDA_VISIBLE_DEVICES"].split(",") for p in ps)
        ]
        assert sum(on_it) < 0.9, gpu


def test_default_config_places_every_model_with_an_empty_env_on_this_machine():
    config = load_config(REPO / "configs/default.yaml", environ={}, hardware=Hardware("cpu"))
    placed = place_models(config.models, "cpu")
    assert set(placed) == set(config.models)
    for name, placements in placed.items():
        assert placements == [ReplicaPlacement(name, 0, {}, 1)]
