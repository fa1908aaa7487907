"""Optuna searches that prune: each job reports validation macro-F1 to its trial after every
epoch and a hopeless trial stops (PRUNED in the study, its MLflow run KILLED and saying so)
while the sweep goes on; a text family reports its one value and is never pruned; the sweeper's
time budget; every search preset composes. Real Optuna SQLite studies, the CLI in a subprocess,
real tiny trainings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides, tracking_uri
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from genre_exp.config import config_dir

STUDY = "prune-test"
EPOCHS = 4
# A learning rate that trains the tiny model within an epoch or two, a slower one, and one at
# which nothing is learnt in a few epochs: the search's later trials are clearly worse.
GOOD = {"training.learning_rate": 8e-3, "model.dropout": 0.2}
SLOWER = {"training.learning_rate": 1.5e-3, "model.dropout": 0.2}
HOPELESS = {"training.learning_rate": 1e-4, "model.dropout": 0.2}
PRESETS = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))


def storage_of(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/optuna.db"


def enqueue(root: Path, trials: list[dict]) -> None:
    """A study whose first trials have these parameters, in this order (Optuna's way to start a
    search from known points): the search is the same on every run of the test."""
    import optuna

    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=STUDY, storage=storage_of(root), direction="maximize")
    for params in trials:
        study.enqueue_trial(params)


def load_study(root: Path):
    import optuna

    return optuna.load_study(study_name=STUDY, storage=storage_of(root))


def lstm_search(root: Path, train: Path, test: Path, *extra: str) -> list[str]:
    """lstm_optuna on tiny data, its median pruner judging from the 2nd epoch (1 from 0) once
    two trials completed; embedding size, units and batch size fixed."""
    return [
        "-m",
        "hparams_search=lstm_optuna",
        *tiny_overrides(root, train, test),
        f"training.epochs={EPOCHS}",
        "training.early_stopping.enabled=false",
        "mlflow.log_model=false",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruners.median.n_startup_trials=2",
        "hydra.sweeper.pruners.median.n_warmup_steps=1",
        *extra,
    ]


def runs_by_trial(root: Path):
    """(the sweep's parent run, {trial number: the job's run}), read from the runs' tags."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = {int(r.data.tags["optuna_trial"]): r for r in runs if r is not parent}
    assert len(jobs) == len(runs) - 1, "a job's run names no trial"
    return parent, jobs


def epochs_logged(root: Path, run) -> list[int]:
    import mlflow

    history = mlflow.MlflowClient(tracking_uri(root)).get_metric_history(
        run.info.run_id, "val_macro_f1"
    )
    return sorted(m.step for m in history)


def assert_linked(study, jobs: dict) -> None:
    """Each trial names its job's run, and the run its trial."""
    assert sorted(jobs) == [t.number for t in study.trials]
    for trial in study.trials:
        run = jobs[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["optuna_study"] == STUDY


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_hopeless_trial_is_pruned_and_the_search_goes_on(tmp_path, kaggle_csv, launcher):
    enqueue(tmp_path, [GOOD, SLOWER, HOPELESS, GOOD])
    result = run_cli(lstm_search(tmp_path, *kaggle_csv, f"hydra/launcher={launcher}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    study = load_study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    pruned = study.trials[2]
    # Reported after epochs 0 and 1, judged hopeless after epoch 1 (the warm-up's end).
    assert sorted(pruned.intermediate_values) == [0, 1]
    assert pruned.value == pruned.intermediate_values[1]
    for trial in (study.trials[0], study.trials[1], study.trials[3]):
        assert sorted(trial.intermediate_values) == list(range(EPOCHS))
    assert "trial 2 pruned after epoch 1" in result.stderr

    parent, jobs = runs_by_trial(tmp_path)
    assert_linked(study, jobs)
    killed = jobs[2]
    assert killed.info.status == "KILLED"
    assert killed.data.tags["optuna_state"] == "PRUNED"
    assert killed.data.tags["pruned_at_epoch"] == "1"
    assert "error" not in killed.data.tags
    assert epochs_logged(tmp_path, killed) == [0, 1]
    assert "final_val_macro_f1" not in killed.data.metrics
    for number in (0, 1, 3):
        run = jobs[number]
        assert run.info.status == "FINISHED"
        assert "optuna_state" not in run.data.tags
        assert epochs_logged(tmp_path, run) == list(range(EPOCHS))
        # What the job returned and the study holds is what the run logged.
        assert study.trials[number].value == pytest.approx(run.data.metrics["final_val_macro_f1"])

    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_failed"] == 0
    assert parent.data.metrics["sweep_pruned"] == 1
    best = max((jobs[n] for n in (0, 1, 3)), key=lambda r: r.data.metrics["final_val_macro_f1"])
    assert parent.data.metrics["best_final_val_macro_f1"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_run_id"] in {
        r.info.run_id
        for r in jobs.values()
        if r.data.metrics.get("final_val_macro_f1") == best.data.metrics["final_val_macro_f1"]
    }
    if launcher == "basic":
        # The same command again: a pruned trial counts as done.
        again = run_cli(lstm_search(tmp_path, *kaggle_csv))
        assert again.returncode == 0, again.stderr[-3000:]
        assert "4 of 4 trials done; 0 to run" in again.stderr
        assert len(load_study(tmp_path).trials) == 4


@pytest.mark.slow
def test_without_a_pruner_every_trial_trains_to_its_end(tmp_path, kaggle_csv):
    """The same search with pruning off (and jobs in their own processes): the hopeless trial
    reports every epoch and completes."""
    enqueue(tmp_path, [GOOD, SLOWER, HOPELESS])
    args = lstm_search(tmp_path, *kaggle_csv, "hydra/launcher=submitit_local")
    result = run_cli([*args, "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=3"])
    assert result.returncode == 0, result.stderr[-3000:]

    study = load_study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    hopeless = study.trials[2]
    assert sorted(hopeless.intermediate_values) == list(range(EPOCHS))
    assert hopeless.value < min(t.value for t in study.trials[:2])
    _, jobs = runs_by_trial(tmp_path)
    assert_linked(study, jobs)
    assert [jobs[n].info.status for n in range(3)] == ["FINISHED"] * 3
    assert epochs_logged(tmp_path, jobs[2]) == list(range(EPOCHS))
    assert "optuna_state" not in jobs[2].data.tags


@pytest.mark.slow
def test_a_text_family_reports_its_one_value_and_is_never_pruned(tmp_path, kaggle_csv):
    """A pruner that would stop any trial at its first report (every macro-F1 is below 2)
    leaves a text family's trials alone; each holds its one value, reported at step 0."""
    train, test = kaggle_csv
    overrides = [o for o in tiny_overrides(tmp_path, train, test) if not o.startswith("model.")]
    result = run_cli(
        [
            "-m",
            "hparams_search=tfidf_linear_optuna",
            *overrides,
            "mlflow.log_model=false",
            f"hydra.sweeper.study_name={STUDY}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=threshold",
            "hydra.sweeper.pruners.threshold.lower=2.0",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        assert trial.intermediate_values == {0: trial.value}
    _, jobs = runs_by_trial(tmp_path)
    assert_linked(study, jobs)
    assert [jobs[n].info.status for n in range(2)] == ["FINISHED"] * 2


@pytest.mark.slow
def test_no_trial_starts_once_the_time_budget_is_spent(tmp_path, kaggle_csv):
    train, test = kaggle_csv
    overrides = [o for o in tiny_overrides(tmp_path, train, test) if not o.startswith("model.")]
    result = run_cli(
        [
            "-m",
            "hparams_search=tfidf_linear_optuna",
            *overrides,
            "mlflow.log_model=false",
            f"hydra.sweeper.study_name={STUDY}",
            "hydra.sweeper.n_trials=5",
            # Less than one trial takes: the first starts, no other does.
            "hydra.sweeper.timeout=1",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state.name for t in load_study(tmp_path).trials] == ["COMPLETE"]
    assert "time budget of 1 s spent: no more trials start (4 not run)" in result.stderr


def test_a_job_outside_a_search_never_imports_optuna():
    """A plain run reports to no trial, and does not pay for importing Optuna."""
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from genre_exp import config, fitting, trial
with initialize_config_dir(config_dir={str(config_dir())!r}):
    cfg = compose("config")
assert fitting.trial_callbacks(cfg) == []
assert trial.completed(cfg, 0.5) == 0.5
assert "optuna" not in sys.modules, "optuna imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir())):
        yield lambda overrides: compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def one_value(distribution) -> str:
    """A value the search could draw, as an override's value."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return str(distribution.choices[-1])
    return str(distribution.high)


def search_space(params) -> tuple[dict, dict]:
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    space, fixed, _ = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    return space, fixed


@pytest.mark.parametrize("preset", PRESETS)
def test_every_search_preset_composes(hydra_compose, tmp_path, preset):
    """The preset composes with its sweeper (pruner, storage, study name resolved), maximises
    validation macro-F1 validated honestly, and every parameter it searches (in each branch,
    for the search across families) is a setting of the model it applies to."""
    from genre_exp.models import family_of
    from hydra_plugins.genre_exp_sweeper.resumable_optuna import make_pruner

    cfg = hydra_compose([f"hparams_search={preset}", f"paths.root_dir={tmp_path}"])
    HydraConfig.instance().set_config(cfg)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True, enum_to_str=True)
    assert sweeper["_target_"].endswith("resumable_optuna.ResumableOptunaSweeper")
    assert sweeper["direction"] == "maximize"
    assert sweeper["storage"] == f"sqlite:///{tmp_path}/mlruns/optuna.db"
    assert sweeper["study_name"] == f"{preset}-{cfg.data.name}-{cfg.mlflow.experiment_name}"
    assert sweeper["sampler"]["seed"] is not None
    pruner = make_pruner(cfg.hydra.sweeper.pruner, cfg.hydra.sweeper.pruners)
    assert type(pruner).__name__ in ("MedianPruner", "HyperbandPruner", "NopPruner")
    assert cfg.data.val_split == "by_artist"
    assert cfg.data.val_weights == "balanced"
    assert cfg.training.class_weight == "balanced"
    assert cfg.training.early_stopping.enabled
    assert cfg.training.early_stopping.monitor == "val_macro_f1"

    space, _ = search_space(sweeper["params"])
    assert space, f"{preset}: nothing to search"
    branches = sweeper["branches"]
    if not branches:
        family_of(cfg.model)
        sampled = [f"{name}={one_value(d)}" for name, d in space.items()]
        hydra_compose([f"hparams_search={preset}", *sampled])
        return
    for param, by_value in branches.items():
        assert set(by_value) <= set(space[param].choices), f"{preset}: {param} branches"
        for value, branch_preset in by_value.items():
            assert branch_preset in PRESETS, f"{preset}: {value} -> {branch_preset}"
            branch_params = OmegaConf.load(
                config_dir() / "hparams_search" / f"{branch_preset}.yaml"
            ).hydra.sweeper.params
            branch_space, branch_fixed = search_space(branch_params)
            sampled = [f"{name}={one_value(d)}" for name, d in branch_space.items()]
            sampled += [f"{name}={v}" for name, v in branch_fixed.items()]
            chosen = hydra_compose([f"hparams_search={preset}", f"{param}={value}", *sampled])
            family_of(chosen.model)


def test_a_branch_parameter_is_drawn_only_in_its_branch():
    """Across families, a trial draws the chosen family's parameters (under its own names),
    none of another family's."""
    import optuna

    from hydra_plugins.genre_exp_sweeper._sweep import Branch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    branches = {
        "bigru": Branch("bigru", ["model.units=choice(32, 64)", "training.epochs=7"]),
        "cnn": Branch("cnn", ["model.filters=choice(16, 32)"]),
    }
    trial = study.ask()
    overrides = branches["cnn"].overrides(trial, fixed_by_user={})
    assert list(trial.params) == ["cnn:model.filters"]
    assert overrides == [f"model.filters={trial.params['cnn:model.filters']}"]
    trial = study.ask()
    overrides = branches["bigru"].overrides(trial, fixed_by_user={"training.epochs": "2"})
    assert list(trial.params) == ["bigru:model.units"]
    # A setting given on the command line wins over the branch's.
    assert overrides == [f"model.units={trial.params['bigru:model.units']}"]
