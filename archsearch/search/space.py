"""Design spaces as YAML, sampled define-by-run.

A space file mirrors :class:`~archsearch.config.ArchConfig`: every leaf is either a fixed value
or a list of choices. See ``search_spaces/README.md`` for the schema. A space is sampled through a
``suggest(name, choices)`` function, so this module is the only place that knows the parameter
names, and :mod:`archsearch.search.study` is the only place that hands it an Optuna trial.

Conditional choices (a choice is only asked for when it matters):

* ``recursion`` only for ``mixer: rasa``; ``sr_ratio`` only for ``sra``, ``rasa`` and ``acmix``;
  ``kernel_size`` only for ``csa`` and ``conv``; ``lookup_grid`` only for ``lookup`` (which also
  forces ``class_token: false``); ``lookup_multires: true`` (or a ``[false, true]`` choice) trains
  a lookup design once at every ``lookup_grid`` choice and records one design per grid;
* ``cb.position`` and ``cb.layers`` only when ``cb.kind`` is not ``none``;
* ``tokenizer.patch_size`` is forced to 16 for T2T tokenizers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    CB_KINDS,
    CB_LAYERS,
    CB_POSITIONS,
    COLUMNAR_MIXERS,
    COLUMNAR_TOKENIZERS,
    HIERARCHICAL_MIXERS,
    HIERARCHICAL_TOKENIZERS,
    MLPS,
    POS_EMBEDS,
    ArchConfig,
)
from ..errors import ConfigError, SpaceError

__all__ = ["SearchSpace", "Branch", "load_space", "builtin_spaces", "SPACES_DIR"]

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"

Suggest = Callable[[str, list[Any]], Any]

_STAGE_KEYS = {
    "depth": int,
    "dim": int,
    "heads": int,
    "head_dim": int,
    "mixer": str,
    "mlp": str,
    "mlp_ratio": float,
    "sr_ratio": int,
    "recursion": int,
    "kernel_size": int,
    "qkv_bias": bool,
    "lookup_grid": int,
    "lookup_multires": bool,
}
_TOKENIZER_KEYS = {"kind": str, "patch_size": int, "t2t_dim": int}
_CB_KEYS = {"kind": str, "position": str, "layers": str}
_TOP_KEYS = {"pos_embed": str, "class_token": bool, "drop_path_rate": float}
_META_KEYS = {"name", "description", "macro", "tokenizer", "stages", "cb"}
_ENUMS = {
    "cb.kind": CB_KINDS,
    "cb.position": CB_POSITIONS,
    "cb.layers": CB_LAYERS,
    "mlp": MLPS,
    "pos_embed": POS_EMBEDS,
}


def _choices(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Branch:
    """One macro family of a space: plain data loaded from YAML."""

    name: str
    macro: str
    tokenizer: dict[str, Any]
    stages: tuple[dict[str, Any], ...]
    cb: dict[str, Any]
    top: dict[str, Any]

    # ------------------------------------------------------------------ sampling
    def sample(self, suggest: Suggest, prefix: str = "") -> ArchConfig:
        """Build one config, asking ``suggest(name, choices)`` for every open choice."""

        def pick(name: str, value: Any) -> Any:
            options = _choices(value)
            if len(options) == 1:
                return options[0]
            return suggest(prefix + name, options)

        tok: dict[str, Any] = {"kind": pick("tokenizer.kind", self.tokenizer.get("kind"))}
        if tok["kind"].startswith("t2t"):
            tok["patch_size"] = 16
        elif "patch_size" in self.tokenizer:
            tok["patch_size"] = pick("tokenizer.patch_size", self.tokenizer["patch_size"])
        if "t2t_dim" in self.tokenizer and tok["kind"].startswith("t2t"):
            tok["t2t_dim"] = pick("tokenizer.t2t_dim", self.tokenizer["t2t_dim"])
        stages = []
        lookup = False
        for i, spec in enumerate(self.stages):
            name = f"stage{i + 1}."
            s: dict[str, Any] = {}
            for key in ("depth", "dim", "mixer", "mlp", "mlp_ratio", "qkv_bias"):
                if key in spec:
                    s[key] = pick(name + key, spec[key])
            if "head_dim" in spec:
                s["heads"] = max(1, s["dim"] // pick(name + "head_dim", spec["head_dim"]))
            else:
                s["heads"] = pick(name + "heads", spec["heads"])
            mixer = s.get("mixer", "attn")
            if mixer in ("sra", "rasa", "acmix") and "sr_ratio" in spec:
                s["sr_ratio"] = pick(name + "sr_ratio", spec["sr_ratio"])
            if mixer == "rasa" and "recursion" in spec:
                s["recursion"] = pick(name + "recursion", spec["recursion"])
            if mixer in ("csa", "conv") and "kernel_size" in spec:
                s["kernel_size"] = pick(name + "kernel_size", spec["kernel_size"])
            if mixer == "lookup":
                s["lookup_grid"] = pick(name + "lookup_grid", spec.get("lookup_grid", 5))
                if pick(name + "lookup_multires", spec.get("lookup_multires", False)):
                    s["lookup_multires"] = sorted(_choices(spec["lookup_grid"]))
                lookup = True
            stages.append(s)
        cb: dict[str, Any] = {"kind": pick("cb.kind", self.cb.get("kind", "none"))}
        if cb["kind"] != "none":
            cb["position"] = pick("cb.position", self.cb.get("position", "mlp_end"))
            cb["layers"] = pick("cb.layers", self.cb.get("layers", "all"))
        top = {k: pick(k, v) for k, v in self.top.items()}
        if lookup:
            top["class_token"] = False
        return ArchConfig.from_dict(
            {"macro": self.macro, "tokenizer": tok, "stages": stages, "cb": cb, **top}
        )

    def dimensions(self) -> list[tuple[str, list[Any]]]:
        """Every open choice (name and options), whether or not it is conditional."""
        dims: list[tuple[str, list[Any]]] = []

        def add(name: str, value: Any) -> None:
            if len(_choices(value)) > 1:
                dims.append((name, _choices(value)))

        for k, v in self.tokenizer.items():
            add(f"tokenizer.{k}", v)
        for i, spec in enumerate(self.stages):
            for k, v in spec.items():
                add(f"stage{i + 1}.{k}", v)
        for k, v in self.cb.items():
            add(f"cb.{k}", v)
        for k, v in self.top.items():
            add(k, v)
        return dims


class SearchSpace:
    """A loaded design space: one or more :class:`Branch` es (macro families)."""

    def __init__(self, name: str, branches: dict[str, Branch], path: Path | None = None) -> None:
        self.name = name
        self.branches = branches
        self.path = path

    def sample(self, suggest: Suggest) -> ArchConfig:
        if len(self.branches) == 1:
            return next(iter(self.branches.values())).sample(suggest)
        branch = suggest("family", list(self.branches))
        return self.branches[branch].sample(suggest, prefix=f"{branch}.")

    def dimensions(self) -> list[tuple[str, list[Any]]]:
        if len(self.branches) == 1:
            return next(iter(self.branches.values())).dimensions()
        dims: list[tuple[str, list[Any]]] = [("family", list(self.branches))]
        for name, b in self.branches.items():
            dims += [(f"{name}.{n}", c) for n, c in b.dimensions()]
        return dims

    def cheapest(self, cost: Callable[[ArchConfig], float]) -> tuple[ArchConfig, float]:
        """The member with the smallest ``cost``, by coordinate descent over the choices.

        Every choice is tried in turn with the others held fixed, until no single change
        lowers the cost (costs here are sums over blocks, for which this finds the minimum).
        """
        best: tuple[ArchConfig, float] | None = None
        for branch_name in self.branches:
            fixed = {"family": branch_name} if len(self.branches) > 1 else {}
            current = dict(fixed)
            cfg = self.member(current)
            value = cost(cfg)
            for _ in range(4):
                improved = False
                for name, choices in self.dimensions():
                    if name in fixed or name == "family":
                        continue
                    for choice in choices:
                        assign = {**current, name: choice}
                        try:
                            c2 = self.member(assign)
                        except ConfigError:
                            continue
                        v2 = cost(c2)
                        if v2 < value:
                            current, cfg, value, improved = assign, c2, v2, True
                if not improved:
                    break
            if best is None or value < best[1]:
                best = (cfg, value)
        assert best is not None
        return best

    def member(self, assign: dict[str, Any]) -> ArchConfig:
        """The member with the given choices (the first option for every other choice)."""
        return self.sample(lambda name, choices: assign.get(name, choices[0]))


# ---------------------------------------------------------------------------- loading
def _err(path: Path, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{path.name}: {key}: {msg}")


def _check_leaf(path: Path, key: str, value: Any, typ: type, allowed: tuple | None) -> Any:
    options = _choices(value)
    if not options:
        raise _err(path, key, "expected a value or a non-empty list of choices, got []")
    out = []
    for v in options:
        ok = isinstance(v, typ) and not (typ is not bool and isinstance(v, bool))
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise _err(path, key, f"expected {typ.__name__} values, got {v!r}")
        if allowed is not None and v not in allowed:
            raise _err(path, key, f"expected one of {', '.join(map(str, allowed))}; got {v!r}")
        out.append(v)
    if len(set(map(repr, out))) != len(out):
        raise _err(path, key, f"expected distinct choices, got {out!r}")
    return out if isinstance(value, list) else out[0]


def _check_section(
    path: Path, where: str, data: Any, keys: Mapping[str, type], enums: Mapping[str, tuple]
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _err(path, where, f"expected a mapping, got {data!r}")
    out = {}
    for k, v in data.items():
        if k not in keys:
            raise _err(path, f"{where}.{k}", f"unknown key; expected one of {', '.join(keys)}")
        out[k] = _check_leaf(path, f"{where}.{k}", v, keys[k], enums.get(k))
    return out


def _parse_branch(path: Path, name: str, data: Any) -> Branch:
    if not isinstance(data, dict):
        raise _err(path, name, f"expected a mapping, got {data!r}")
    unknown = set(data) - _META_KEYS - set(_TOP_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_META_KEYS | set(_TOP_KEYS)))
        raise _err(path, sorted(unknown, key=str)[0], f"unknown key; expected one of {allowed}")
    macro = data.get("macro")
    if macro not in ("hierarchical", "columnar"):
        raise _err(path, "macro", f"expected hierarchical or columnar, got {macro!r}")
    mixers = HIERARCHICAL_MIXERS if macro == "hierarchical" else COLUMNAR_MIXERS
    toks = HIERARCHICAL_TOKENIZERS if macro == "hierarchical" else COLUMNAR_TOKENIZERS
    tokenizer = _check_section(
        path, "tokenizer", data.get("tokenizer", {}), _TOKENIZER_KEYS, {"kind": toks}
    )
    if "kind" not in tokenizer:
        raise _err(path, "tokenizer.kind", f"expected one of {', '.join(toks)}, got nothing")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise _err(path, "stages", f"expected a non-empty list of stages, got {raw_stages!r}")
    stages = []
    for i, raw in enumerate(raw_stages):
        where = f"stages[{i}]"
        s = _check_section(path, where, raw, _STAGE_KEYS, {"mixer": mixers, "mlp": MLPS})
        for req in ("depth", "dim"):
            if req not in s:
                raise _err(path, f"{where}.{req}", "required key is missing")
        if ("heads" in s) == ("head_dim" in s):
            raise _err(path, where, "expected exactly one of heads or head_dim")
        key = "heads" if "heads" in s else "head_dim"
        per = _choices(s[key])
        if min(per) < 1:
            raise _err(path, f"{where}.{key}", f"expected integers >= 1, got {s[key]!r}")
        for dim, h in itertools.product(_choices(s["dim"]), per):
            if dim % h:
                raise _err(
                    path,
                    f"{where}.{key}",
                    f"every dim choice must be divisible by it; dim {dim} by {h} is not",
                )
        multires = True in _choices(s.get("lookup_multires", False))
        if multires and len(_choices(s.get("lookup_grid", 5))) < 2:
            raise _err(
                path, f"{where}.lookup_multires",
                "expected at least two lookup_grid choices to train at, got "
                f"lookup_grid {s.get('lookup_grid', 5)!r}",
            )  # fmt: skip
        stages.append(s)
    cb = _check_section(
        path,
        "cb",
        data.get("cb", {}),
        _CB_KEYS,
        {k.split(".")[1]: v for k, v in _ENUMS.items() if k.startswith("cb.")},
    )
    top = {
        k: _check_leaf(path, k, data[k], _TOP_KEYS[k], _ENUMS.get(k))
        for k in _TOP_KEYS
        if k in data
    }
    branch = Branch(name, macro, tokenizer, tuple(stages), cb, top)
    # Every choice must give a valid architecture: the i-th members take the i-th option of every
    # choice (the last where a choice has fewer), so each option of each choice is tried once.
    widest = max((len(options) for _, options in branch.dimensions()), default=1)
    for i in range(widest):
        try:
            branch.sample(lambda _n, options, i=i: options[min(i, len(options) - 1)])  # type: ignore[misc]
        except ConfigError as e:
            raise SpaceError(f"{path.name}: {e}") from None
    return branch


def load_space(spec: str | Path, *, branch: bool = False) -> SearchSpace:
    """Load a space from a YAML file path or a built-in name (``default``, ``hierarchical``...);
    ``branch``: the file is a branch of another space, so it has no branches itself."""
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = SPACES_DIR / f"{spec}.yaml"
        if not path.is_file():
            names = ", ".join(builtin_spaces())
            raise SpaceError(
                f"space {str(spec)!r}: expected a YAML file or a built-in space ({names})"
            )
    if not path.is_file():
        raise SpaceError(f"space {str(spec)!r}: expected an existing YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise SpaceError(f"{path.name}: expected a readable UTF-8 YAML file, got {msg}") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # too deep, an integer too long
        msg = " ".join(str(e).split())
        raise SpaceError(f"{path.name}: expected valid YAML, got a parse error: {msg}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path.name}: expected a mapping at the top level, got {data!r}")
    name = str(data.get("name", path.stem))
    if len(name.splitlines()) != 1:
        raise _err(path, "name", f"expected a name on one line, got {name!r}")
    if "branches" in data:
        if branch:
            raise SpaceError(f"{path.name}: expected a space without branches (it is a branch)")
        extra = set(data) - {"name", "description", "branches"}
        if extra:
            raise _err(path, sorted(extra, key=str)[0], "unknown key next to branches")
        raw = data["branches"]
        if not isinstance(raw, dict) or not raw:
            raise _err(path, "branches", f"expected a mapping of name -> space, got {raw!r}")
        branches = {}
        for bname, bdata in raw.items():
            if isinstance(bdata, str):  # a reference to another space file
                sub = load_space(path.parent / bdata, branch=True)
                if len(sub.branches) != 1:
                    raise _err(path, f"branches.{bname}", "expected a space without branches")
                bdata_branch = next(iter(sub.branches.values()))
                branches[bname] = Branch(
                    bname,
                    *(
                        getattr(bdata_branch, f)
                        for f in ("macro", "tokenizer", "stages", "cb", "top")
                    ),
                )
            else:
                branches[bname] = _parse_branch(path, f"branches.{bname}", bdata)
        return SearchSpace(name, branches, path)
    return SearchSpace(name, {name: _parse_branch(path, name, data)}, path)


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
