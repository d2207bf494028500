import numpy as np
import pytest

from datatransfer.masks import mask_matrix, row_mask, row_seed


@pytest.mark.parametrize("units,alpha", [(30, 0.5), (1000, 0.5), (31, 0.5), (10, 0.2)])
def test_fixed_size_masks_have_exactly_round_alpha_u_units(units, alpha):
    m = mask_matrix(seed=3, num_rows=50, num_units=units, alpha=alpha)
    assert m.dtype == bool and m.shape == (50, units)
    assert (m.sum(axis=1) == round(alpha * units)).all()


def test_row_mask_depends_only_on_seed_and_row():
    full = mask_matrix(seed=7, num_rows=20, num_units=30, alpha=0.5)
    # any order, any subset: same rows
    for i in [19, 3, 0, 11]:
        assert (row_mask(7, i, 30, 0.5) == full[i]).all()
    assert (mask_matrix(7, 20, 30, 0.5) == full).all()
    assert not (mask_matrix(8, 20, 30, 0.5) == full).all()
    assert len({tuple(r) for r in full}) == 20  # rows differ from one another


def test_masks_are_balanced_over_many_rows():
    m = mask_matrix(seed=0, num_rows=2000, num_units=30, alpha=0.5)
    freq = m.mean(axis=0)
    assert np.abs(freq - 0.5).max() < 0.05


def test_bernoulli_scheme():
    m = mask_matrix(seed=1, num_rows=500, num_units=40, alpha=0.3, scheme="bernoulli")
    sizes = m.sum(axis=1)
    assert sizes.std() > 0  # not a fixed size
    assert abs(m.mean() - 0.3) < 0.02
    assert (row_mask(1, 17, 40, 0.3, "bernoulli") == m[17]).all()


def test_row_seeds_are_deterministic_and_distinct():
    seeds = [row_seed(0, i) for i in range(100)]
    assert seeds == [row_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100
    assert row_seed(1, 0) != row_seed(0, 0)
    assert all(0 <= s < 2**63 for s in seeds)


def test_alpha_that_keeps_none_or_all_units_is_refused():
    from omegaconf import OmegaConf

    from datatransfer.errors import ConfigError
    from datatransfer.masks import matrix

    sweep = OmegaConf.create({"kind": "random_subsets", "seed": 0, "num_models": 3, "alpha": 0.01,
                              "scheme": "fixed_size"})
    with pytest.raises(ConfigError, match="sweep.alpha: .* none of the units"):
        matrix(sweep, 30)  # round(0.3) = 0
    sweep.alpha = 0.99
    with pytest.raises(ConfigError, match="all of the units"):
        matrix(sweep, 30)
    sweep.alpha = 0.5
    assert matrix(sweep, 30).sum(axis=1).tolist() == [15, 15, 15]


def test_repeated_rows_share_a_mask_keep_their_own_seed_and_survive_extension():
    from datatransfer.config import ConfigError, compose, validate
    from datatransfer.masks import blocks, matrix
    from datatransfer.store.open import store_spec
    from datatransfer.store.spec import fingerprint

    m = mask_matrix(seed=5, num_rows=12, num_units=20, alpha=0.5, repeats=3)
    plain = mask_matrix(seed=5, num_rows=12, num_units=20, alpha=0.5)
    for i in range(12):
        # rows 2, 5, 8, 11 repeat rows 1, 4, 7, 10; every other row is the plain sweep's row
        assert (m[i] == (plain[i - 1] if i % 3 == 2 else plain[i])).all()
    assert row_seed(5, 2) != row_seed(5, 1)
    assert (mask_matrix(5, 20, 20, 0.5, repeats=3)[:12] == m).all()  # a longer sweep starts with the same rows
    base = ["experiment=planted", "row.units=20", "sweep.num_models=12"]
    cfg = compose([*base, "sweep.repeats=3"])
    assert (matrix(cfg.sweep, 20) == mask_matrix(0, 12, 20, 0.5, repeats=3)).all()
    # a store is written a block of rows at a time: any block equals those rows of the matrix, repeats included
    # (a block may start on a repeated row, whose original is in the block before)
    get = blocks(cfg.sweep, 20)
    for lo, hi in [(0, 12), (2, 3), (2, 6), (5, 9), (11, 12)]:
        assert (get(lo, hi) == matrix(cfg.sweep, 20)[lo:hi]).all()
    assert (store_spec(cfg).masks(0, 12) == matrix(cfg.sweep, 20)).all() and store_spec(cfg).num_rows == 12
    # repeats=0 leaves the fingerprint of a sweep without the key (stores made before it existed) as it was
    spec = store_spec(compose(base))
    assert "repeats" not in spec.sweep_defining["sweep"]
    assert store_spec(cfg).sweep_defining["sweep"]["repeats"] == 3
    assert fingerprint(store_spec(cfg).sweep_defining) != fingerprint(spec.sweep_defining)
    with pytest.raises(ConfigError, match="sweep.repeats"):
        validate(compose([*base, "sweep.repeats=1"]))
