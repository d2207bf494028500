"""Counterfactual keep-lists (datatransfer/masks/counterfactual.py) and the hand-picked rule (handpicked.py)."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from datatransfer.config.sweep import CounterfactualConfig
from datatransfer.errors import ConfigError
from datatransfer.masks import counterfactual as cf
from datatransfer.masks import handpicked as hp


def section(**kw):
    return OmegaConf.structured(CounterfactualConfig(**kw))


def test_rows_follow_orders_k_runs_then_baselines_then_examples():
    infl = np.array([0.3, -0.2, 0.0, 0.5, -0.4, 0.1])
    c = section(orders=["bottom", "top", "random"], k=[0, 2], runs=3, baselines=["full", "handpicked"])
    picked = np.array([1, 0, 0, 1, 0, 0], dtype=bool)
    masks, meta = cf.keep_masks(c, infl, picked, [(7, 4)])
    assert masks.shape == (cf.num_rows(c) + 3, 6)  # num_rows counts auto examples only; one explicit pair here
    assert masks.shape[0] == 3 * 2 * 3 + 2 * 3 + 3
    # independent ranking: bottom removes the lowest, top the highest
    lowest, highest = set(np.argsort(infl)[:2]), set(np.argsort(-infl)[:2])
    for i in range(len(masks)):
        if meta.order[i] >= 0:
            removed = set(np.flatnonzero(~masks[i]))
            assert len(removed) == meta.k[i]
            if cf.ORDERS[meta.order[i]] == "bottom" and meta.k[i] == 2:
                assert removed == lowest == {1, 4}
            if cf.ORDERS[meta.order[i]] == "top" and meta.k[i] == 2:
                assert removed == highest == {0, 3}
    full = meta.baseline == cf.BASELINES.index("full")
    hand = meta.baseline == cf.BASELINES.index("handpicked")
    assert full.sum() == 3 and masks[full].all() and (meta.k[full] == 0).all()
    assert hand.sum() == 3 and (masks[hand] == picked).all() and (meta.k[hand] == 4).all()
    ex = meta.example == 7
    assert ex.sum() == 3 and (~masks[ex]).sum(axis=1).tolist() == [1, 1, 1] and not masks[ex][:, 4].any()
    assert list(meta.run[ex]) == [0, 1, 2]
    # a row belongs to exactly one of order / baseline / example
    assert (((meta.order >= 0).astype(int) + (meta.baseline >= 0) + (meta.example >= 0)) == 1).all()


def test_random_removal_is_a_function_of_seed_k_run():
    a = cf.random_removal(5, 3, 1, 30)
    assert len(set(a)) == 3 and (a == cf.random_removal(5, 3, 1, 30)).all()
    assert not (a == cf.random_removal(5, 3, 2, 30)).all() or not (a == cf.random_removal(6, 3, 1, 30)).all()
    m1, _ = cf.keep_masks(section(orders=["random"], k=[3], runs=4, baselines=[], seed=5), np.zeros(30))
    m2, _ = cf.keep_masks(section(orders=["random"], k=[3], runs=4, baselines=[], seed=5), np.ones(30))
    assert (m1 == m2).all()  # random does not look at the influences
    assert len({tuple(r) for r in m1}) == 4  # runs differ


def test_ties_and_nan_in_the_ranking():
    infl = np.array([0.0, np.nan, 0.0, -1.0])
    assert list(cf.removal_ranking(infl, "bottom")) == [3, 0, 2, 1]
    assert list(cf.removal_ranking(infl, "top")) == [0, 2, 3, 1]


def test_k_of_all_units_is_refused_and_k_zero_keeps_everything():
    with pytest.raises(ConfigError, match=r"counterfactual.k: \[6\] would remove all 6"):
        cf.keep_masks(section(k=[2, 6], baselines=[]), np.zeros(6))
    masks, meta = cf.keep_masks(section(k=[0], runs=2, baselines=[]), np.arange(6.0))
    assert masks.all() and (meta.k == 0).all()


def test_handpicked_baseline_that_matches_nothing_is_refused():
    with pytest.raises(ConfigError, match="matched no source unit"):
        cf.keep_masks(section(orders=[], baselines=["handpicked"]), np.zeros(4), np.zeros(4, dtype=bool))


def test_the_config_counts_its_rows():
    c = section(orders=["bottom", "top"], k=[1, 2, 3], runs=5, baselines=["handpicked"], examples=[1, 2])
    assert cf.baselines(c) == ["full", "handpicked"]  # examples compare to full-source rows
    assert cf.num_rows(c) == (2 * 3 + 2 + 2) * 5


# ---- hand-picked rule -----------------------------------------------------------------------------------------------
def _mini():
    import importlib.resources

    path = importlib.resources.files("datatransfer") / "data" / "mini.npz"
    return np.load(str(path))


def test_mini_rule_digits_picks_the_mnist_digits():
    d = _mini()
    units = [str(u) for u in d["source_class_names"]]
    keep, rule = hp.handpicked("digits", units, [str(c) for c in d["digits_class_names"]])
    assert hp.names(keep, units) == [f"mnist:{i}" for i in range(10)] and rule.startswith("mini")
    keep, _ = hp.handpicked("digits", units, ["3", "7"])
    assert hp.names(keep, units) == ["mnist:3", "mnist:7"]


def test_mini_coarse_groups_agree_with_the_data():
    """The rule's table equals the grouping that made the coarse target (its images' fine classes)."""
    d = _mini()
    units = [str(u) for u in d["source_class_names"]]
    groups = [str(c) for c in d["coarse_class_names"]]
    fine, label = d["coarse_test_fine"], d["coarse_test_y"]
    for u, name in enumerate(units):
        assert {groups[g] for g in np.unique(label[fine == u])} == {hp.mini_group(name)}
    keep, _ = hp.handpicked("coarse", units, ["bag", "bird"])
    assert hp.names(keep, units) == ["fashion:bag", "animal:bird"]


def test_imagenet_rule_reads_the_shipped_lists_and_refuses_without_them(tmp_path):
    units = [f"n{i:08d}" for i in range(1000)]
    with pytest.raises(ConfigError, match="not there"):
        hp.handpicked("cifar10", units, ["airplane"], tmp_path / "absent.json")
    f = tmp_path / "lists.json"
    f.write_text(json.dumps({"provenance": {}, "targets": {"cifar10": {"classes": [404, 895], "wnids": [],
                                                                       "matched": {}}}}))
    keep, rule = hp.handpicked("cifar10", units, ["airplane"], f)
    assert list(np.flatnonzero(keep)) == [404, 895] and "cifar10" in rule
    with pytest.raises(ConfigError, match="no hand-picked classes for target 'pets'"):
        hp.handpicked("pets", units, ["cat"], f)


def test_other_units_have_no_rule():
    with pytest.raises(ConfigError, match="no hand-picked rule"):
        hp.handpicked("t0", ["u0", "u1"], ["c0"])
