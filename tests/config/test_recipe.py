"""The paper-scale recipe as configured (experiment=imagenet_transfer) and the schedules it relies on.

Values are checked against ../shared/recipe.md (the paper's Appendix A and the authors' release). No data needed.
"""

import pytest
import yaml
from conftest import run_app

from datatransfer.config import ConfigError, compose, validate
from datatransfer.train.schedules import lr_factor, resolution_at

# target: (epochs, lr, schedule, train decoder, eval decoder) -- recipe.md's transfer table
TARGETS = {
    "aircraft": (24, 0.3, "cyclic", "center_crop", "center_crop"),
    "birdsnap": (15, 0.3, "cyclic", "random_resized_crop", "center_crop"),
    "caltech101": (24, 0.2, "cyclic", "center_crop", "center_crop"),
    "caltech256": (14, 0.2, "cyclic", "center_crop", "center_crop"),
    "cifar10": (15, 0.1, "cyclic", "upsample", "upsample"),
    "cifar100": (15, 0.1, "cyclic", "upsample", "upsample"),
    "flowers": (50, 0.15, "cyclic", "center_crop", "center_crop"),
    "food": (15, 0.1, "step", "center_crop", "center_crop"),
    "pets": (24, 0.1, "cyclic", "random_resized_crop", "center_crop"),
    "cars": (50, 0.3, "cyclic", "random_resized_crop", "center_crop"),
    "sun397": (24, 0.2, "cyclic", "random_resized_crop", "center_crop"),
}


def _job(*overrides):
    r = run_app("launch", "experiment=imagenet_transfer", *overrides, "--cfg", "job")
    assert r.returncode == 0, r.stderr[-3000:]
    return yaml.safe_load(r.stdout)


def test_cfg_job_prints_the_paper_recipe():
    c = _job()
    assert c["name"] == "imagenet_transfer"
    assert c["model"]["arch"] == "resnet18"
    assert c["source"]["name"] == "imagenet" and c["source"]["loader"] == "ffcv"
    assert c["source"]["mean"] == [0.485, 0.456, 0.406] and c["source"]["std"] == [0.229, 0.224, 0.225]
    tr = c["train"]
    assert (tr["epochs"], tr["batch_size"], tr["optimizer"], tr["lr"], tr["momentum"]) == (16, 1024, "sgd", 0.5, 0.9)
    assert (tr["schedule"], tr["peak_epoch"], tr["label_smoothing"]) == ("cyclic", 2, 0.0)
    assert tr["weight_decay"] == 5e-4  # the paper's; the release's 5e-5 is an override away
    assert (tr["min_res"], tr["max_res"], tr["res_step"], tr["eval_res"], tr["amp"]) == (160, 192, 32, 224, True)
    sw = c["sweep"]
    assert (sw["alpha"], sw["num_models"], sw["scheme"], sw["unit"]) == (0.5, 7540, "fixed_size", "class")
    tf = c["transfer"]
    assert tf["modes"] == ["fixed", "full"] and tf["normalization"] == "source"
    for mode in ("fixed", "full"):
        r = tf[mode]
        assert (r["optimizer"], r["momentum"], r["batch_size"], r["weight_decay"], r["peak_epoch"]) == \
            ("sgd", 0.9, 1024, 5e-4, 5), mode
        assert (r["step_every"], r["step_gamma"]) == (5, 0.1)
    assert tf["fixed"]["solver"] == "sgd" and tf["fixed"]["batchnorm"] == "train"
    assert tf["full"]["head_init"] == "random"
    assert list(c["targets"]) == list(TARGETS)
    for name, (epochs, lr, schedule, train_dec, eval_dec) in TARGETS.items():
        t = c["targets"][name]
        assert (t["epochs"], t["lr"], t["schedule"], t["train_decoder"], t["eval_decoder"], t["resolution"]) == \
            (epochs, lr, schedule, train_dec, eval_dec, 224), name
        # the release's normalisation, used with transfer.normalization=target
        if name.startswith("cifar"):
            assert t["mean"] == [0.4914, 0.4822, 0.4465], name
        else:
            assert (t["mean"], t["std"]) == ([0.0] * 3, [1.0] * 3), name
    assert c["store"]["save_backbones"] is True


def test_every_value_is_overridable():
    c = _job("train.epochs=8", "targets=[cifar10,pets]", "train.weight_decay=5e-5", "targets.pets.lr=0.05",
             "transfer.fixed.batchnorm=frozen", "transfer.normalization=target", "sweep.num_models=100",
             "compute.device=cuda:1")
    assert c["train"]["epochs"] == 8 and c["train"]["weight_decay"] == 5e-5
    assert list(c["targets"]) == ["cifar10", "pets"] and c["targets"]["pets"]["lr"] == 0.05
    assert c["transfer"]["fixed"]["batchnorm"] == "frozen" and c["transfer"]["normalization"] == "target"
    assert c["sweep"]["num_models"] == 100 and c["compute"]["device"] == "cuda:1"
    cfg = compose(["experiment=imagenet_transfer", "source.root=/data/betons", "targets=[cifar10,pets]",
                   "transfer.normalization=target"])
    validate(cfg)


def test_misspelt_recipe_key_fails_naming_it():
    r = run_app("launch", "experiment=imagenet_transfer", "targets.pets.decoder=center_crop", "--cfg", "job")
    assert r.returncode != 0 and "decoder" in r.stderr


@pytest.mark.parametrize("overrides,key", [
    ([], "source.root"),  # loader=ffcv needs the prepared data's folder
    (["source.root=/d", "targets.pets.train_decoder=resize"], "targets.pets.train_decoder"),
    (["source.root=/d", "targets.food.schedule=cosine"], "targets.food.schedule"),
    (["source.root=/d", "transfer.fixed.solver=adam"], "transfer.fixed.solver"),
    (["source.root=/d", "compute.device=gpu"], "compute.device"),
])
def test_bad_recipe_values_name_the_key(overrides, key):
    cfg = compose(["experiment=imagenet_transfer", "targets=[pets,food]", *overrides])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_target_normalization_needs_values_per_target():
    with pytest.raises(ConfigError, match="targets.digits.mean"):
        validate(compose(["transfer.normalization=target"]))  # the mini targets have none


def test_progressive_resolution_follows_the_recipe():
    tr = compose(["experiment=imagenet_transfer"]).train
    assert [resolution_at(tr, e) for e in range(16)] == [160] * 12 + [192] * 4


def test_lr_schedules():
    # source: per-iteration triangle, 0 -> 0.5 at epoch 2 -> 0 at epoch 16
    assert lr_factor("cyclic", 2.0, 16, 2) == 1.0 and lr_factor("cyclic", 1.0, 16, 2) == 0.5
    assert lr_factor("cyclic", 16.0, 16, 2) == 0.0 and abs(lr_factor("cyclic", 9.0, 16, 2) - 0.5) < 1e-12
    # Food-101: x0.1 every 5 epochs; progress t in (e, e + 1] belongs to epoch e
    factors = [lr_factor("step", e + 0.5, 15, 5, 5, 0.1) for e in range(15)]
    assert factors == pytest.approx([1.0] * 5 + [0.1] * 5 + [0.01] * 5)
    assert lr_factor("step", 5.0, 15, 5, 5, 0.1) == 1.0  # the last step of epoch 4


def test_every_stage_is_a_recipe_with_its_own_defaults():
    from dataclasses import fields

    from datatransfer.config import Recipe
    from datatransfer.config.sweep import FixedTransferConfig, FullTransferConfig, TrainConfig

    keys = [f.name for f in fields(Recipe)]
    assert keys == ["epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "peak_epoch",
                    "step_every", "step_gamma"]
    defaults = {  # the mini recipe: each stage's own values
        TrainConfig: (3, 128, "adam", 1e-2, 0.9, 0.0, "onecycle", 0.6, 5, 0.1),
        FixedTransferConfig: (2, 64, "sgd", 0.1, 0.9, 1e-3, "cyclic", 0.5, 5, 0.1),
        FullTransferConfig: (1, 64, "adam", 1e-3, 0.9, 0.0, "onecycle", 0.3, 5, 0.1),
    }
    for schema, values in defaults.items():
        assert issubclass(schema, Recipe)
        assert tuple(getattr(schema(), k) for k in keys) == values, schema.__name__
    cfg = compose(["train.lr=0.3", "transfer.full.epochs=4", "transfer.fixed.step_gamma=0.5"])
    assert (cfg.train.lr, cfg.transfer.full.epochs, cfg.transfer.fixed.step_gamma) == (0.3, 4, 0.5)
    assert (cfg.transfer.fixed.solver, cfg.transfer.full.head_init, cfg.train.amp) == ("newton", "linear_probe", "auto")
