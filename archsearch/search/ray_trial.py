"""One Ray trial's way: the dataset to the worker, the weights back through Ray's storage.

The worker side (:func:`trainable`) fetches the dataset from Ray's object store (put there once by
:func:`ship`), trains, and reports its weights as a Ray Tune checkpoint of a temporary folder of its
own; Ray copies that to its storage (``--storage-path``). The driver side (:func:`fetch_weights`)
copies the weights from the checkpoint into the run folder. A node that cannot load the dataset or
write the storage says so in its final result (``data_error``, ``storage_error``), naming itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs
import ray
import torch
from ray import tune

from .._logging import get_logger
from ..config import ArchConfig
from ..errors import ArchsearchError, ConfigError, DataError, TrainingCutOff, TrainingError
from ..rundir import atomic_path
from ..train.candidate import GridRows, Trainer, TrainOutcome
from ..train.data import ImageData
from ..train.device import configure_threads
from ..train.proxy import CandidateOOMError, ProxySchedule

__all__ = [
    "Setup",
    "Shipped",
    "check_storage_path",
    "discard",
    "fetch_weights",
    "kept_weights",
    "one_line",
    "outcome_rows",
    "ship",
    "storage_path",
    "trainable",
]

log = get_logger("ray")

#: URI query keys that carry credentials (pyarrow's S3 options); run.yaml records the URI.
_SECRETS = ("access_key", "secret_key", "session_token")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a worker needs besides the dataset (sent once through the object store)."""

    schedule: ProxySchedule
    seed: int
    device: str
    threads: int


@dataclasses.dataclass(frozen=True)
class Shipped:
    """The dataset's reference in Ray's object store (fetched by the node that trains)."""

    ref: Any
    name: str


def ship(data: ImageData) -> Shipped:
    """Put the dataset into Ray's object store, once per run (on the driver).

    Raises:
        DataError: the object store does not take it (the message names the driver's node).
    """
    try:
        return Shipped(ray.put(data), data.name)
    except Exception as e:
        msg = f"dataset {data.name}: expected room for it in Ray's object store on the driver's "
        raise DataError(msg + f"{_node()}, got {one_line(e)}") from None


def one_line(e: BaseException) -> str:
    """An exception on one line (Ray's messages span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


def _node() -> str:
    """This process's Ray node, for messages."""
    return f"node {platform.node()} (id {ray.get_runtime_context().get_node_id()[:12]})"


def _load(shipped: Shipped) -> ImageData:
    """The dataset, from the object store onto this node.

    Raises:
        DataError: it cannot be loaded here (the message names the node).
    """
    try:
        data = ray.get(shipped.ref)
    except Exception as e:
        msg = f"dataset {shipped.name}: expected it from Ray's object store on {_node()}, got "
        raise DataError(msg + one_line(e)) from None
    if not isinstance(data, ImageData):
        raise DataError(f"dataset {shipped.name}: expected images on {_node()}, got {data!r}")
    return data


def trainable(spec: dict[str, Any], setup: Setup, data: Shipped) -> None:
    """Ray Tune function trainable: train one feasible candidate, reporting every epoch; its
    weights go back as a checkpoint of a temporary folder this worker owns."""
    base = {**spec["costs"], "node_id": ray.get_runtime_context().get_node_id()}
    try:
        images = _load(data)
    except DataError as e:
        tune.report({"proxy_accuracy": 0.0, **base, "data_error": str(e)})
        return
    with tempfile.TemporaryDirectory(prefix="archsearch-weights-") as tmp:
        final = _train(spec, setup, images, Path(tmp), base)
        _hand_back(final, Path(tmp) if "outcome" in final and spec["weights"] else None)


def _train(
    spec: dict[str, Any], setup: Setup, data: ImageData, folder: Path, base: dict[str, Any]
) -> dict[str, Any]:
    """Train the spec's candidate (weights into ``folder``); returns the final result."""
    device = torch.device(setup.device)
    if device.type == "cpu":
        configure_threads(setup.threads)
    trainer = Trainer(data, setup.schedule, device, setup.seed)
    schedule = ProxySchedule(**spec["schedule"]) if spec.get("schedule") else None

    def on_epoch(epoch: int, accuracy: float) -> None:
        tune.report({"epoch": epoch, "proxy_accuracy": accuracy, **base})

    config = ArchConfig.from_json(spec["config"])
    try:
        weights = folder / spec["weights"] if spec["weights"] else None
        rows = trainer.train_grids(
            config, weights=weights, on_epoch=on_epoch, schedule=schedule,
            seed_offset=spec["seed_offset"], deadline=spec.get("deadline"),
        )  # fmt: skip
    except TrainingCutOff as e:
        return {"proxy_accuracy": 0.0, **base, "cutoff": str(e)}
    except CandidateOOMError as e:
        return {"proxy_accuracy": 0.0, **base, "oom": str(e)}
    except Exception as e:  # recorded as a failed trial; the search goes on (stops are SystemExit)
        if not isinstance(e, TrainingError):
            log.exception("trial %s failed", spec["number"])
        msg = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
        return {"proxy_accuracy": 0.0, **base, "failed": msg}
    own = next(o for c, o in rows if c.archid == config.archid)
    final = [
        {**dataclasses.asdict(o), "weights": o.weights.name if o.weights else None,
         "config": c.to_json()}
        for c, o in rows
    ]  # fmt: skip
    return {"proxy_accuracy": own.accuracy, **base, "outcome": json.dumps(final)}


def _hand_back(final: dict[str, Any], folder: Path | None) -> None:
    """Report the final result, with ``folder`` as its checkpoint (Ray copies it to storage)."""
    if folder is None:
        tune.report(final)
        return
    try:
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(folder)))
    except Exception as e:  # this node cannot write Ray's storage
        rest = {k: v for k, v in final.items() if k != "outcome"}
        tune.report({**rest, "storage_error": f"{_node()} got {one_line(e)}"})


def outcome_rows(text: str, weights: Path | None) -> GridRows:
    """The worker's ``(config, outcome)`` rows, with the weights it kept now at ``weights``."""
    rows = []
    for data in json.loads(text):
        config = ArchConfig.from_json(data.pop("config"))
        kept = data.pop("weights")
        rows.append((config, TrainOutcome(**data, weights=weights if kept else None)))
    return rows


def kept_weights(text: str) -> str | None:
    """The name of the weights file a worker put into its checkpoint (None: none)."""
    return next((r["weights"] for r in json.loads(text) if r["weights"]), None)


def fetch_weights(checkpoint: Any, name: str, dest: Path) -> Path:
    """Copy the file ``name`` of a trial's checkpoint (on Ray's storage) to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = f"{checkpoint.path.rstrip('/')}/{name}"
    with (
        atomic_path(dest) as tmp,
        checkpoint.filesystem.open_input_stream(source) as fin,
        tmp.open("wb") as out,
    ):
        shutil.copyfileobj(fin, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return dest


def discard(checkpoint: Any) -> None:
    """Remove a checkpoint from Ray's storage once its weights are in the run folder."""
    if checkpoint is not None:
        try:
            checkpoint.filesystem.delete_dir(checkpoint.path)
        except Exception as e:  # only space is lost
            log.debug("could not remove checkpoint %s: %s", checkpoint.path, e)


def check_storage_path(path: Any) -> None:
    """A folder, or a URI pyarrow opens, with no credentials in it (run.yaml records it)."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"--storage-path: expected a folder or a URI, got {path!r}")
    if "://" not in path:
        return
    parts = urlsplit(path)
    secret = parts.password or next((k for k in parse_qs(parts.query) if k in _SECRETS), None)
    if secret:
        raise ConfigError(
            "--storage-path: expected a URI without credentials (run.yaml records it; give them "
            "through the environment, e.g. AWS_ACCESS_KEY_ID), got one with a secret"
        )
    try:
        pyarrow.fs.FileSystem.from_uri(path)
    except Exception as e:
        raise ConfigError(
            f"--storage-path: expected a folder or a URI pyarrow opens (s3://, gs://, "
            f"hdfs://, file://), got {path!r}: {one_line(e)}"
        ) from None


def storage_path(given: str | None, run_dir: Path) -> str:
    """Ray Tune's storage: ``given`` (``--storage-path``: a folder, made absolute here on the
    driver, or a URI), by default ``RUN_DIR/ray``; created, so checked writable by the driver."""
    if given and "://" in given:
        path = given
    else:
        path = str(Path(given).expanduser().resolve() if given else (run_dir / "ray").resolve())
    try:
        fs, inside = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(inside)
    except Exception as e:
        msg = f"--storage-path {path}: expected a place the driver can write, got {one_line(e)}"
        raise ArchsearchError(msg) from None
    return path
