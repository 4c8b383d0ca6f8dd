"""Proxy training, evaluation, weight files and device selection (CPU only, small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from archsearch.errors import ConfigError, DataError, TrainingError
from archsearch.train import (
    CandidateOOMError,
    DeviceError,
    ImageData,
    ProxyResult,
    ProxySchedule,
    configure_threads,
    evaluate,
    load_dataset,
    load_weights,
    param_groups,
    save_weights,
    select_device,
    train_proxy,
)
from archsearch.train.augment import crop_flip as _crop_flip
from archsearch.train.device import native_bf16
from archsearch.train.optim import lr_factor as _lr_factor

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic() -> ImageData:
    return load_dataset("synthetic")


def tiny_net(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(256, num_classes),
    )


def schedule(**overrides: object) -> ProxySchedule:
    opts: dict[str, object] = {"epochs": 1, "img_size": 16, "batch_size": 32}
    return ProxySchedule.for_device("cpu", **{**opts, **overrides})


# --------------------------------------------------------------------------- training
def test_beats_chance_in_one_epoch(synthetic: ImageData) -> None:
    r = train_proxy(tiny_net(), synthetic, schedule(warmup_epochs=0.2), device="cpu", seed=0)
    assert isinstance(r, ProxyResult)
    assert r.epochs == 1 and r.history == [r.accuracy] and len(r.losses) == 1
    assert r.accuracy > 0.25, r  # chance is 0.1 (200 val images: 0.25 is 7 sigma above)
    assert r.train_seconds > 0 and r.images_per_second > 0


def test_reproducible_with_same_seed(synthetic: ImageData) -> None:
    s = schedule(epochs=2, subset=600)
    a, b, c = tiny_net(), tiny_net(), tiny_net()
    rng_before = torch.get_rng_state()
    ra = train_proxy(a, synthetic, s, device=CPU, seed=7)
    rb = train_proxy(b, synthetic, s, device=CPU, seed=7)
    rc = train_proxy(c, synthetic, s, device=CPU, seed=8)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    assert ra.history == rb.history and ra.losses == rb.losses
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert rc.losses != ra.losses  # the seed drives batch order and augmentation


class NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(1, 2, 3))[:, None]) * float("nan")


def test_non_finite_loss_raises(synthetic: ImageData) -> None:
    with pytest.raises(TrainingError, match=r"^non-finite loss \(nan\) at epoch 1 step 1$"):
        train_proxy(NaNNet(), synthetic, schedule(), device="cpu", seed=0)


def test_on_epoch_called_and_exceptions_propagate(synthetic: ImageData) -> None:
    calls: list[tuple[int, float]] = []
    r = train_proxy(
        tiny_net(),
        synthetic,
        schedule(epochs=3, subset=300),
        device="cpu",
        seed=0,
        on_epoch=lambda e, acc: calls.append((e, acc)),
    )
    assert calls == list(zip([1, 2, 3], r.history))

    class Pruned(Exception):
        pass

    def prune(epoch: int, acc: float) -> None:
        calls.append((epoch, acc))
        raise Pruned

    calls.clear()
    with pytest.raises(Pruned):
        train_proxy(tiny_net(), synthetic, schedule(epochs=3), device="cpu", seed=0, on_epoch=prune)
    assert [e for e, _ in calls] == [1]


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 4, 2))
        self.fixed = nn.Parameter(torch.ones(3, 3), requires_grad=False)
        self.embed = nn.Conv2d(1, 4, 4, stride=4)
        self.norm = nn.LayerNorm(4)
        self.token = nn.Module()
        self.token.table = nn.Parameter(torch.zeros(2, 4))
        self.head = nn.Linear(4, 10)

    def no_weight_decay(self) -> set[str]:
        return {"pos", "token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # B x N x 4
        return self.head(self.norm(t + self.token.table.sum(0)).mean(1) + self.pos.sum())


def test_param_groups_and_frozen_params(synthetic: ImageData) -> None:
    model = GroupedNet()
    groups = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = sorted(names[id(p)] for p in groups[0]["params"])
    no_decay = sorted(names[id(p)] for p in groups[1]["params"])
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == ["embed.weight", "head.weight"]
    assert no_decay == ["embed.bias", "head.bias", "norm.bias", "norm.weight", "pos", "token.table"]
    train_proxy(model, synthetic, schedule(subset=200), device="cpu", seed=0)
    assert torch.equal(model.fixed, torch.ones(3, 3))  # not optimised, not decayed
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(TrainingError, match="trainable parameters"):
        param_groups(frozen, weight_decay=0.1)


def test_amp_channels_last_and_compile_paths(
    synthetic: ImageData, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = schedule(subset=400, amp=True, channels_last=True, augment=False, grad_clip=1.0)
    r = train_proxy(tiny_net(), synthetic, s, device="cpu", seed=0)
    assert 0.0 <= r.accuracy <= 1.0
    compiled: list[nn.Module] = []
    real_compile = torch.compile

    def eager_compile(model: nn.Module) -> object:  # the real path, minus inductor's build time
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = tiny_net()
    r = train_proxy(model, synthetic, schedule(subset=200, compile=True), device="cpu", seed=0)
    assert compiled == [model] and 0.0 <= r.accuracy <= 1.0


class Raiser(nn.Module):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 10)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


def test_out_of_memory_becomes_candidate_oom(synthetic: ImageData) -> None:
    msg = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes."
    with pytest.raises(CandidateOOMError, match="expected the candidate to fit on cpu") as info:
        train_proxy(Raiser(RuntimeError(msg)), synthetic, schedule(), device="cpu", seed=0)
    assert isinstance(info.value, TrainingError) and "\n" not in str(info.value)
    with pytest.raises(CandidateOOMError):
        oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        train_proxy(Raiser(oom), synthetic, schedule(), device="cpu", seed=0)
    with pytest.raises(RuntimeError, match="shape mismatch") as other:
        train_proxy(
            Raiser(RuntimeError("shape mismatch")), synthetic, schedule(), device=CPU, seed=0
        )
    assert not isinstance(other.value, TrainingError)


def test_wrong_output_shape(synthetic: ImageData) -> None:
    with pytest.raises(TrainingError, match=r"expected shape \(32, 10\), got \(32, 7\)"):
        train_proxy(tiny_net(num_classes=7), synthetic, schedule(), device="cpu", seed=0)


# --------------------------------------------------------------------------- schedule
def test_schedule_defaults_and_validation() -> None:
    cpu = ProxySchedule.for_device("cpu")
    assert (cpu.epochs, cpu.img_size, cpu.subset, cpu.batch_size) == (2, 48, 5000, 128)
    gpu = ProxySchedule.for_device(torch.device("cuda"), epochs=3)
    assert (gpu.epochs, gpu.img_size, gpu.subset, gpu.batch_size) == (3, 64, None, 256)
    assert gpu.uses_amp(torch.device("cuda"))
    # bf16 where the CPU computes it natively (measured to keep the ranking), fp32 elsewhere
    assert cpu.uses_amp(CPU) == native_bf16(CPU)
    assert not ProxySchedule.for_device("cpu", amp=False).uses_amp(CPU)
    assert gpu.uses_channels_last(torch.device("cuda")) and not cpu.uses_channels_last(CPU)
    assert ProxySchedule(amp=True).uses_amp(CPU)
    with pytest.raises(ConfigError, match="'epoch'"):
        ProxySchedule.for_device("cpu", epoch=3)
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"subset": 0}, {"label_smoothing": 1.0}):
        with pytest.raises(ConfigError, match="ProxySchedule"):
            ProxySchedule(**bad)  # type: ignore[arg-type]


def test_lr_warmup_then_cosine() -> None:
    total, warmup = 100, 10
    factors = [_lr_factor(step, total, warmup, 0.01) for step in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_crop_flip_on_whole_batches() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    same = _crop_flip(x, torch.full((2, 2), 1), None, pad=1)
    assert torch.equal(same, x)
    flipped = _crop_flip(x, torch.full((2, 2), 1), torch.tensor([True, False]), pad=1)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    shifted = _crop_flip(x, torch.tensor([[0, 2], [2, 0]]), None, pad=1)
    assert torch.equal(shifted[0, 0, 1:, :3], x[0, 0, :3, 1:]) and (shifted[0, 0, 0] == 0).all()
    assert torch.equal(shifted[1, 0, :3, 1:], x[1, 0, 1:, :3]) and (shifted[1, 0, :, 0] == 0).all()


# --------------------------------------------------------------------------- evaluate, weights
class Oracle(nn.Module):
    """Predicts the class written into the image's mean value."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training and not torch.is_grad_enabled()
        return nn.functional.one_hot(x.float().mean(dim=(1, 2, 3)).round().long(), 5).float()


def test_evaluate() -> None:
    y = torch.arange(10) % 5
    x = y.to(torch.uint8)[:, None, None, None].expand(10, 1, 3, 3).contiguous()
    model = Oracle().train()
    assert evaluate(model, x.float(), y, batch_size=3) == 1.0 and model.training
    wrong = y.clone()
    wrong[:4] = (wrong[:4] + 1) % 5
    assert evaluate(model, x.float(), wrong, batch_size=4) == pytest.approx(0.6)
    assert evaluate(model, x, y, mean=(0.0,), std=(1 / 255,)) == 1.0  # uint8: scaled, normalised
    assert evaluate(model, x, y) == 0.2  # uint8 without stats: scaled to [0, 1] only
    with pytest.raises(DataError):
        evaluate(model, x[:0], y[:0])


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("steps", torch.tensor(3))


def test_save_and_load_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = Tied()
    path = save_weights(src, tmp_path / "sub" / "w.safetensors", metadata={"archid": "abc"})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    dst = Tied()
    load_weights(dst, path)
    assert torch.equal(dst.embed.weight, src.embed.weight) and dst.out.weight is dst.embed.weight
    conv = tiny_net().to(memory_format=torch.channels_last)  # non-contiguous parameters
    load_weights(tiny_net(), save_weights(conv, tmp_path / "conv.safetensors"))
    with pytest.raises(ConfigError, match="fit the model"):
        load_weights(nn.Linear(3, 3), path)
    with pytest.raises(ConfigError, match="existing"):
        load_weights(dst, tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------- device
def test_select_device() -> None:
    assert select_device("cpu") == CPU
    auto = select_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert auto.type != "cuda"
        with pytest.raises(DeviceError, match="'cuda:1'"):
            select_device("cuda:1")
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
