"""Strict configuration and bad input: a clear message, a non-zero exit, and no store left behind."""

import subprocess
import sys

import pytest
from conftest import TINY, run_app
from omegaconf import OmegaConf

from datatransfer.config import (
    SWEEP_DEFINING,
    ConfigError,
    PlantedRowConfig,
    RandomSubsetsSweepConfig,
    compose,
    row_defining,
    structured,
    validate,
)
from datatransfer.config.multirun import job_dirname
from datatransfer.store.sweep_store import Store


def test_default_is_the_mini_experiment():
    cfg = compose()
    assert cfg.name == "mini" and cfg.store.path == "runs/mini/store.zarr"
    assert list(cfg.targets) == ["digits", "coarse"] and cfg.launcher.name == "local"
    validate(cfg)


def test_interface_key_names_exist():
    cfg = compose(["sweep.alpha=0.25", "sweep.num_models=7", "sweep.seed=3", "store.path=/x/s.zarr",
                   "launcher.workers=2", "targets=[digits]"])
    assert (cfg.sweep.alpha, cfg.sweep.num_models, cfg.sweep.seed) == (0.25, 7, 3)
    assert cfg.store.path == "/x/s.zarr" and cfg.launcher.workers == 2 and list(cfg.targets) == ["digits"]


def test_local_workers_default_to_one_per_cpu():
    from datatransfer.launchers.local import local_workers
    from datatransfer.rows.worker import cpus_allotted

    assert local_workers(compose(["compute.device=cpu"])) == cpus_allotted()
    assert local_workers(compose(["compute.device=cpu", "launcher.workers=3"])) == 3
    # the key belongs to the local launcher only: with launcher=slurm it is an unknown key
    r = run_app("launch", "launcher=slurm", "launcher.workers=2", "--cfg", "job")
    assert r.returncode != 0 and "workers" in r.stderr


def test_print_resolved_config():
    r = run_app("launch", "--cfg", "job", "sweep.num_models=9")
    assert r.returncode == 0, r.stderr
    assert "num_models: 9" in r.stdout and "alpha: 0.5" in r.stdout


@pytest.mark.parametrize(
    "override,needle",
    [
        ("sweep.nm=3", "nm"),  # misspelt key
        ("sweep.num_models=many", "num_models"),  # wrong type
        ("bogus=1", "bogus"),  # unknown top-level key
        ("targets=[nosuch]", "nosuch"),  # unknown target
    ],
)
def test_bad_overrides_exit_nonzero_naming_the_key(tmp_path, override, needle):
    store = tmp_path / "store.zarr"
    r = run_app("launch", override, f"store.path={store}")
    assert r.returncode != 0
    assert needle in r.stderr
    assert not store.exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("sweep.alpha=0", "sweep.alpha"),
        ("sweep.alpha=1.5", "sweep.alpha"),
        ("sweep.num_models=0", "sweep.num_models"),
        ("sweep.seed=-1", "sweep.seed"),
        ("sweep.init=random", "sweep.init"),
        ("sweep.alpha=0.01", "sweep.alpha"),  # round(0.01 x 30 classes) = 0: every row would train on nothing
        ("source.root=/nonexistent/data", "error: source: data file not found: /nonexistent/data/mini.npz"),
        ("targets.digits.root=/nonexistent/data", "error: targets.digits: data file not found"),
        ("transfer.modes=[fixed,linear]", "transfer.modes"),
        ("transfer.modes=[]", "transfer.modes: select at least one of ['fixed', 'full']"),
        ("launcher.workers=-1", "launcher.workers"),
        ("train.amp=yes", "train.amp: must be true, false or auto, got 'yes'"),
    ],
)
def test_bad_values_exit_nonzero_and_leave_no_store(tmp_path, override, needle):
    store = tmp_path / "store.zarr"
    r = run_app("launch", *TINY, override, f"store.path={store}")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_store_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_app("launch", *TINY, f"store.path={blocker / 'store.zarr'}")
    assert r.returncode == 2 and "cannot create the store" in r.stderr
    assert blocker.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_validate_names_key():
    cfg = compose(["sweep.outputs=[softmax_gt,accuracy]"])
    with pytest.raises(ConfigError, match="sweep.outputs"):
        validate(cfg)


# ---- the config package: explicit registration, groups, what defines a row -------------------------------------
def test_importing_the_config_package_registers_nothing():
    code = ("from hydra.core.config_store import ConfigStore\n"
            "import datatransfer.config as config\n"
            "repo = ConfigStore.instance().repo\n"
            "assert 'base_config.yaml' not in repo and 'row' not in repo, sorted(repo)\n"
            "config.register()\n"
            "assert 'base_config.yaml' in repo and set(repo['row']) == {'base_trained.yaml', 'base_planted.yaml'}\n"
            "assert set(repo['sweep']) == {'base_random_subsets.yaml', 'base_example_subsets.yaml',"
            " 'base_counterfactual.yaml'}\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_sweep_and_row_are_groups():
    cfg = compose(["sweep.num_models=256", "sweep.alpha=0.3"])
    assert (cfg.sweep.kind, cfg.sweep.num_models, cfg.sweep.alpha) == ("random_subsets", 256, 0.3)
    assert cfg.row.kind == "trained" and "planted" not in cfg
    assert row_defining(cfg) == SWEEP_DEFINING and "row" in SWEEP_DEFINING
    p = compose(["experiment=planted", "row.units=30", "row.examples=[4]"])
    assert (p.row.kind, p.row.units, list(p.row.examples), p.row.noise) == ("planted", 30, [4], 0.5)
    assert row_defining(p) == ("sweep", "row") and list(p.targets) == []
    validate(p)
    assert compose(["row=planted", "targets=[]"]).row.units == 1000  # the group, without the experiment
    with pytest.raises(ConfigError, match="row.units"):
        validate(compose(["experiment=planted", "row.units=1"]))
    # a key of another row kind is unknown
    r = run_app("launch", "row.units=3", "--cfg", "job")
    assert r.returncode != 0 and "units" in r.stderr


def test_a_stored_config_is_typed_again_by_its_kinds():
    d = OmegaConf.to_container(compose(["experiment=planted", "row.units=12"]), resolve=True)
    d.pop("launcher")
    cfg = structured(d)
    assert OmegaConf.get_type(cfg.row) is PlantedRowConfig and cfg.row.units == 12
    assert OmegaConf.get_type(cfg.sweep) is RandomSubsetsSweepConfig
    with pytest.raises(ConfigError, match="row.kind"):
        structured({**d, "row": {"kind": "nosuch"}})


def test_resume_of_a_planted_store(tmp_path):
    from datatransfer.launchers.resume import resume_config
    from datatransfer.store.open import open_store

    store = open_store(compose(["experiment=planted", "row.units=12", "row.examples=[5]", "sweep.num_models=4",
                                f"store.path={tmp_path / 's.zarr'}"]))
    assert set(store.attrs["config"]) >= {"row", "sweep"} and "planted" not in store.attrs["config"]
    cli = compose([f"store.path={store.path}", "launcher=local"], config_name="resume")
    cfg, added = resume_config(store, cli, ["launcher=local"])
    assert added == []
    assert cfg.row.kind == "planted" and cfg.row.units == 12 and cfg.launcher.name == "local"
    open_store(cfg)  # the same sweep: reopened, not refused


def test_resume_of_a_local_store_stays_local(tmp_path):
    """A store that never went to Slurm continues with the local launcher it was made with (docs/slurm.md), not
    with Slurm's defaults; a Slurm-only key is refused by name."""
    from datatransfer.launchers.resume import resume_config
    from datatransfer.store.open import open_store

    store = open_store(compose(["experiment=planted", "row.units=12", "row.examples=[5]", "sweep.num_models=4",
                                "launcher.workers=1", f"store.path={tmp_path / 's.zarr'}"]))
    given = [f"store.path={store.path}"]
    cfg, _ = resume_config(store, compose(given, config_name="resume"), given)
    assert cfg.launcher.name == "local" and cfg.launcher.workers == 1
    given = [f"store.path={store.path}", "launcher.timeout_min=240"]
    with pytest.raises(ConfigError, match="launcher.timeout_min: not a setting of the local launcher"):
        resume_config(store, compose(given, config_name="resume"), given)
    given = [f"store.path={store.path}", "launcher=slurm", "launcher.timeout_min=240"]
    cfg, _ = resume_config(store, compose(given, config_name="resume"), given)
    assert cfg.launcher.name == "slurm" and cfg.launcher.timeout_min == 240


# ---- Hydra multirun: one store per job ---------------------------------------------------------------------------
def test_multirun_job_dirname():
    name = job_dirname(["experiment=planted", "sweep.alpha=0.3", "row.examples=[5,3]", "launcher=slurm",
                        "launcher.partition=gpu", "launch.dry_run=true", "compute.device=cpu", "store.path=/x",
                        "store.save_backbones=true", "hydra.verbose=true", "+targets.x.root='/a b'"])
    assert name == ("experiment-planted+row.examples-5_3+store.save_backbones-true+sweep.alpha-0.3+"
                    "targets.x.root-a_b")
    assert job_dirname(["launcher.workers=2"]) == ""
    long = job_dirname([f"targets.t{i}.lr=0.{i}" for i in range(40)])
    assert len(long) == 200 and long != job_dirname([f"targets.t{i}.lr=0.{i}" for i in range(41)])
    # the path is a plain override value: `launch.status store.path=<it>` needs no quoting
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = f"runs/planted/{name}/store.zarr"
    assert OverridesParser.create().parse_override(f"store.path={path}").value() == path


def test_multirun_gives_each_job_its_own_store(tmp_path):
    r = run_app("launch", "-m", "experiment=planted", "sweep.num_models=40", "row.units=10", "row.examples=[6]",
                "launcher.workers=1", "sweep.alpha=0.3,0.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    stores = sorted((tmp_path / "runs" / "planted").glob("*/store.zarr"))
    assert [s.parent.name for s in stores] == [
        f"experiment-planted+row.examples-6+row.units-10+sweep.alpha-{a}+sweep.num_models-40" for a in ("0.3", "0.5")]
    # nothing else litters the working directory: Hydra's multirun.yaml goes next to the stores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert sorted(p.name for p in (tmp_path / "runs" / "planted").iterdir()) == [
        *(s.parent.name for s in stores), "multirun.yaml"]
    alphas = []
    for s in stores:
        store = Store.open(s)
        assert store.completed().all() and store.num_rows == 40
        alphas.append(store.attrs["config"]["sweep"]["alpha"])
        path = s.relative_to(tmp_path)
        st = run_app("launch.status", f"store.path={path}", cwd=tmp_path)
        assert st.returncode == 0 and "40 completed" in st.stdout, st.stdout + st.stderr[-2000:]
        ag = run_app("aggregate", f"store.path={path}", "diagnostics.enabled=false", cwd=tmp_path)
        assert ag.returncode == 0, ag.stdout + ag.stderr[-2000:]
        assert (s.parent / "influence.zarr").is_dir()
    assert alphas == [0.3, 0.5]
    # a single run keeps runs/<name>/store.zarr
    assert compose(["experiment=planted"]).store.path == "runs/planted/store.zarr"


# ---- what a run would refuse, refused first (found by QA) --------------------------------------------------------
def test_keys_added_with_plus_that_no_schema_has_are_refused_by_name(tmp_path):
    """Hydra suggests `+key=value` for an unknown key; a typo added that way used to pass silently (and to change
    the sweep's fingerprint)."""
    with pytest.raises(ConfigError, match=r"train.epoch: no such setting; did you mean epochs"):
        validate(compose(["+train.epoch=3"]))
    with pytest.raises(ConfigError, match=r"^foo: no such setting"):
        validate(compose(["+foo=3"]))
    validate(compose(["launcher=slurm", "+launcher.additional_parameters.gres=gpu:1"]))  # a dict section: any key
    store = tmp_path / "s.zarr"
    r = run_app("launch", "experiment=planted", "+sweep.nm=3", f"store.path={store}", cwd=tmp_path)
    assert r.returncode == 2 and "error: sweep.nm: no such setting" in r.stderr and not store.exists(), r.stderr
    r = run_app("aggregate", f"store.path={store}", "+estimator.lamda=1", cwd=tmp_path)
    assert r.returncode == 2 and "error: estimator.lamda: no such setting" in r.stderr, r.stderr


def test_a_dry_run_refuses_what_the_run_refuses_and_neither_leaves_anything(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    planted = ["experiment=planted", "row.units=6", "row.examples=[5]", "sweep.num_models=4"]
    for dry in (["launch.dry_run=true"], []):
        r = run_app("launch", *planted, f"store.path={afile / 'x.zarr'}", *dry, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"error: store.path={afile / 'x.zarr'}: cannot create the store there: {afile} is a file" in r.stderr
    r = run_app("launch", *planted, "store.path=/proc/dt-x.zarr", cwd=tmp_path)
    assert r.returncode == 2 and "error: store.path=/proc/dt-x.zarr: cannot create the store there" in r.stderr
    assert "Traceback" not in r.stderr
    # a counterfactual sweep's plan (its influence store, target, k, examples) is checked by the dry run too
    cf = ["sweep=counterfactual", "targets=[digits]", "transfer.modes=[fixed]", "counterfactual.target=digits",
          "counterfactual.mode=fixed",
          f"store.path={tmp_path / 'cf.zarr'}", "launch.dry_run=true"]
    r = run_app("launch", *cf, f"counterfactual.influence={tmp_path / 'nosuch.zarr'}", cwd=tmp_path)
    assert r.returncode == 2 and "error: counterfactual.influence:" in r.stderr, r.stderr
    # the local launcher trains here: a CUDA device this machine lacks is refused before the store is made
    r = run_app("launch", "compute.device=cuda:7", "launcher.workers=1", f"store.path={tmp_path / 'g.zarr'}",
                cwd=tmp_path)
    assert r.returncode == 2 and "error: compute.device=cuda:7: this machine has no such CUDA device" in r.stderr
    assert not (tmp_path / "g.zarr").exists() and not (tmp_path / "cf.zarr").exists()


def test_a_data_error_names_its_config_section_once():
    from datatransfer.errors import DataError
    from datatransfer.store.open import _naming

    def fails(message):
        def open_data():
            raise DataError(message)
        return open_data

    with pytest.raises(DataError, match=r"^source: data file not found: /x$"):
        _naming("source", fails("data file not found: /x"))
    # a message that names its key already keeps it as it is (was "source: source.loader=ffcv needs ffcv ...")
    with pytest.raises(DataError, match=r"^source\.loader=ffcv needs ffcv"):
        _naming("source", fails("source.loader=ffcv needs ffcv, which does not import here"))
