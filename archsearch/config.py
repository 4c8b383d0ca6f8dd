"""Architectures as data.

An :class:`ArchConfig` describes a whole network: its macro type, tokenizer, stages and the
Context Broadcasting setting. It is frozen, round-trips through JSON and YAML, validates itself
on construction (errors name the field and the bad value) and has a stable :attr:`ArchConfig.archid`
(a hash of its canonical JSON, independent of key order).

Two macro types:

* ``hierarchical``: LVT / PVT-style pyramid of 1-4 stages, each opened by an overlapping patch
  embedding (stage 1 by the tokenizer, later stages by a 3x3 stride-2 conv), no position embedding.
* ``columnar``: ViT / T2T / LookupViT-style single resolution, exactly one stage, tokenizer then
  ``depth`` blocks, optional class token and position embedding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "MIXERS",
    "HIERARCHICAL_MIXERS",
    "COLUMNAR_MIXERS",
    "MLPS",
    "CB_KINDS",
    "CB_POSITIONS",
    "CB_LAYERS",
    "HIERARCHICAL_TOKENIZERS",
    "COLUMNAR_TOKENIZERS",
    "StageConfig",
    "TokenizerConfig",
    "CBConfig",
    "ArchConfig",
    "load_config",
]

#: Token mixers. ``attn``: global multi-head self-attention; ``sra``: PVTv2 spatial-reduction
#: attention; ``rasa``: LVT's recursive atrous self-attention; ``csa``: LVT's convolutional
#: self-attention; ``conv``: depthwise-separable conv mixer; ``acmix``: ACmix;
#: ``lookup``: LookupViT.
MIXERS = ("attn", "sra", "rasa", "csa", "conv", "acmix", "lookup")
HIERARCHICAL_MIXERS = ("attn", "sra", "rasa", "csa", "conv", "acmix")
COLUMNAR_MIXERS = ("attn", "lookup")
MLPS = ("mlp", "conv_mlp")
CB_KINDS = ("none", "cb", "cbs")
CB_POSITIONS = ("mlp_end", "mlp_mid", "mlp_front", "attn", "both")
CB_LAYERS = ("all", "deeper_half")
HIERARCHICAL_TOKENIZERS = ("overlap_patch", "conv_stem")
COLUMNAR_TOKENIZERS = ("patch", "t2t_performer", "t2t_transformer", "conv_stem")
POS_EMBEDS = ("none", "sincos", "learned")


def _fail(path: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, got {value!r}")


def _check_int(path: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, value, "an integer")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _fail(path, value, f"an integer {rng}")


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(path, value, "one of " + ", ".join(choices))


@dataclass(frozen=True)
class StageConfig:
    """One stage: ``depth`` blocks of width ``dim`` sharing a mixer and an MLP type.

    Attributes:
        depth: number of blocks.
        dim: channel width (embedding dimension).
        heads: attention heads; ``dim`` must be divisible by it.
        mixer: token mixer, one of :data:`MIXERS`.
        mlp: ``mlp`` (Linear-GELU-Linear) or ``conv_mlp`` (LVT: 1x1, depthwise 3x3, GELU, 1x1).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        sr_ratio: key/value spatial reduction for ``sra``, ``rasa`` and ``acmix``.
        recursion: RASA recursion depth (1 = plain ASA), 1..4.
        kernel_size: CSA window size, or the depthwise kernel of the ``conv`` mixer.
        qkv_bias: bias on q/k/v projections.
        lookup_grid: LookupViT compressed grid side (M = lookup_grid ** 2); ``lookup`` only.
        lookup_multires: LookupViT multi-resolution training: the compressed grid sides drawn
            per batch while training (sorted on construction; at least two, distinct, one of them
            ``lookup_grid``, the grid the model is evaluated and exported at by default). Empty:
            single-grid. ``lookup`` only; left out of the JSON/YAML form when empty, so configs
            without it keep their archid.
    """

    depth: int
    dim: int
    heads: int
    mixer: str = "attn"
    mlp: str = "mlp"
    mlp_ratio: float = 4.0
    sr_ratio: int = 1
    recursion: int = 1
    kernel_size: int = 3
    qkv_bias: bool = False
    lookup_grid: int = 0
    lookup_multires: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.mlp_ratio, int) and not isinstance(self.mlp_ratio, bool):
            object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        mr = self.lookup_multires
        if isinstance(mr, (list, tuple)):  # one spelling per set: a sorted tuple
            ints = all(isinstance(g, int) and not isinstance(g, bool) for g in mr)
            object.__setattr__(self, "lookup_multires", tuple(sorted(mr) if ints else mr))

    def validate(self, path: str = "stage") -> None:
        _check_int(f"{path}.depth", self.depth, 1, 64)
        _check_int(f"{path}.dim", self.dim, 8, 4096)
        _check_int(f"{path}.heads", self.heads, 1, 64)
        if self.dim % self.heads:
            raise ConfigError(
                f"{path}.dim: expected a multiple of heads={self.heads}, got {self.dim}"
            )
        _check_choice(f"{path}.mixer", self.mixer, MIXERS)
        _check_choice(f"{path}.mlp", self.mlp, MLPS)
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)):
            raise _fail(f"{path}.mlp_ratio", self.mlp_ratio, "a number")
        if not 0.25 <= self.mlp_ratio <= 16:
            raise _fail(f"{path}.mlp_ratio", self.mlp_ratio, "a number in [0.25, 16]")
        _check_int(f"{path}.sr_ratio", self.sr_ratio, 1, 16)
        _check_int(f"{path}.recursion", self.recursion, 1, 4)
        if self.recursion > 1 and self.mixer != "rasa":
            raise _fail(f"{path}.recursion", self.recursion, "1 unless mixer is 'rasa'")
        _check_int(f"{path}.kernel_size", self.kernel_size, 1, 15)
        if self.kernel_size % 2 == 0:
            raise _fail(f"{path}.kernel_size", self.kernel_size, "an odd integer")
        if not isinstance(self.qkv_bias, bool):
            raise _fail(f"{path}.qkv_bias", self.qkv_bias, "true or false")
        if self.mixer == "lookup":
            _check_int(f"{path}.lookup_grid", self.lookup_grid, 1, 64)
        elif self.lookup_grid:
            raise _fail(f"{path}.lookup_grid", self.lookup_grid, "0 unless mixer is 'lookup'")
        self._validate_multires(path)

    def _validate_multires(self, path: str) -> None:
        mr, name = self.lookup_multires, f"{path}.lookup_multires"
        if not isinstance(mr, tuple):
            raise _fail(name, mr, "a list of compressed grid sides")
        if not mr:
            return
        if self.mixer != "lookup":
            raise _fail(name, list(mr), "empty unless mixer is 'lookup'")
        for i, g in enumerate(mr):
            _check_int(f"{name}[{i}]", g, 1, 64)
        if len(set(mr)) < 2 or len(set(mr)) != len(mr):
            raise _fail(name, list(mr), "at least two distinct grid sides (or none)")
        if self.lookup_grid not in mr:
            raise _fail(
                f"{path}.lookup_grid", self.lookup_grid, f"one of lookup_multires {list(mr)}"
            )


@dataclass(frozen=True)
class TokenizerConfig:
    """How images become tokens.

    Attributes:
        kind: hierarchical: ``overlap_patch`` (conv 7x7 stride 4, LayerNorm) or ``conv_stem``;
            columnar: ``patch`` (ViT), ``t2t_performer`` / ``t2t_transformer`` (T2T soft splits
            7/3/3 with strides 4/2/2) or ``conv_stem`` (3x3 stride-2 convs).
        patch_size: overall stride of the tokenizer (T2T: fixed at 16).
        t2t_dim: token width inside the T2T module.
    """

    kind: str = "patch"
    patch_size: int = 16
    t2t_dim: int = 64

    def validate(self, macro: str, path: str = "tokenizer") -> None:
        allowed = HIERARCHICAL_TOKENIZERS if macro == "hierarchical" else COLUMNAR_TOKENIZERS
        _check_choice(f"{path}.kind", self.kind, allowed)
        _check_int(f"{path}.patch_size", self.patch_size, 1, 64)
        if self.kind.startswith("t2t") and self.patch_size != 16:
            raise _fail(f"{path}.patch_size", self.patch_size, "16 for a T2T tokenizer")
        if self.kind == "conv_stem" and self.patch_size & (self.patch_size - 1):
            raise _fail(f"{path}.patch_size", self.patch_size, "a power of two for conv_stem")
        if self.kind == "overlap_patch" and self.patch_size < 2:
            raise _fail(f"{path}.patch_size", self.patch_size, "a stride >= 2")
        _check_int(f"{path}.t2t_dim", self.t2t_dim, 8, 1024)


@dataclass(frozen=True)
class CBConfig:
    """Context Broadcasting (CB: ``0.5 x + 0.5 mean(x)``; CBS: learnable per-channel mixing).

    Attributes:
        kind: ``none``, ``cb`` or ``cbs``.
        position: ``mlp_end``, ``mlp_mid``, ``mlp_front``, ``attn`` (after the mixer) or ``both``
            (after the mixer and at the MLP end).
        layers: ``all`` blocks or the ``deeper_half`` only.
    """

    kind: str = "none"
    position: str = "mlp_end"
    layers: str = "all"

    def validate(self, path: str = "cb") -> None:
        _check_choice(f"{path}.kind", self.kind, CB_KINDS)
        _check_choice(f"{path}.position", self.position, CB_POSITIONS)
        _check_choice(f"{path}.layers", self.layers, CB_LAYERS)


@dataclass(frozen=True)
class ArchConfig:
    """A whole network, as data. See the module docstring for the two macro types.

    Attributes:
        macro: ``hierarchical`` or ``columnar``.
        stages: hierarchical: 1-4 stages; columnar: exactly one.
        tokenizer: image-to-token stem.
        cb: Context Broadcasting setting for the whole network.
        pos_embed: columnar only: ``sincos`` (fixed), ``learned`` or ``none``.
        class_token: columnar only: classify from a class token instead of average pooling.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
    """

    macro: str
    stages: tuple[StageConfig, ...]
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    cb: CBConfig = field(default_factory=CBConfig)
    pos_embed: str = "none"
    class_token: bool = False
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.drop_path_rate, int) and not isinstance(self.drop_path_rate, bool):
            object.__setattr__(self, "drop_path_rate", float(self.drop_path_rate))
        # Accept lists/dicts for convenience; store canonical frozen types.
        stages = tuple(
            s if isinstance(s, StageConfig) else _from_mapping(StageConfig, s, f"stages[{i}]")
            for i, s in enumerate(self.stages)
        )
        object.__setattr__(self, "stages", stages)
        if not isinstance(self.tokenizer, TokenizerConfig):
            tok = _from_mapping(TokenizerConfig, self.tokenizer, "tokenizer")
            object.__setattr__(self, "tokenizer", tok)
        if not isinstance(self.cb, CBConfig):
            object.__setattr__(self, "cb", _from_mapping(CBConfig, self.cb, "cb"))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _check_choice("macro", self.macro, ("hierarchical", "columnar"))
        if not self.stages:
            raise _fail("stages", list(self.stages), "at least one stage")
        self.tokenizer.validate(self.macro)
        self.cb.validate()
        _check_choice("pos_embed", self.pos_embed, POS_EMBEDS)
        if not isinstance(self.class_token, bool):
            raise _fail("class_token", self.class_token, "true or false")
        if not isinstance(self.drop_path_rate, (int, float)) or not 0 <= self.drop_path_rate < 1:
            raise _fail("drop_path_rate", self.drop_path_rate, "a number in [0, 1)")
        for i, s in enumerate(self.stages):
            s.validate(f"stages[{i}]")
        if self.macro == "hierarchical":
            if len(self.stages) > 4:
                raise _fail("stages", len(self.stages), "1 to 4 stages for a hierarchical macro")
            for i, s in enumerate(self.stages):
                _check_choice(f"stages[{i}].mixer", s.mixer, HIERARCHICAL_MIXERS)
            if self.pos_embed != "none":
                raise _fail("pos_embed", self.pos_embed, "'none' for a hierarchical macro")
            if self.class_token:
                raise _fail("class_token", True, "false for a hierarchical macro")
        else:
            if len(self.stages) != 1:
                raise _fail("stages", len(self.stages), "exactly 1 stage for a columnar macro")
            s = self.stages[0]
            _check_choice("stages[0].mixer", s.mixer, COLUMNAR_MIXERS)
            if s.mlp != "mlp":
                raise _fail("stages[0].mlp", s.mlp, "'mlp' for a columnar macro")
            if s.mixer == "lookup" and self.class_token:
                raise _fail("class_token", True, "false for a LookupViT (lookup) stage")

    # ------------------------------------------------------------------ derived
    @property
    def depth(self) -> int:
        """Total number of blocks."""
        return sum(s.depth for s in self.stages)

    @property
    def archid(self) -> str:
        """Stable 12-hex-digit id of the architecture alone: SHA-1 of its canonical JSON (see
        :func:`archsearch.blocks.canonical`: no training-only fields, unread fields at their
        defaults), so equal networks share one id."""
        from .blocks import canonical

        text = json.dumps(canonical(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def cb_enabled(self, block_index: int) -> bool:
        """Whether Context Broadcasting applies to the block with this global index."""
        if self.cb.kind == "none":
            return False
        return self.cb.layers == "all" or block_index >= self.depth // 2

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = [dict(s) for s in d["stages"]]
        for s in d["stages"]:  # absent when off: single-grid configs keep their JSON and archid
            mr = s.pop("lookup_multires")
            if mr:
                s["lookup_multires"] = list(mr)
        return d

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys, compact unless ``indent`` is given)."""
        seps = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=seps)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        return _from_mapping(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # also too deep, or an integer too long
            raise ConfigError(f"config: expected JSON, got a parse error: {_one_line(e)}") from None
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, text: str) -> ArchConfig:
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as e:  # as for JSON
            raise ConfigError(f"config: expected YAML, got a parse error: {_one_line(e)}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ArchConfig:
        return dataclasses.replace(self, **changes)


def _one_line(error: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _from_mapping(cls: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(path, data, f"a mapping for {cls.__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be numbers or null too
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; expected keys among {', '.join(names)}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{path}: missing required key {missing[0]!r}")
    kwargs = dict(data)
    if cls is ArchConfig:
        if not isinstance(kwargs["stages"], (list, tuple)):
            raise _fail(f"{path}.stages", kwargs["stages"], "a list of stages")
        kwargs["stages"] = tuple(kwargs["stages"])
    obj = cls(**kwargs)
    if cls in (StageConfig, CBConfig):
        obj.validate(path)  # TokenizerConfig is validated by ArchConfig, which knows the macro
    return obj


def load_config(path: str | Path) -> ArchConfig:
    """Load an :class:`ArchConfig` from a ``.json``, ``.yaml`` or ``.yml`` file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file: expected an existing file, got {str(p)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(
            f"config file {p.name!r}: expected readable UTF-8 text, got {msg}"
        ) from None
    if p.suffix == ".json":
        return ArchConfig.from_json(text)
    if p.suffix in (".yaml", ".yml"):
        return ArchConfig.from_yaml(text)
    raise ConfigError(f"config file: expected a .json, .yaml or .yml file, got {p.name!r}")
