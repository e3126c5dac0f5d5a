"""Running one comparison run: through ``training.runs.run``, in a child process or in this one.

An isolated run (the default) is a child process (``python -m recbole_srgnn.compare --run_one
JOB``) so that its peak memory is its own; it reports each validation epoch on a marked stdout
line. Its results JSON is written atomically; its training state is kept after every epoch in the
run's resume file, so a cut-off run continues from its last finished epoch. A failed run leaves
its log under ``<out>/failed/`` and does not stop the others.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

import recbole_srgnn
from recbole_srgnn.errors import sigterm_as_interrupt
from recbole_srgnn.experiments.compare_config import Experiment
from recbole_srgnn.experiments.compare_runs import RunSpec, read_run, resume_path, valid_score
from recbole_srgnn.experiments.tables import duration_text

EPOCH_MARK = "@@compare-epoch "  # a child process's line that reports a validation epoch
CHILD_GRACE_S = 30.0  # seconds a run's child gets to end after Ctrl-C before it is killed
# the folder that holds this package: the child imports the same code
PACKAGE_PARENT = Path(recbole_srgnn.__file__).resolve().parents[1]


def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def run_one(job: Mapping[str, Any], on_epoch: Callable[[dict], Any] | None = None) -> dict:
    """Train/test one run through ``training.runs.run`` and write its JSON atomically (used in the
    child process and in-process). ``job``: model, dataset, config_dict, path, compare, threads,
    scratch, resume_file (optional: continue from / keep the training state there).
    ``on_epoch({"epoch", "score", "seconds"})`` follows each validation."""
    import torch

    from recbole_srgnn.training.results import write_results
    from recbole_srgnn.training.runs import run

    scratch = Path(job["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    config = dict(job["config_dict"])
    kept = job.get("models_dir")  # keep_models: the best checkpoint stays there (git-ignored)
    config["checkpoint_dir"] = str(kept or scratch / "saved")
    threads = job.get("threads")
    previous_threads = torch.get_num_threads()
    if threads:
        config["threads"] = int(threads)  # the pipeline sets it; not part of the run's identity
    load_start = _load_average()
    started = time.perf_counter()
    try:
        tmp_result = scratch / f"result-{os.getpid()}-{time.monotonic_ns()}.json"
        resume_file = job.get("resume_file")
        if resume_file:
            Path(resume_file).parent.mkdir(parents=True, exist_ok=True)
        results = run(job["model"], job["dataset"], config_dict=config,
                      result_file=tmp_result, saved=bool(kept), show_progress=False,
                      quiet=True, epoch_callback=_epoch_callback(on_epoch),
                      resume_file=resume_file)
        with contextlib.suppress(FileNotFoundError):
            tmp_result.unlink()
    finally:
        if threads:
            torch.set_num_threads(previous_threads)
    final = Path(job["path"])
    results = dict(results)
    results["result_file"] = str(final)
    results["compare"] = {
        **job["compare"],
        "threads": threads,
        "isolated": bool(job.get("isolated", False)),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_results(results, final)
    if resume_file:
        remove_empty_parents(Path(resume_file), stop=final.parents[2])
    return results


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path``'s folders up to (not including) ``stop`` while they are empty."""
    for folder in path.parents:
        if folder == stop or stop not in folder.parents:
            break
        try:
            folder.rmdir()
        except OSError:
            break


def _epoch_callback(on_epoch: Callable[[dict], Any] | None):
    if on_epoch is None:
        return None
    last = [time.perf_counter()]

    def callback(epoch: int, valid_result: Mapping, valid_score: float) -> None:
        now = time.perf_counter()
        on_epoch({"epoch": int(epoch) + 1, "score": float(valid_score), "seconds": now - last[0]})
        last[0] = now

    return callback


class RunProgress:
    """A line per validation epoch under the run's ``[i/n] ...`` line, then its result."""

    def __init__(self, metric: str, stream):
        self.metric, self.stream, self.epochs = metric, stream, 0

    def epoch(self, info: Mapping[str, Any]) -> None:
        if not self.epochs:
            print(file=self.stream)  # ends the "[i/n] ... " line
        self.epochs += 1
        print(f"    epoch {info['epoch']}: valid {self.metric} {info['score']:.4f} "
              f"({duration_text(info['seconds'])})", file=self.stream, flush=True)

    def end(self, text: str) -> None:
        print(("    done: " if self.epochs else "") + text, file=self.stream, flush=True)


def _job(spec: RunSpec, exp: Experiment, scratch: Path, isolated: bool, out: Path) -> dict:
    return {
        "model": spec.model, "dataset": spec.dataset, "config_dict": spec.config_dict,
        "path": str(spec.path.resolve()), "threads": exp.threads, "isolated": isolated,
        "scratch": str(scratch), "resume_file": str(resume_path(out, spec).resolve()),
        "models_dir": (str((out / "models" / spec.name / f"{spec.tag}-seed{spec.seed}").resolve())
                       if exp.keep_models else None),
        "compare": {"experiment": exp.name, "name": spec.name, "model": spec.model,
                    "tag": spec.tag, "grid_point": spec.point, "seed": spec.seed,
                    "phase": spec.phase, "spec_hash": spec.spec_hash},
    }


def _failure_log(out: Path, spec: RunSpec) -> Path:
    return Path(out) / "failed" / spec.name / f"{spec.tag}-seed{spec.seed}.log"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def execute(spec: RunSpec, exp: Experiment, out: Path, scratch: Path, isolate: bool,
            progress: RunProgress | None = None) -> tuple[dict | None, str]:
    """Run one spec; (results, "") or (None, one-line reason). Failures leave a log in out/failed.
    ``progress`` shows the run's validation epochs as they finish."""
    on_epoch = progress.epoch if progress is not None else None
    job = _job(spec, exp, scratch / f"{spec.name}-{spec.tag}-seed{spec.seed}", isolate, out)
    log_path = _failure_log(out, spec)
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()  # an earlier failure's log; this attempt writes its own if it fails
        for folder in (log_path.parent, log_path.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    if not isolate:
        captured = io.StringIO()  # the registry's and RecBole's prints would break the progress line
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                return run_one(job, on_epoch=on_epoch), ""
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failed run must not stop the others
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(captured.getvalue() + traceback.format_exc(), encoding="utf-8")
            return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    job_file = scratch / f"job-{spec.name}-{spec.tag}-seed{spec.seed}.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT)]
                                     + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen(
        [sys.executable, "-m", "recbole_srgnn.compare", "--run-one", str(job_file)],  # either spelling parses
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    try:
        for line in proc.stdout:  # the child's epoch lines are shown; the rest is kept for the log
            if line.startswith(EPOCH_MARK):
                if on_epoch is not None:
                    on_epoch(json.loads(line[len(EPOCH_MARK):]))
            else:
                lines.append(line)
        proc.wait()
    except BaseException:  # the parent alone was stopped: never leave the child training on
        stop_child(proc)
        raise
    finally:
        proc.stdout.close()
    output = "".join(lines)
    run, why = read_run(spec.path, spec.spec_hash)
    if proc.returncode == 0 and run is not None:
        return run, ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(output, encoding="utf-8")
    if proc.returncode in (130, -2):  # Ctrl-C reached the child too
        raise KeyboardInterrupt
    reason = _last_line(output) if proc.returncode else f"no complete results ({why})"
    return None, f"exit {proc.returncode}: {reason[:300]}"


def stop_child(proc: subprocess.Popen, grace: float = CHILD_GRACE_S) -> None:
    """Stop a run's child process: Ctrl-C first (it keeps its last finished epoch in the resume
    state either way), then a kill if it has not ended within ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def progress_metric(run: Mapping[str, Any]) -> str:
    test = run.get("test_result") or {}
    metric = str(run.get("valid_metric") or "").lower()
    parts = []
    if "hit@10" in test:
        parts.append(f"hit@10 {test['hit@10']:.4f}")
    value = valid_score(run)
    if metric and value is not None:
        parts.append(f"valid {metric} {value:.4f}")
    return ", ".join(parts)



def child_main(job_file: str) -> int:
    """The isolated run's process: run the job file's run, its epochs as marked lines."""
    # A parent started in the background (`cmd &`) passes on an ignored SIGINT: restore Ctrl-C so
    # that stop_child's SIGINT ends the run cleanly; `kill` (SIGTERM) does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sigterm_as_interrupt()
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    run_one(job, on_epoch=lambda info: print(EPOCH_MARK + json.dumps(info), flush=True))
    return 0
