"""The Ray Tune search joining a real Ray cluster of two nodes (``--address``), started here.

The test starts a head (``ray start --head``) and a second node (``ray start --address``) on this
machine, 1 CPU each, then runs ``python -m recbole_srgnn.tune --address=...`` with 1 CPU per
trial: two trials run at once, one per node. trials.csv must name two different nodes, and the
search's outputs are there. A second test (``slow``: one more search) checks that the results
equal those of the same search on one machine (trials are seeded).

Loopback only: Ray 2.6's ``ray start`` replaces 127.0.0.1 by the address of the machine's route
to the outside, and its servers listen on every interface. So the nodes, their workers and the
search all run inside a network namespace made for the test (``unshare --net``, joined with
``nsenter``), where loopback is the only interface: Ray falls back to 127.0.0.1 (``node_ip`` in
trials.csv says so) and nothing can reach another address. Without the permission to make one
(root, ``unshare``, ``nsenter``, ``ip``) the tests skip. Only this test's Ray processes are
stopped at the end, found by their session name and the head's port (``ray stop`` would stop
every Ray on the machine), and then the namespace's holder process.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tiny_data import write_tiny_benchmark

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
TINY = ["--train_batch_size=64", "--eval_batch_size=64", "--stopping_step=10",
        "--embedding_size=16", "--hidden_size=16"]
NUM_TRIALS = 4  # > 2 nodes x 1 CPU: both nodes run trials from the first scheduling step on


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(ray_tmp: Path) -> dict:
    env = dict(os.environ)
    # Ray's default temp folder (/tmp/ray): ``ray start`` of the second node writes the
    # cluster's address there (ray_current_cluster), which any plain ``ray.init()`` on this
    # machine would join; kept inside the test's folder instead.
    env["RAY_TMPDIR"] = str(ray_tmp)
    # Ray's workers are started by the nodes: they must import this checkout's package.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", RAY_AIR_NEW_OUTPUT="0")
    return env


class LoopbackNamespace:
    """A network namespace with only loopback, held by a sleeping process; ``prefix`` runs a
    command inside it."""

    def __init__(self) -> None:
        tools = [shutil.which(tool) for tool in ("unshare", "nsenter", "ip")]
        if not all(tools) or os.geteuid() != 0:
            pytest.skip("needs root with unshare, nsenter and ip: a loopback-only network "
                        "namespace keeps the test's Ray cluster off every other address")
        self.holder = subprocess.Popen(
            [tools[0], "--net", "sh", "-c", "ip link set lo up && exec sleep 3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.prefix = [tools[1], f"--net=/proc/{self.holder.pid}/ns/net"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.holder.poll() is not None:
                pytest.skip(f"cannot make a network namespace: {self.holder.stderr.read()}")
            shown = subprocess.run([*self.prefix, tools[2], "-brief", "address"],
                                   capture_output=True, text=True)
            interfaces = [line.split()[0] for line in shown.stdout.splitlines() if line.strip()]
            if shown.returncode == 0 and interfaces == ["lo"] and "127.0.0.1" in shown.stdout:
                return
            time.sleep(0.1)
        self.close()
        pytest.skip("the test's network namespace did not come up with loopback only")

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def _ray(args: list[str], env: dict, netns: LoopbackNamespace) -> None:
    proc = subprocess.run([*netns.prefix, str(RAY), *args], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def _own_processes(session: str | None, gcs_port: int) -> list[int]:
    """PIDs of this test's Ray processes: their command line names its session or head port."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any("ray" in a for a in args[:3]):
            continue
        if (session and any(session in a for a in args)) or any(
                a.endswith(f":{gcs_port}") for a in args):
            pids.append(int(entry.name))
    return pids


def _stop(session: str | None, gcs_port: int) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        pids = _own_processes(session, gcs_port)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while pids and time.time() < deadline and _own_processes(session, gcs_port):
            time.sleep(0.2)
    assert not _own_processes(session, gcs_port), "Ray processes of the test survived"


def _session_name(temp_dir: Path) -> str | None:
    latest = temp_dir / "session_latest"
    return latest.resolve().name if latest.exists() else None


def _search(output: Path, data: Path, space: Path, extra: list[str], env: dict,
            cwd: Path, netns: LoopbackNamespace) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "recbole_srgnn.tune", "--model=GRU4Rec", "--dataset=tinytune",
            f"--space={space}", f"--num_samples={NUM_TRIALS}", "--max_epochs=1",
            "--scheduler=fifo", f"--output={output}", f"--data_path={data}", *TINY, *extra]
    return subprocess.run([*netns.prefix, *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: float(row["learning_rate"]))


@pytest.fixture(scope="module")
def cluster_search():
    """The search on a two-node cluster started (and stopped) here; the folder for the rest."""
    if not RAY.is_file():
        pytest.skip(f"no ray command next to {sys.executable}")
    netns = LoopbackNamespace()
    # short: Ray's socket paths live under it (Unix sockets allow ~107 characters)
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    temp_dir = root / "head"  # the head's session files; the second node's go to root/t/ray
    work = root / "work"
    work.mkdir()
    write_tiny_benchmark(work / "data", "tinytune", n_items=25, seed=1, length=(3, 5))
    space = work / "space.yaml"
    space.write_text("learning_rate: {type: loguniform, low: 1.0e-3, high: 1.0e-2}  # lr\n")
    env = _env(root / "t")
    port = _free_port()
    session = None
    node = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
            "--object-store-memory=100000000"]
    try:
        _ray(["start", "--head", f"--port={port}", "--include-dashboard=false",
              f"--temp-dir={temp_dir}", f"--ray-client-server-port={_free_port()}",
              f"--dashboard-port={_free_port()}",
              f"--dashboard-agent-listen-port={_free_port()}", *node], env, netns)
        session = _session_name(temp_dir)
        _ray(["start", f"--address=127.0.0.1:{port}",
              f"--dashboard-agent-listen-port={_free_port()}", *node], env, netns)
        proc = _search(work / "cluster", work / "data", space,
                       [f"--address=127.0.0.1:{port}"], env, work, netns)
    finally:
        _stop(session, port)
    try:
        yield {"proc": proc, "work": work, "space": space, "env": env, "netns": netns}
    finally:
        netns.close()
        shutil.rmtree(root, ignore_errors=True)


def test_search_on_two_nodes_runs_trials_on_both(cluster_search):
    proc = cluster_search["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = cluster_search["work"] / "cluster"
    rows = _rows(out / "trials.csv")
    assert len(rows) == NUM_TRIALS
    assert all(row["status"] == "completed" for row in rows)
    assert len({row["node_id"] for row in rows}) == 2  # both nodes ran trials
    assert {row["node_ip"] for row in rows} == {"127.0.0.1"}  # loopback only
    for name in ("best.yaml", "best_test.json", "report.md", "valid_curves.png"):
        assert (out / name).is_file(), name
    best = max(rows, key=lambda row: float(row["best_valid_score"]))
    values = yaml.safe_load((out / "best.yaml").read_text())
    assert values["learning_rate"] == pytest.approx(float(best["learning_rate"]), rel=1e-5)
    assert not (out / "dataset_cache").exists()


@pytest.mark.slow  # one more search (~30-45 s here); the test above covers the cluster run
def test_cluster_results_equal_one_machine(cluster_search):
    """The same search without --address, after the cluster stopped: equal trials and
    best.yaml. ``ray start`` left the cluster's address in Ray's temp folder; the search starts
    a Ray of its own all the same."""
    work, env = cluster_search["work"], cluster_search["env"]
    assert cluster_search["proc"].returncode == 0
    local = _search(work / "local", work / "data", cluster_search["space"], ["--num_cpus=1"],
                    env, work, cluster_search["netns"])
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    cluster, alone = _rows(work / "cluster" / "trials.csv"), _rows(work / "local" / "trials.csv")
    assert len({row["node_id"] for row in alone}) == 1
    keys = ("learning_rate", "status", "best_valid_score", "best_epoch", "epochs_run")
    assert [[r[k] for k in keys] for r in cluster] == [[r[k] for k in keys] for r in alone]
    assert (yaml.safe_load((work / "cluster" / "best.yaml").read_text())
            == yaml.safe_load((work / "local" / "best.yaml").read_text()))
