from uss_bench.spec import RunSpec


def test_run_id_is_stable_and_content_addressed():
    a = RunSpec("dino", "synthetic", "vit-s8", seed=0, overrides={"train.steps": 5, "hparams.x": 1})
    b = RunSpec("dino", "synthetic", "vit-s8", seed=0, overrides={"hparams.x": 1, "train.steps": 5})
    c = RunSpec("dino", "synthetic", "vit-s8", seed=1)
    assert a.run_id == b.run_id and len(a.run_id) == 12
    assert a.run_id != c.run_id
    assert RunSpec.from_dict(a.to_dict()) == a
