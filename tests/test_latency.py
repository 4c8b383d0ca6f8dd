"""Latency measurement on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archsearch.cost import LatencyReport, measure_latency
from archsearch.errors import CountError


def tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.Dropout(0.1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_sane_numbers_and_threads_restored() -> None:
    before = torch.get_num_threads()
    model = tiny().train()
    report = measure_latency(model, img_size=32, batch_size=2, warmup=1, repeats=7, threads=1)
    assert isinstance(report, LatencyReport)
    assert report.median_ms > 0 and report.iqr_ms >= 0
    assert report.p10_ms <= report.median_ms <= report.p90_ms
    assert report.threads == 1 and report.device == "cpu"
    assert report.batch_size == 2 and report.img_size == 32 and report.repeats == 7
    assert torch.get_num_threads() == before
    assert all(m.training for m in model.modules())
    assert report.to_dict()["median_ms"] == report.median_ms


def test_default_threads_is_current_setting() -> None:
    before = torch.get_num_threads()
    report = measure_latency(tiny(), img_size=16, in_chans=3, warmup=0, repeats=1)
    assert report.threads == before
    assert report.iqr_ms == 0.0 and report.p10_ms == report.median_ms == report.p90_ms


def test_threads_restored_after_failure() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        measure_latency(tiny(), img_size=16, in_chans=1, warmup=0, repeats=1, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"img_size": 0},
        {"batch_size": 0},
        {"repeats": 0},
        {"warmup": -1},
        {"threads": 0},
        {"device": "mps"},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    args = {"img_size": 16, **kwargs}
    with pytest.raises(CountError):
        measure_latency(tiny(), **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_unavailable() -> None:
    with pytest.raises(CountError, match="no CUDA"):
        measure_latency(tiny(), img_size=16, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_moves_model_back() -> None:  # pragma: no cover - no GPU in CI
    model = tiny()
    report = measure_latency(model, img_size=32, device="cuda", warmup=1, repeats=3)
    assert report.median_ms > 0 and report.threads is None
    assert next(model.parameters()).device.type == "cpu"


def test_meta_model_rejected() -> None:
    with torch.device("meta"):
        model = tiny()
    with pytest.raises(CountError, match="meta"):
        measure_latency(model, img_size=16)
