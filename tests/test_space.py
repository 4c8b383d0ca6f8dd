from __future__ import annotations

import random

import pytest

from archsearch.config import ArchConfig
from archsearch.cost.analytic import estimate
from archsearch.cost.budget import parse_budget
from archsearch.cost.candidate import CostTarget
from archsearch.errors import BudgetError, SpaceError
from archsearch.search.plan import check_budget_reachable
from archsearch.search.space import builtin_spaces, load_space


def _random_members(space, n: int, seed: int = 0) -> list[ArchConfig]:
    rng = random.Random(seed)
    return [space.sample(lambda _name, options: rng.choice(options)) for _ in range(n)]


@pytest.mark.parametrize("name", ["default", "hierarchical", "columnar", "tiny"])
def test_builtin_spaces_sample_valid_configs(name: str) -> None:
    space = load_space(name)
    for cfg in _random_members(space, 60):
        assert isinstance(cfg, ArchConfig)  # validated on construction


def test_builtin_list() -> None:
    assert {"default", "hierarchical", "columnar", "tiny"} <= set(builtin_spaces())


def test_default_space_covers_every_design_dimension() -> None:
    cfgs = _random_members(load_space("default"), 800, seed=1)
    hier = [c for c in cfgs if c.macro == "hierarchical"]
    col = [c for c in cfgs if c.macro == "columnar"]
    assert {c.stages[0].mixer for c in hier} == {"csa", "conv", "acmix", "attn"}
    rasa = [s for c in hier for s in c.stages[1:] if s.mixer == "rasa"]
    assert {s.recursion for s in rasa} == {1, 2, 3, 4}
    assert any(s.mixer == "acmix" for c in hier for s in c.stages[1:])
    assert {c.cb.kind for c in cfgs} == {"none", "cb", "cbs"}
    assert {c.cb.position for c in cfgs if c.cb.kind != "none"} == {
        "mlp_end",
        "mlp_mid",
        "mlp_front",
        "attn",
        "both",
    }
    assert {c.cb.layers for c in cfgs if c.cb.kind != "none"} == {"all", "deeper_half"}
    assert {c.tokenizer.kind for c in col} == {"t2t_performer", "patch", "conv_stem"}
    assert {c.stages[0].lookup_grid for c in col if c.stages[0].mixer == "lookup"} == {3, 5, 7}
    assert any(c.stages[0].mixer == "attn" for c in col)
    assert len({c.stages[0].depth for c in col}) >= 5
    assert len({c.stages[0].dim for c in col}) >= 3
    assert len({s.mlp_ratio for c in hier for s in c.stages}) >= 3


def test_conditional_choices_are_only_asked_when_they_matter() -> None:
    space = load_space("hierarchical")
    asked: list[str] = []

    def suggest(name, options):
        asked.append(name)
        return "conv" if name == "stage1.mixer" else ("none" if name == "cb.kind" else options[0])

    space.sample(suggest)
    assert "stage1.kernel_size" in asked
    assert "stage1.sr_ratio" not in asked  # a conv mixer has no spatial reduction
    assert "cb.position" not in asked and "cb.layers" not in asked
    assert "stage2.recursion" in asked  # stage 2 defaults to rasa (first option)


def test_lvt_is_a_member_of_the_hierarchical_space() -> None:
    from archsearch.models import reference_config

    lvt = reference_config("lvt").replace(drop_path_rate=0.0)
    want = {
        "stage1.depth": 2,
        "stage1.dim": 64,
        "stage1.mixer": "csa",
        "stage1.kernel_size": 3,
        "stage1.mlp_ratio": 4.0,
        "stage2.depth": 2,
        "stage2.dim": 64,
        "stage2.mixer": "rasa",
        "stage2.recursion": 2,
        "stage2.mlp_ratio": 8.0,
        "stage3.depth": 2,
        "stage3.dim": 160,
        "stage3.mixer": "rasa",
        "stage3.recursion": 2,
        "stage3.mlp_ratio": 4.0,
        "stage4.depth": 2,
        "stage4.dim": 256,
        "stage4.mixer": "rasa",
        "stage4.recursion": 2,
        "stage4.mlp_ratio": 4.0,
        "cb.kind": "none",
    }
    cfg = load_space("hierarchical").member(want)
    assert cfg == lvt


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("macro: hierarchical\nstages: [", "expected valid YAML"),
        ("- a\n- b\n", "mapping at the top level"),
        ("macro: pyramid\nstages: []\n", "macro: expected hierarchical or columnar"),
        (
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n  - {depth: 2, dim: 64, heads: 2, "
            "mixer: [attn, csa]}\n",
            "stages[0].mixer: expected one of attn, lookup; got 'csa'",
        ),
        (
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n"
            "  - {depth: 2, dim: 64, head: 2}\n",
            "stages[0].head: unknown key",
        ),
        (
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n  - {depth: 2, dim: [64, 96], "
            "heads: [2, 5]}\n",
            "dim 64 by 5 is not",
        ),
        (
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n  - {depth: [], dim: 64, "
            "heads: 2}\n",
            "non-empty list",
        ),
        (
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n  - {depth: two, dim: 64, "
            "heads: 2}\n",
            "expected int values, got 'two'",
        ),
        (
            "macro: columnar\ntokenizer: {kind: patch}\ncb: {kind: [cb, sometimes]}\nstages:\n"
            "  - {depth: 2, dim: 64, heads: 2}\n",
            "cb.kind: expected one of none, cb, cbs",
        ),
        (  # a middle choice is checked too, not only the first and the last
            "macro: columnar\ntokenizer: {kind: patch}\nstages:\n  - {depth: [1, 100, 2], "
            "dim: 64, heads: 2}\n",
            "stages[0].depth: expected an integer in [1, 64], got 100",
        ),
    ],
)
def test_space_errors_name_file_key_and_allowed_values(tmp_path, text: str, fragment: str) -> None:
    path = tmp_path / "myspace.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith("myspace.yaml: ")
    assert fragment in msg
    assert "\n" not in msg


def test_unknown_space_name() -> None:
    with pytest.raises(SpaceError, match="built-in space"):
        load_space("nonexistent")


def test_cheapest_member_and_impossible_budget() -> None:
    space = load_space("columnar")
    cfg, value = space.cheapest(lambda c: estimate(c, num_classes=0).params)
    members = _random_members(space, 300, seed=3)
    assert all(estimate(c, num_classes=0).params >= value for c in members)
    assert cfg.stages[0].depth == 4 and cfg.stages[0].dim == 128
    with pytest.raises(BudgetError) as err:
        check_budget_reachable(space, parse_budget("0.1M-params"), CostTarget())
    assert "the smallest architecture in columnar has" in str(err.value)
    assert "budget 0.1M-params cannot be met" in str(err.value)
    check_budget_reachable(space, parse_budget("3.5M-params"), CostTarget())
