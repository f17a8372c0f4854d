from pathlib import Path

import pytest
import yaml

from uss_bench.launch import profiles
from uss_bench.launch.profiles import ProfileError


@pytest.fixture
def cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private methods/ dir (USS_BENCH_HOME) and profiles dir (USS_BENCH_PROFILES)."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "profiles").mkdir()
    monkeypatch.setenv("USS_BENCH_HOME", str(tmp_path))
    monkeypatch.setenv("USS_BENCH_PROFILES", str(tmp_path / "profiles"))
    return tmp_path


def write(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data))


def test_shipped_local_ci_profile_requests_no_gpu_and_one_cpu():
    ci = profiles.load_profile("local-ci")
    assert ci["gpus"] == 0 and ci["cpus_per_task"] == 1
    assert profiles.requested_gpus(ci) == 0
    params = profiles.to_submitit_parameters(ci)
    assert "gpus_per_node" not in params  # --gpus-per-node=0 is refused by gres-less clusters
    assert params["slurm_partition"] == "debug" and params["cpus_per_task"] == 1


def test_every_shipped_profile_is_valid():
    names = profiles.available_profiles()
    assert {"local-ci", "example-gpu", "cpu"} <= set(names)
    for name in names:
        profiles.load_profile(name)


def test_merge_order_card_then_profile_then_cli(cards: Path):
    write(cards / "methods" / "hp.yaml", {"resources": {"gpus": 1, "mem_gb": 32, "timeout_min": 600,
                                                        "sbatch": {"exclude": "n1", "comment": "card"}}})
    write(cards / "profiles" / "site.yaml", {"partition": "gpu", "mem_gb": 64, "sbatch": {"comment": "site"}})
    merged = profiles.resolve("hp", "site", profiles.parse_overrides(["timeout_min=30", "partition=long"]))
    assert merged == {
        "gpus": 1,  # card
        "mem_gb": 64,  # profile beats card
        "timeout_min": 30,  # CLI beats card
        "partition": "long",  # CLI beats profile
        "sbatch": {"exclude": "n1", "comment": "site"},  # sbatch maps merge key by key
    }


def test_unknown_key_lists_valid_keys(cards: Path):
    write(cards / "profiles" / "typo.yaml", {"partiton": "gpu"})
    with pytest.raises(ProfileError) as err:
        profiles.load_profile("typo")
    message = str(err.value)
    assert "typo.yaml" in message and "partiton" in message
    for key in ("partition", "gpus", "cpus_per_task", "mem_gb", "timeout_min", "setup", "sbatch"):
        assert key in message


def test_unknown_key_in_card_resources_names_the_card(cards: Path):
    write(cards / "methods" / "stego.yaml", {"resources": {"gpu": 1}})
    with pytest.raises(ProfileError, match=r"stego\.yaml \(resources\).*unknown resource key\(s\) gpu"):
        profiles.card_resources("stego")


@pytest.mark.parametrize("bad", [{"gpus": "one"}, {"gpus": True}, {"setup": "module load x"},
                                 {"setup": [1, 2]}, {"mem_gb": "32G"}])
def test_wrong_value_types_are_rejected(bad: dict):
    with pytest.raises(ProfileError, match="must be|list of shell lines"):
        profiles.validate(bad, "test.yaml")


def test_unknown_profile_lists_available(cards: Path):
    write(cards / "profiles" / "a.yaml", {"partition": "x"})
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'.*available: a"):
        profiles.load_profile("nope")


def test_overrides_are_yaml_typed_and_checked():
    assert profiles.parse_overrides(["mem_gb=12.5", "gpus=2", "setup=[a, b]"]) == {
        "mem_gb": 12.5, "gpus": 2, "setup": ["a", "b"]}
    with pytest.raises(ProfileError, match="KEY=VALUE"):
        profiles.parse_overrides(["mem_gb"])
    with pytest.raises(ProfileError, match="--resource: unknown"):
        profiles.parse_overrides(["memory=3"])


@pytest.mark.parametrize("resources,gpus", [
    ({}, 0), ({"gpus": 2}, 2), ({"gres": "gpu:a100:4"}, 4), ({"gres": "gpu"}, 1),
    ({"gres": "tmpdisk:100,gpu:1"}, 1), ({"gres": "tmpdisk:100"}, 0), ({"gpus": 0, "gres": "gpu:3"}, 3),
])
def test_requested_gpus(resources: dict, gpus: int):
    assert profiles.requested_gpus(resources) == gpus


def test_submitit_parameter_names():
    params = profiles.to_submitit_parameters({
        "partition": "p", "account": "a", "gpus": 2, "cpus_per_task": 4, "mem_gb": 8, "timeout_min": 5,
        "array_parallelism": 3, "setup": ["x"], "sbatch": {"exclude": "n"}, "max_array_size": 10,
        "max_num_timeout": 2, "description": "d",
    })
    assert params == {
        "nodes": 1, "tasks_per_node": 1, "slurm_partition": "p", "slurm_account": "a", "gpus_per_node": 2,
        "cpus_per_task": 4, "mem_gb": 8, "timeout_min": 5, "slurm_array_parallelism": 3,
        "slurm_setup": ["x"], "slurm_additional_parameters": {"exclude": "n"},
    }
