"""The search driver: check the configuration, start (or join) Ray, run (or resume) the tuner,
then write the outputs (``finish``).

How a search runs: the base configuration is checked and a registered dataset built in this
process first; the dataset is then loaded and split once, into ``DIR/dataset_cache/`` (each trial
reads that file as its ``prepared_data_path``; removed when the search is over). Ray runs locally
with the dashboard off and its session files in /tmp/ray (a Ray of its own, even where ``ray
start`` runs a cluster on the machine), or joins ``--address``; it reuses its
CPU workers from trial to trial, so a worker imports the libraries and reads the cache only for
its first trial. Trials' output goes to ``DIR/experiment/<trial>/``, not to the terminal, which
shows a line per epoch and per finished trial (``progress``). A trial that raises (say, out of
memory) is recorded as failed and the search goes on. Trials are seeded like ``run.py`` (``seed``,
``reproducibility``), so ``run.py`` with ``best.yaml`` retrains the best trial's model. Ctrl-C
stops the search cleanly; ``--resume`` continues it (finished trials are not run again).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError
from recbole_srgnn.tune.finish import finish_search, shown_path
from recbole_srgnn.tune.progress import make_callback
from recbole_srgnn.tune.records import (
    DATASET_CACHE,
    EXPERIMENT,
    SETTINGS_FILE,
    append_event,
    collect_trials,
    write_text,
)
from recbole_srgnn.tune.space import Space, parse_space
from recbole_srgnn.tune.trial import METRIC, run_trial, trial_name


def check_optuna(search: str) -> None:
    """InputError when ``--search optuna`` is asked for and optuna is not installed."""
    if search != "optuna":
        return
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise InputError(
            "--search optuna needs the optional dependency optuna: pip install -e '.[optuna]' "
            "(or use --search random)"
        ) from None


def _absolute(value: Any) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
        return str(Path(value).resolve())
    if isinstance(value, str) and value:
        return str(Path(os.path.expanduser(value)))
    return value


def _is_path_key(key: str) -> bool:
    return key.endswith(("_path", "_dir", "_file"))


def _prepare(settings: dict, space: Space) -> dict:
    """Validate the base configuration (and build a registered dataset) in the driver.

    Returns what every trial needs: options with absolute paths, the epoch budget, the metric.
    """
    from recbole_srgnn.training.config import parse_dict
    from recbole_srgnn.training.datasets import ready_config
    from recbole_srgnn.training.models import resolve_model

    resolve_model(settings["model"])  # unknown model -> one line
    parsed = parse_dict(settings["options"])
    options = {key: (_absolute(value) if _is_path_key(key) else value)
               for key, value in parsed.items()}
    fixed = space.config_values({p.name: _first_value(p) for p in space.sampled})
    probe = {**options, **fixed}
    if settings.get("max_epochs") is not None:
        probe["epochs"] = settings["max_epochs"]
    probe["data_progress"] = True
    # RecBole's Config writes CUDA_VISIBLE_DEVICES from gpu_id; Ray must see the real value.
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = ready_config(settings["model"], settings["dataset"],
                              settings["config_files"], probe)
    finally:
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda
    data_path = Path(config["data_path"]).resolve().parent
    options["data_path"] = str(data_path) + os.sep
    max_epochs = settings.get("max_epochs") or int(config["epochs"])
    return {
        "options": options,
        "max_epochs": int(max_epochs),
        "metric_label": str(config["valid_metric"]),
        "bigger": bool(config["valid_metric_bigger"]),
        "config": config,
    }


def _prepared_cache(config, output: Path, reuse: bool = False) -> str | None:
    """Load the dataset and build its splits once here, for all trials (``prepared_data_path``).

    Each trial unpickles the file instead of parsing the benchmark files and building the
    splits again (a worker that Ray reuses for several trials reads it once); a trial whose
    sampled values change the dataset options builds its own (see ``prepared_data``).
    Not made when the options already name a prepared file.
    """
    if config["prepared_data_path"]:
        return None
    path = output / DATASET_CACHE / f"{config['dataset']}-for-{config['model']}.pth"
    if reuse and path.is_file():  # --resume: the search's own cache
        return str(path)
    from recbole_srgnn.prepared_data import save_prepared

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        save_prepared(config, path)
    print(f"dataset loaded and split once for all trials in {time.perf_counter() - started:.1f} s "
          f"({shown_path(path)})", flush=True)
    return str(path)


def _first_value(param) -> Any:
    if param.type in ("choice", "grid"):
        return param.values[0]
    return param.low


def _expected_trials(settings: Mapping, space: Space) -> int:
    grid = 1
    for p in space.sampled:
        if p.type == "grid":
            grid *= len(p.values)
    return int(settings["num_samples"]) * grid


def param_space(space: Space) -> dict:
    """Ray Tune's sampling domains for the space's sampled parameters."""
    from ray import tune

    out = {}
    for p in space.sampled:
        if p.type == "loguniform":
            out[p.name] = tune.loguniform(p.low, p.high)
        elif p.type == "uniform":
            out[p.name] = tune.uniform(p.low, p.high)
        elif p.type == "quniform":
            out[p.name] = tune.quniform(p.low, p.high, p.q)
        elif p.type == "randint":
            out[p.name] = tune.randint(p.low, p.high + 1)  # Ray excludes the upper bound
        elif p.type == "choice":
            out[p.name] = tune.choice(list(p.values))
        elif p.type == "grid":
            out[p.name] = tune.grid_search(list(p.values))
    return out


def check_address(address: str | None) -> None:
    """A HOST:PORT that does not answer is an InputError at once (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address must be HOST:PORT (or 'auto'), got {address!r}")
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Start (or join) Ray; True when this process started it and should shut it down."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise InputError(f"cannot join the Ray cluster at {address}: {exc}") from None
        return True
    # "local": a Ray of its own even where `ray start` left a cluster's address on this machine
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
             object_store_memory=256 * 1024 * 1024, **common)
    return True


def _check_resources(settings: Mapping) -> None:
    """On a local Ray, a trial that asks for more than there is would wait forever."""
    import ray

    total = ray.cluster_resources()
    for kind, key in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
        want, have = float(settings[key]), float(total.get(kind, 0.0))
        if want > have:
            raise InputError(f"--{key}={want:g} but the local Ray has {have:g} {kind}(s)"
                             + (" (see --num_cpus)" if kind == "CPU" else ""))


def _quiet_ray_logs() -> None:
    # Errors of failed trials are reported by our callback (one line) and kept in error.txt.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.execution.trial_runner",
                 "ray.tune.execution.ray_trial_executor", "ray.tune.tune", "ray.tune.impl.tuner_internal"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)


def run_search(settings: dict, *, resume: bool, address: str | None = None,
               num_cpus: int | None = None, retry_failed: bool = False,
               extra_callbacks: list | None = None) -> int:
    """Run (or resume) the search described by ``settings``; write the outputs. Exit code.

    ``extra_callbacks`` (Ray Tune ``Callback`` objects) join this run only; a resumed run gets
    its own (they are not restored from the experiment).
    """
    output = Path(settings["output"])
    space = parse_space(settings["space_text"], settings["space"])
    space.check_search(settings["search"])
    check_optuna(settings["search"])

    if not resume:
        print(f"checking the configuration of {settings['model']} on {settings['dataset']} "
              f"(a registered dataset is built on first use) ...", flush=True)
    job_base = _prepare(settings, space)
    if settings.get("max_epochs") is None:
        settings["max_epochs"] = job_base["max_epochs"]
    output.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    started = time.perf_counter()
    owns_ray = _init_ray(address, num_cpus)
    ray_seconds = time.perf_counter() - started
    try:
        if owns_ray and not address:
            _check_resources(settings)
        cache = _prepared_cache(job_base["config"], output, reuse=resume)
        if not resume:
            _write_json(output / SETTINGS_FILE, settings)  # from now on --resume applies
        from ray import air, tune

        _quiet_ray_logs()
        trial_options = {**job_base["options"], "epochs": job_base["max_epochs"]}
        if cache is not None:
            trial_options["prepared_data_path"] = cache
        job = {
            "model": settings["model"], "dataset": settings["dataset"],
            "config_files": settings["config_files"], "space": space,
            "options": trial_options,
            "bigger": job_base["bigger"], "max_epochs": job_base["max_epochs"],
            "cpus_per_trial": settings["cpus_per_trial"],
            "gpus_per_trial": settings["gpus_per_trial"],
        }
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, job=job),
            {"cpu": settings["cpus_per_trial"], "gpu": settings["gpus_per_trial"]},
        )
        mode = "max" if job_base["bigger"] else "min"
        metric_label = job_base["metric_label"]
        experiment_dir = output / EXPERIMENT
        finished_before = sum(r.status != "interrupted" for r in collect_trials(experiment_dir))
        callback = make_callback(metric_label, space, finished_before)
        total = _expected_trials(settings, space)
        print(f"{'resuming' if resume else 'tuning'} {settings['model']} on {settings['dataset']}: "
              f"{total} trials ({settings['search']} search, {settings['scheduler']} scheduler), "
              f"at most {settings['max_epochs']} epochs each, {settings['cpus_per_trial']:g} CPU / "
              f"{settings['gpus_per_trial']:g} GPU per trial, selecting on validation "
              f"{metric_label}; Ray up in {ray_seconds:.1f} s; output {output}", flush=True)
        if resume:
            if not tune.Tuner.can_restore(str(experiment_dir)):
                raise InputError(f"--resume: {experiment_dir} holds no Ray Tune experiment to continue")
            tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False,
                                       restart_errored=retry_failed)
            _replace_callbacks(tuner, [callback, *(extra_callbacks or [])])
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(space),
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode=mode, num_samples=int(settings["num_samples"]),
                    search_alg=search_alg(settings),
                    scheduler=_scheduler(settings, job_base["max_epochs"]),
                    max_concurrent_trials=settings.get("max_concurrent"),
                    # one worker process runs trial after trial, keeping imports and the loaded
                    # data (not with GPUs: Ray's own caution about device memory between trials)
                    reuse_actors=settings["gpus_per_trial"] == 0,
                    trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                ),
                run_config=air.RunConfig(
                    name=EXPERIMENT, storage_path=str(output), verbose=0,
                    callbacks=[callback, *(extra_callbacks or [])],
                    failure_config=air.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
        experiment_dir.mkdir(parents=True, exist_ok=True)
        append_event(experiment_dir, {"event": "fit_start", "time": time.time(),
                                      "ray_start_seconds": ray_seconds})
        try:
            tuner.fit()
        finally:
            append_event(experiment_dir, {"event": "fit_end", "time": time.time()})
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    return finish_search(settings, space, job_base, experiment_dir, total)


def _replace_callbacks(tuner, callbacks: list) -> None:
    """Tuner.restore brings back the pickled RunConfig; give it this process's callback."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None:
        raise InputError("--resume: this Ray version's Tuner cannot be resumed here")
    run_config.callbacks = callbacks


def search_alg(settings: Mapping):
    """Ray Tune's search algorithm for ``--search`` (random sampling or Optuna's TPE)."""
    if settings["search"] == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        return OptunaSearch(seed=int(settings["seed"]))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=int(settings["seed"]))


def _scheduler(settings: Mapping, max_epochs: int):
    if settings["scheduler"] == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=int(max_epochs),
                         grace_period=min(int(settings["grace_period"]), int(max_epochs)),
                         reduction_factor=int(settings["reduction_factor"]))


def _write_json(path: Path, data: Mapping) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
