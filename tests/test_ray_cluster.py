"""Ray on a cluster: weights through Ray's storage, the dataset through the object store, the
proxy tier from the trials' resources, and a worker node lost while its trial trains.

The default tests run on a local 2-CPU Ray instance bound to 127.0.0.1; the lost-node test
(``-m slow``) starts a head and two worker nodes as separate processes on this machine with
``ray.cluster_utils.Cluster``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from archsearch.errors import ArchsearchError, ConfigError, DataError  # noqa: E402
from archsearch.search import execute, prepare, ray_backend  # noqa: E402
from archsearch.search import ray_trial as rt  # noqa: E402
from archsearch.search.plan import resolve  # noqa: E402
from archsearch.search.study import load_study  # noqa: E402
from archsearch.settings import RunSettings  # noqa: E402
from archsearch.train.proxy import ProxySchedule  # noqa: E402

from ._tiny import TINY_RUN  # noqa: E402

#: What the driver may write into a run folder (no ``ray/``: Ray's storage is elsewhere).
DRIVER_FILES = {"run.yaml", "study.journal", "study.journal.flock", "trials.csv", "weights"}
DRIVER_FILES |= {".archsearch.lock", "pareto.csv"}


def _opts(out: str, storage: Path, **kw: Any) -> RunSettings:
    base = dict(TINY_RUN, budget="100K-params", trials=3, out=out, backend="ray")
    base.update(cpus_per_trial=1, max_concurrent=2, storage_path=str(storage))
    return RunSettings(**{**base, **kw})


def _ray_at_loopback(mp: pytest.MonkeyPatch) -> None:
    """Ray nodes of this test listen on 127.0.0.1 only."""
    import ray._private.ray_constants as constants

    mp.setattr(constants, "ENABLE_RAY_CLUSTER", False)
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU Ray instance (run_ray uses it and leaves it up)."""
    mp = pytest.MonkeyPatch()
    _ray_at_loopback(mp)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        mp.undo()


@pytest.fixture
def fetched(monkeypatch) -> list[tuple[str, Path]]:
    """Every weights file the driver copied from a checkpoint: (checkpoint path, destination)."""
    calls: list[tuple[str, Path]] = []
    real = rt.fetch_weights

    def spy(checkpoint: Any, name: str, dest: Path) -> Path:
        calls.append((str(checkpoint.path), dest))
        return real(checkpoint, name, dest)

    monkeypatch.setattr(rt, "fetch_weights", spy)
    return calls


def _specs(storage: Path) -> list[str]:
    """The text of every trial spec Ray Tune ran (its trial folders in the storage)."""
    return [p.read_text() for p in sorted(storage.glob("*/trial*/params.json"))]


def _check_weights_came_through_storage(
    run: Path, storage: Path, fetched: list[tuple[str, Path]], front: pd.DataFrame
) -> None:
    """The front's weights are in the run folder, each copied by the driver from a checkpoint in
    Ray's storage; no trial was told a path of the run folder; no checkpoint is left behind."""
    kept = {p.name for p in (run / "weights").glob("*.safetensors")}
    assert kept and kept == {Path(w).name for w in front.weights.dropna()}
    copied = {dest.name: src for src, dest in fetched}
    assert kept <= set(copied)
    assert all(Path(src).is_relative_to(storage.resolve()) for src in copied.values())
    assert set(p.name for p in run.iterdir()) <= DRIVER_FILES  # no ray/ and nothing else
    specs = _specs(storage)
    assert specs and not any(str(run.resolve()) in s for s in specs)
    assert all("/" not in (json.loads(s)["weights"] or "") for s in specs)  # a bare file name
    assert not list(storage.glob("*/trial*/checkpoint_*/*"))  # copied, then removed


# --------------------------------------------------------------------------- a lost node
# First in the module: it runs its own cluster, before the module's local Ray instance starts.
@pytest.fixture
def only_with_slow(request) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a multi-process cluster test: run it with -m slow")


@pytest.mark.slow
def test_trial_of_a_lost_node_is_retried_on_the_other(
    tmp_path, monkeypatch, fetched, only_with_slow
) -> None:
    """Head (no CPUs: trials run on workers only) and two 1-CPU worker nodes, started in another
    working directory than the driver's. The node of the first trial to report an epoch is
    removed while that trial trains: Ray retries it on the other node, the run finishes, every
    design is recorded once as COMPLETE, and the front's weights reach the driver's run folder
    through the storage path."""
    from ray.cluster_utils import Cluster

    _ray_at_loopback(monkeypatch)
    nodes_cwd, driver_cwd, storage = tmp_path / "nodes", tmp_path / "driver", tmp_path / "storage"
    nodes_cwd.mkdir()
    driver_cwd.mkdir()
    monkeypatch.chdir(nodes_cwd)
    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500}
    fast |= {"health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
    head = {"num_cpus": 0, "include_dashboard": False, "_system_config": fast}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        monkeypatch.chdir(driver_cwd)
        seen = _remove_first_trained_node(monkeypatch, cluster, workers)
        started = time.monotonic()
        front = execute(prepare(_opts("run", storage, trials=4, epochs=2)))
        took = time.monotonic() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    run = driver_cwd / "run"
    df = pd.read_csv(run / "trials.csv")
    assert len(df) == 4 and (df.state == "COMPLETE").all() and df.archid.is_unique
    assert df.error.isna().all() and df.reused_from.isna().all()  # nothing lost, none twice
    lost = seen["trial"]
    assert seen["epoch1"][lost] >= 2  # trained again after the node was removed
    assert seen["final"][lost] != seen["node"]  # ... and finished on the other node
    assert (df.trial == seen["number"]).sum() == 1
    study = load_study(run)
    assert sorted(t.user_attrs["ray_trial"] for t in study.trials) == sorted(seen["final"])
    _check_weights_came_through_storage(run, storage, fetched, front)
    assert not (nodes_cwd / "run").exists()
    print(f"lost-node run: {took:.0f} s")


def _remove_first_trained_node(
    monkeypatch: pytest.MonkeyPatch, cluster: Any, workers: list[Any]
) -> dict[str, Any]:
    """Remove the node of the first trial that reports an epoch, while that trial waits to go
    on training (Tune resumes it only after the driver handled the result); returns what was
    seen: the trial and node removed, epoch-1 reports per trial, the node each trial ended on."""
    seen: dict[str, Any] = {"epoch1": {}, "final": {}}
    searcher = ray_backend._StudySearcher
    on_result, on_complete = searcher.on_trial_result, searcher.on_trial_complete

    def result(self: Any, trial_id: str, res: dict[str, Any]) -> None:
        on_result(self, trial_id, res)
        if res.get("epoch") != 1:
            return
        seen["epoch1"][trial_id] = seen["epoch1"].get(trial_id, 0) + 1
        if "trial" not in seen:
            node = next(n for n in workers if n.node_id == res["node_id"])
            seen.update(trial=trial_id, node=res["node_id"], number=self.running[trial_id].number)
            cluster.remove_node(node, allow_graceful=False)

    def complete(
        self: Any, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        seen["final"][trial_id] = (result or {}).get("node_id")
        on_complete(self, trial_id, result, error)

    monkeypatch.setattr(searcher, "on_trial_result", result)
    monkeypatch.setattr(searcher, "on_trial_complete", complete)
    return seen


# --------------------------------------------------------------------------- one node
def test_weights_come_back_through_ray_checkpoints(
    tmp_path, local_ray, monkeypatch, fetched
) -> None:
    """A single-node run: the driver (in its own working directory, with a relative run folder)
    gets every kept weights file from a checkpoint in --storage-path."""
    (tmp_path / "driver").mkdir()
    monkeypatch.chdir(tmp_path / "driver")
    storage = tmp_path / "storage"
    front = execute(prepare(_opts("run", storage)))
    run = tmp_path / "driver" / "run"
    df = pd.read_csv(run / "trials.csv")
    assert len(df) == 3 and (df.state == "COMPLETE").all()
    _check_weights_came_through_storage(run, storage, fetched, front)


def test_dataset_lost_on_a_worker_names_the_node(tmp_path, local_ray, monkeypatch) -> None:
    """The dataset cannot be fetched on a worker: the run ends with one line naming the node,
    and the trial is queued again for the next run."""

    def lost(data: Any) -> rt.Shipped:
        @ray.remote(num_cpus=0)
        class Owner:
            def make(self) -> list[Any]:
                return [ray.put(b"gone")]

        owner = Owner.remote()
        [ref] = ray.get(owner.make.remote())
        ray.kill(owner)
        return rt.Shipped(ref, data.name)

    monkeypatch.setattr(rt, "ship", lost)
    out = tmp_path / "run"
    with pytest.raises(DataError) as got:
        execute(prepare(_opts(str(out), tmp_path / "storage", max_concurrent=1)))
    msg = str(got.value)
    assert "\n" not in msg
    assert msg.startswith("dataset synthetic: expected it from Ray's object store on node ")
    assert f"(id {ray.get_runtime_context().get_node_id()[:12]})" in msg
    trials = load_study(out).trials
    sent = [t for t in trials if t.state.name != "WAITING"]
    assert sent and all(t.user_attrs.get("interrupted") for t in sent)
    assert any(t.user_attrs.get("retry_of") is not None for t in trials)  # queued again


def test_storage_a_worker_cannot_write_names_the_node(tmp_path, local_ray, monkeypatch) -> None:
    """Ray's check that a worker reaches the storage fails (as on a node without the shared
    folder: its marker file is missing): the run ends with one line naming the node and the
    storage path, and nothing of that trial is recorded as a result."""
    storage = tmp_path / "storage"
    suggest = ray_backend._StudySearcher.suggest

    def unshare(self: Any, trial_id: str) -> Any:
        for marker in storage.glob("*/.validate_storage_marker"):
            marker.unlink()
        return suggest(self, trial_id)

    monkeypatch.setattr(ray_backend._StudySearcher, "suggest", unshare)
    out = tmp_path / "run"
    with pytest.raises(ArchsearchError) as got:
        execute(prepare(_opts(str(out), storage, max_concurrent=1)))
    msg = str(got.value)
    assert "\n" not in msg
    want = f"--storage-path {storage.resolve()}: expected a folder or URI every node can write, "
    assert msg.startswith(want + "but node ")
    assert f"(id {ray.get_runtime_context().get_node_id()[:12]}) got RuntimeError" in msg
    done = [t for t in load_study(out).trials if t.state.name == "COMPLETE"]
    assert not done and not list((out / "weights").glob("*"))


@pytest.mark.parametrize(
    "path, match",
    [
        ("s3://KEY:SECRET@bucket/runs", "a URI without credentials"),
        ("s3://bucket/runs?access_key=K&secret_key=S", "a URI without credentials"),
        ("nosuchscheme://bucket/runs", "a folder or a URI pyarrow opens"),
        ("", "a folder or a URI, got ''"),
    ],
)
def test_bad_storage_path_fails_before_anything_is_written(tmp_path, path, match) -> None:
    out = tmp_path / "run"
    opts = _opts(str(out), tmp_path / "storage").replace(storage_path=path)
    with pytest.raises(ConfigError, match=re.escape(f"--storage-path: expected {match}")):
        execute(prepare(opts))
    assert not out.exists()


def test_storage_path_belongs_to_the_ray_backend(tmp_path) -> None:
    opts = _opts(str(tmp_path / "run"), tmp_path / "storage").replace(backend="local")
    with pytest.raises(ConfigError, match="--storage-path: expected only with the backend"):
        prepare(opts)


def _tier(**kw: Any) -> tuple[Any, ProxySchedule, int]:
    """The driver device, proxy schedule and trial count a tiny plan on a CPU driver resolves."""
    sizes = ("epochs", "subset", "batch_size", "proxy_img_size")
    base = {k: v for k, v in TINY_RUN.items() if k not in sizes}
    plan = resolve(RunSettings(**{**base, "budget": "100K-params", "device": "cpu", **kw}))
    return plan.device, plan.schedule, plan.trials


def test_proxy_tier_follows_the_trials_gpus_not_the_driver() -> None:
    """A CPU-only driver whose trials get GPUs plans the GPU schedule (and GPU defaults)."""
    gpu, cpu = ProxySchedule.for_device("cuda"), ProxySchedule.for_device("cpu")
    device, schedule, trials = _tier(backend="ray", gpus_per_trial=0.5, trials=None)
    assert device.type == "cpu" and schedule == gpu and schedule != cpu and trials == 100
    assert _tier(backend="ray", gpus_per_trial=0.0)[1] == cpu
    assert _tier(backend="ray")[1] == cpu  # left to the cluster: this machine's device
    assert _tier()[1] == cpu  # the local backend trains on this machine
    _, explicit, _ = _tier(backend="ray", gpus_per_trial=1.0, epochs=3, subset=200)
    assert (explicit.epochs, explicit.subset) == (3, 200)  # explicit options win
    assert (explicit.batch_size, explicit.img_size) == (gpu.batch_size, gpu.img_size)
