"""The package works installed from a wheel, without a checkout: its config layers are package
data, and the comparison runner (``python -m recbole_srgnn.compare``) runs and writes its report
wherever ``--output`` says, from a working directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "benchmarks" / "configs" / "smoke.yaml"


def _sources(target: Path) -> None:
    """Copy what the wheel is built from (setup.py, README.md, the package) to ``target``, so the
    build leaves nothing in the checkout."""
    target.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, target / name)
    shutil.copytree(REPO / "recbole_srgnn", target / "recbole_srgnn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_wheel_runs_a_comparison_outside_the_checkout(tmp_path):
    _sources(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"),
                    str(tmp_path / "src")], check=True, cwd=tmp_path, capture_output=True)
    wheels = list((tmp_path / "wheel").glob("recbole_srgnn-*.whl"))
    assert len(wheels) == 1
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheels[0])],
                   check=True, capture_output=True)
    assert (site / "recbole_srgnn" / "properties" / "overall.yaml").is_file()
    assert (site / "recbole_srgnn" / "properties" / "tune" / "SRGNN.yaml").is_file()

    config = yaml.safe_load(SMOKE.read_text())  # the smoke comparison, smaller still
    config["seeds"] = [1]
    config["isolate"] = False  # the isolated path is test_compare's; here the installed copy runs
    config["tuning"] = {"budget": 1}
    config["settings"]["data_path"] = str(tmp_path / "data")
    config["models"] = [{"name": "SRGNN", "grid": {"learning_rate": [0.01]}},
                        {"name": "SessionPop", "tunable": False}]
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import recbole_srgnn; print(recbole_srgnn.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site)  # the installed copy, not the checkout's
    run = subprocess.run([sys.executable, "-m", "recbole_srgnn.compare", "--config", str(path),
                          "--out", str(tmp_path / "out")],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "SRGNN" in report and "SessionPop" in report and "PARTIAL" not in report
    # the console entry point the wheel installs runs the same commands
    scripts = list((site / "bin").glob("recbole-srgnn")) if (site / "bin").is_dir() else []
    assert scripts, "the wheel declares no recbole-srgnn console script"
    listed = subprocess.run([sys.executable, str(scripts[0]), "--help"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and all(
        name in listed.stdout for name in ("train", "convert", "compare", "fusion", "tune"))
    again = subprocess.run([sys.executable, str(scripts[0]), "compare", "--config", str(path),
                            "--output", str(tmp_path / "out"), "--dry_run"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished, 0 to run now" in again.stdout, again.stdout
    wrong = subprocess.run([sys.executable, str(scripts[0]), "trian"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "did you mean train?" in wrong.stderr
