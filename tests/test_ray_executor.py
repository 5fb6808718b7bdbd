"""``--executor ray`` on a real local Ray cluster (a head and a second node, started here), and the run transfer
(``training/run_transfer.py``) that brings each run back into the driver's ``--out``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import seqzoo
from seqzoo.errors import ConfigError, IntegrityError
from seqzoo.experiments import Claim, ClaimResult, Entry, ExperimentCard, Results, Scale
from seqzoo.files import sha256_file

TRAIN = {"steps": 3, "eval_every": 3, "batch_size": 8, "progress": False, "tensorboard": False}


def _card(name: str, entries: list[Entry], seeds: tuple[int, ...]) -> ExperimentCard:
    def check(results: Results) -> ClaimResult:
        return ClaimResult(results.mean(m="ok") < 10.0, {"mse": results.mean(m="ok")}, "finite loss")

    return ExperimentCard(
        name=name, title="toy", paper="-", description="-", metric="mse", grid=entries,
        scales={"tiny": Scale(train=TRAIN, seeds=seeds)},
        claims=[Claim("finite", "the good runs have a finite loss", check)])


GOOD = Entry("gru", "adding", {"d_model": 4}, {"seq_len": 6}, {"m": "ok"})
BAD = Entry("gru", "adding", {"d_model": 0}, {"seq_len": 6}, {"m": "bad"})


@pytest.fixture
def register(monkeypatch):
    from seqzoo.experiments.registry import EXPERIMENTS, register_experiment

    def add(card: ExperimentCard) -> str:
        monkeypatch.setitem(EXPERIMENTS._entries, card.name, card)  # removed again after the test
        register_experiment(card, overwrite=True)
        return card.name

    return add


def _rows(out: Path) -> dict[str, dict]:
    from seqzoo.training import RunIndex

    return {r["tags"]["job"]: r for r in RunIndex(out / "index.sqlite").query()}


# ----------------------------------------------------------------------------------------------
# the run transfer, without Ray
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from seqzoo.training import train

    out = tmp_path_factory.mktemp("worker")
    return train("gru", "adding", model_args={"d_model": 4}, task_args={"seq_len": 6}, config=TRAIN, out=out,
                 index=False).run_dir


def test_receive_places_checks_and_repoints_the_run(trained, tmp_path):
    from seqzoo.training.run_transfer import pack_run, receive_run

    pack = pack_run(trained)
    names = {r["file"] for r in pack["files"]}
    assert {"config.json", "result.json", "model.safetensors", "model.json", "checkpoint/manifest.json"} <= names
    res = receive_run(pack, tmp_path / "out")
    dest = tmp_path / "out" / trained.name
    assert res.run_dir == dest and json.loads((dest / "result.json").read_text())["run_dir"] == str(dest)
    for rec in pack["files"]:
        if rec["file"] != "result.json":
            assert sha256_file(dest / rec["file"]) == rec["sha256"], rec["file"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no staging left behind
    # a second arrival replaces the folder only once the new one is complete
    receive_run(pack, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [trained.name]


def test_damaged_or_escaping_files_are_refused_and_nothing_is_placed(trained, tmp_path):
    from seqzoo.training.run_transfer import pack_run, receive_run

    pack = pack_run(trained)
    rec = next(r for r in pack["files"] if r["file"] == "model.safetensors")
    rec["data"] = rec["data"][:-1] + bytes([rec["data"][-1] ^ 1])
    with pytest.raises(IntegrityError, match="model.safetensors arrived damaged"):
        receive_run(pack, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    pack = pack_run(trained)
    pack["files"][0] = {**pack["files"][0], "file": "../evil"}
    with pytest.raises(IntegrityError, match="not a relative path inside the run folder"):
        receive_run(pack, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "evil").exists()


def test_weights_that_disagree_with_model_json_are_refused(trained, tmp_path):
    """The transfer's own checksums match (the file was packed as it was), but the run's record does not."""
    from seqzoo.files import sha256_bytes
    from seqzoo.training.run_transfer import pack_run, receive_run

    pack = pack_run(trained)
    rec = next(r for r in pack["files"] if r["file"] == "model.safetensors")
    rec["data"] = rec["data"][:-1] + bytes([rec["data"][-1] ^ 1])
    rec["sha256"] = sha256_bytes(rec["data"])
    with pytest.raises(IntegrityError, match="differs from the record"):
        receive_run(pack, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_shared_dir_needs_the_ray_executor(tmp_path, register):
    from seqzoo.experiments.runner import reproduce

    name = register(_card("_toy_ray_local", [GOOD], (0,)))
    with pytest.raises(ConfigError, match="--shared-dir .* is for executor 'ray'"):
        reproduce(name, scale="tiny", out=tmp_path / "out", shared_dir=tmp_path / "s", echo=None)


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path, register, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'seqzoo[ray]')")
    from seqzoo.experiments.runner import reproduce

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.9.9.9:6379")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    name = register(_card("_toy_ray_unreachable", [GOOD], (0,)))
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster \(10.9.9.9:6379\): ConnectionError: Failed"):
        reproduce(name, scale="tiny", out=tmp_path / "out", executor="ray", progress=False, echo=None)


# ----------------------------------------------------------------------------------------------
# a real local cluster: a head and a second node, each in its own process group
# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """``ray start --head`` plus ``ray start --address`` (1 CPU each) with their own ports and temp folders.

    Every Ray process of a node stays in the process group of its ``ray start``; teardown ends those groups by id
    (``ray stop --force`` would end every Ray process of this user on the machine, other sessions' too).
    """

    def __init__(self, base: Path) -> None:
        self.base, self.groups = base, []
        self.worker_tmp = base / "worker-tmp"
        self.worker_tmp.mkdir()
        src = str(Path(seqzoo.__file__).resolve().parents[1])
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
                    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": str(self.worker_tmp),
                    # a loaded machine starts the node's agents slowly: wait longer than Ray's defaults
                    "RAY_raylet_start_wait_time_s": "120", "RAY_agent_register_timeout_ms": "120000"}
        self.ray = str(Path(sys.executable).parent / "ray")
        self.address = f"127.0.0.1:{_free_port()}"

    def _start(self, *args: str) -> None:
        proc = subprocess.Popen([self.ray, "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                 "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", *args],
                                env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)
        log, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{log[-3000:]}")

    def start(self) -> None:
        self._start("--head", "--port", self.address.split(":")[1], "--include-dashboard=false",
                    "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
                    "--temp-dir", str(self.base / "ray"))
        self._start("--address", self.address)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            alive = []
            for g in self.groups:
                try:
                    os.killpg(g, sig)
                    alive.append(g)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while alive and time.monotonic() < deadline:
                alive = [g for g in alive if _group_alive(g)]
                time.sleep(0.2)
            if not alive:
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'seqzoo[ray]')")
    base = Path(tempfile.mkdtemp(prefix="szray-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    c = _Cluster(base)
    try:
        try:
            c.start()
        except RuntimeError:  # a node that times out on a loaded machine: start the cluster once more
            c.stop()
            c.groups, c.address = [], f"127.0.0.1:{_free_port()}"
            c.start()
        yield c
    finally:
        c.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    """The driver side: connect to the test cluster and record where each task wrote its run."""
    from seqzoo.experiments import runner

    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    wrote: list[str] = []
    real = runner._arrive

    def arrive(answer, payload, shared_dir):
        wrote.append(answer["wrote"])
        return real(answer, payload, shared_dir)

    monkeypatch.setattr(runner, "_arrive", arrive)
    return wrote


def test_grid_on_a_ray_cluster_arrives_intact_matches_local_and_resumes(cluster, on_cluster, register, tmp_path):
    from seqzoo.experiments.runner import plan, reproduce
    from seqzoo.training.run_transfer import verify_run

    name = register(_card("_toy_ray", [GOOD, BAD], (0, 1)))
    out = tmp_path / "driver-out"
    lines: list[str] = []
    report = reproduce(name, scale="tiny", out=out, executor="ray", progress=False, echo=lines.append)
    # the failing entry is reported per seed and the grid went on
    assert len(report.failures) == 2 and all("mbad" in f and "d_model" in f for f in report.failures), report.failures
    assert report.verdicts == {"finite": "HELD"}
    # the runs were written on the workers' own temporary disk, not into the driver's --out, and cleaned up there
    assert len(on_cluster) == 2 and all(Path(w).is_relative_to(cluster.worker_tmp) for w in on_cluster), on_cluster
    assert not list(cluster.worker_tmp.glob("seqzoo-ray-*"))
    rows = _rows(out)
    good = {j.key for j in plan(report.card, "tiny") if j.entry.id == "mok"}
    assert set(rows) == good
    for row in rows.values():
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out.resolve() and row["tags"]["experiment"] == name
        res = verify_run(run_dir)  # model.json weights and checkpoint manifest checksums
        assert res.run_dir == Path(out) / run_dir.name and row["valid"] == res.valid and row["test"] == res.test
    # the same seeds trained here give the same metrics and bit-identical weights
    local = reproduce(name, scale="tiny", out=tmp_path / "local-out", progress=False, echo=None)
    assert len(local.failures) == 2
    local_rows = _rows(tmp_path / "local-out")
    for key, row in rows.items():
        lrow = local_rows[key]
        assert (row["valid"], row["test"], row["steps"]) == (lrow["valid"], lrow["test"], lrow["steps"])
        assert sha256_file(Path(row["run_dir"]) / "model.safetensors") == \
            sha256_file(Path(lrow["run_dir"]) / "model.safetensors")
        for key_ in ("run_id", "primary_metric", "primary_value", "config", "tags", "status", "best_step"):
            assert row[key_] == lrow[key_], key_
    # resume: the finished runs are not trained again (only the failing ones are tried again, as locally)
    stamps = {k: ((Path(r["run_dir"]) / "result.json").stat().st_mtime_ns, r["created"]) for k, r in rows.items()}
    on_cluster.clear()
    again = reproduce(name, scale="tiny", out=out, executor="ray", progress=False, echo=None)
    assert (again.runs_skipped, again.runs_trained, len(again.failures)) == (2, 2, 2)
    assert on_cluster == []
    rows2 = _rows(out)
    assert {k: ((Path(r["run_dir"]) / "result.json").stat().st_mtime_ns, r["created"]) for k, r in rows2.items()} \
        == stamps
    assert again.results.to_dict() == report.results.to_dict()


def test_shared_dir_on_a_ray_cluster(cluster, on_cluster, register, tmp_path):
    from seqzoo.experiments.runner import SHARED_MARK, reproduce

    name = register(_card("_toy_ray_shared", [GOOD], (3,)))
    out, shared = tmp_path / "driver-out", tmp_path / "shared"
    report = reproduce(name, scale="tiny", out=out, executor="ray", shared_dir=shared, progress=False, echo=None)
    assert report.failures == [] and report.runs_trained == 1
    (row,) = _rows(out).values()
    run_id = row["run_id"]
    assert on_cluster == [str(shared.resolve() / run_id)] and Path(row["run_dir"]) == (out / run_id).resolve()
    assert sha256_file(out / run_id / "model.safetensors") == sha256_file(shared / run_id / "model.safetensors")
    assert not list(shared.glob(f"{SHARED_MARK}*")) and not (shared / "index.sqlite").exists()
