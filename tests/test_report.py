"""archsearch.report: pareto.csv, PNG plots and a self-contained report.html from a run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from archsearch.errors import ArchsearchError
from archsearch.pareto import pareto_table
from archsearch.records import trials_frame
from archsearch.report import load_run, write_report
from archsearch.report.data import Dimension, results
from archsearch.report.plots import dimensions_plot, family_groups, importance_plot, pareto_figure
from archsearch.search.study import load_study, open_study, to_record

from ._tiny import tiny_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("report") / "run", trials=6)


@pytest.fixture(scope="module")
def report(run_dir: Path) -> dict[str, Any]:
    return write_report(run_dir)


def _check_html(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "url(" not in html.lower() and "@import" not in html.lower()


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3
    assert image.shape[1] >= 1200, f"{path.name} is {image.shape[1]} px wide"


def _fake_run(root: Path, *, budget: str = "1M-params,500M-macs", baselines: tuple = ()) -> Any:
    """A run directory with settings and an empty study, to be filled with made-up trials."""
    root.mkdir()
    settings = {
        "options": {"sampler": "random", "seed": 0},
        "resolved": {
            "budget": budget,
            "space": "default.yaml",
            "objectives": ["accuracy", "macs"],
            "baselines": list(baselines),
            "cost_target": {"img_size": 224, "in_chans": 3, "num_classes": 1000},
        },
        "versions": {"archsearch": "test"},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(settings))
    return open_study(root, ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=0))


def _sync(run: Path, study: optuna.Study) -> None:
    """Write trials.csv from the study, as the run driver does after every trial."""
    table = trials_frame([to_record(t) for t in study.trials])
    table.to_csv(run / "trials.csv", index=False)


def _fake_trial(
    archid: str,
    acc: float,
    params: int,
    macs: int,
    choices: dict[str, str] | None = None,
    **attrs: Any,
) -> optuna.trial.FrozenTrial:
    choices = choices or {}
    space = {
        "family": ["hierarchical", "columnar"],
        "hierarchical.stage1.mixer": ["csa", "conv"],
        "columnar.mixer": ["attention", "lookup"],
    }
    user_attrs = {
        "archid": archid,
        "feasible": True,
        "params": params,
        "macs": macs,
        "proxy_accuracy": acc,
        "val_images": 2000,
        "epochs": 1,
        "config": "{}",
        **attrs,
    }
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=[acc, macs],
        params=choices,
        distributions={k: CategoricalDistribution(space[k]) for k in choices},
        user_attrs=user_attrs,
    )


def test_report_writes_every_file_on_a_finished_run(run_dir: Path, report: dict) -> None:
    assert set(report) == {"html", "pareto_csv", "plots"}
    assert report["html"] == run_dir / "report.html" and report["html"].is_file()
    assert report["pareto_csv"] == run_dir / "pareto.csv" and report["pareto_csv"].is_file()
    names = {p.name for p in report["plots"]}
    assert {"pareto_macs.png", "pareto_params.png", "hypervolume.png", "dimensions.png"} <= names
    for path in report["plots"]:
        assert path.parent == run_dir
        _check_png(path)
    assert not list(run_dir.glob(".*.tmp")), "temporary files left behind"


def test_pareto_csv_is_the_front_and_agrees_with_optuna(run_dir: Path, report: dict) -> None:
    front = pd.read_csv(report["pareto_csv"])
    study = load_study(run_dir)
    table = pareto_table(trials_frame([to_record(t) for t in study.trials]), ["accuracy", "macs"])
    assert sorted(front["trial"]) == sorted(table.loc[table.pareto_rank == 0, "trial"])
    best = [t.number for t in study.best_trials if "reused_from" not in t.user_attrs]
    assert sorted(front["trial"]) == sorted(best)
    assert list(front["proxy_accuracy"]) == sorted(front["proxy_accuracy"], reverse=True)
    assert front["knee"].sum() == 1
    for col in ("stage1.mixer", "cb.kind", "params", "macs", "total_params", "crowding"):
        assert col in front.columns


def test_html_is_self_contained(run_dir: Path, report: dict) -> None:
    html = report["html"].read_text()
    _check_html(html)
    assert html.count('src="data:image/png;base64,') == len(report["plots"])
    assert "<table" in html and "Pareto front" in html
    front = pd.read_csv(report["pareto_csv"])
    knee = int(front.loc[front["knee"], "trial"].iloc[0])
    assert f"Knee of the Pareto front: trial {knee}," in html
    assert "100K-params" in html and "space" in html.lower() and "tiny" in html
    assert "stage1.mixer" in html  # per-dimension summary


def test_report_while_a_trial_is_running(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    study = load_study(copy)
    study.ask()  # left RUNNING
    _sync(copy, study)
    paths = write_report(copy)
    html = paths["html"].read_text()
    assert "RUNNING" in html
    front = pd.read_csv(paths["pareto_csv"])
    assert sorted(front["trial"]) == sorted(pd.read_csv(run_dir / "pareto.csv")["trial"])
    _check_html(html)


@pytest.mark.parametrize("content", [(), ("study.journal",), ("trials.csv",)])
def test_not_a_run_directory(tmp_path: Path, content: tuple) -> None:
    for name in content:
        (tmp_path / name).write_text("")
    with pytest.raises(ArchsearchError, match="expected an archsearch run folder, got no run.yaml"):
        write_report(tmp_path)
    with pytest.raises(ArchsearchError, match="no such directory"):
        write_report(tmp_path / "missing")


@pytest.mark.parametrize("created", [True, False])
def test_empty_study_gives_a_page_saying_so(tmp_path: Path, created: bool) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    if not created:  # a journal in which the run has not created its study yet
        (run / "study.journal").write_text("")
    (run / "dimensions.png").write_bytes(b"stale")
    paths = write_report(run)
    assert paths["plots"] == []
    assert not (run / "dimensions.png").exists()
    assert pd.read_csv(paths["pareto_csv"]).empty
    html = paths["html"].read_text()
    assert "No feasible trial has a result yet" in html
    _check_html(html)


def test_infeasible_only_study_and_escaping(tmp_path: Path) -> None:
    run = tmp_path / "run"
    study = _fake_run(run, baselines=("lvt",))
    bad = "params 2M > budget 1M <script>alert(1)</script> see https://example.invalid/x"
    study.add_trial(_fake_trial("a1", 0.0, 2_000_000, 10**8, feasible=False, error=bad))
    _sync(run, study)
    paths = write_report(run)
    html = paths["html"].read_text()
    _check_html(html)
    assert "&lt;script&gt;" in html
    assert "No feasible trial has a result yet" in html
    assert "Baseline lvt: not run yet." in html
    assert paths["plots"] == []


def test_baselines_and_conditional_dimensions(tmp_path: Path) -> None:
    run = tmp_path / "run"
    study = _fake_run(run, baselines=("lvt",))
    h, c = "hierarchical", "columnar"
    for i, (family, mixer, acc) in enumerate(
        [(h, "csa", 0.80), (h, "csa", 0.78), (h, "conv", 0.70), (h, "conv", 0.66),
         (c, "attention", 0.75), (c, "lookup", 0.60), (c, "attention", 0.72), (h, "csa", 0.79)]
    ):  # fmt: skip
        key = f"{family}.stage1.mixer" if family == h else "columnar.mixer"
        choices = {"family": family, key: mixer}
        trial = _fake_trial(
            f"d{i}", acc, 500_000 + 10_000 * i, 10**8 * (i + 1), choices, latency_ms=1.0 + i
        )
        study.add_trial(trial)
    again = {"family": h, f"{h}.stage1.mixer": "csa"}
    study.add_trial(_fake_trial("d0", 0.80, 500_000, 10**8, again, latency_ms=1.0, reused_from=0))
    study.add_trial(_fake_trial("ref", 0.74, 900_000, 4 * 10**8, baseline="lvt"))
    _sync(run, study)
    paths = write_report(run)
    html = paths["html"].read_text()
    _check_html(html)
    assert (
        "Best candidate (0.800 ± 0.018) is more accurate than lvt: 0.740 ± 0.019 at 900.00K "
        "params, 400.00M MACs" in html
    )
    assert "seed noise is not measured" in html
    # with the seed spread a calibration measured, the same gap is no longer a claim
    (run / "calibration.json").write_text('{"noise": {"proxy_seed_std_mean": 0.03}}')
    html = write_report(run)["html"].read_text()
    assert "Best candidate (0.800 ± 0.061) is tied with (intervals overlap) lvt" in html
    front = pd.read_csv(paths["pareto_csv"])
    assert 0 in set(front["trial"]) and 8 not in set(front["trial"])  # a repeat: no 2nd point
    best = {t.number for t in study.best_trials} - {8}
    assert sorted(front["trial"]) == sorted(best)
    data = load_run(run)
    names = {p.name for p in paths["plots"]}
    assert {"pareto_macs.png", "pareto_params.png", "pareto_latency.png", "dimensions.png"} <= names
    assert "hierarchical.stage1.mixer" in html and "columnar.mixer" in html
    assert "importance.png" in names or "parameter importances" in html.lower()
    fig = pareto_figure(data.table[data.table.feasible.astype(bool)], "macs", "MACs", limit=5e8)
    assert fig is not None
    assert "lvt" in [t.get_text() for t in fig.axes[0].texts]


def test_committed_run_reports_without_its_journal(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parents[1] / "results" / "default-3.5M-params"
    copy = tmp_path / "run"
    shutil.copytree(committed, copy)
    assert not (copy / "study.journal").exists()  # the committed folder holds no journal
    paths = write_report(copy)
    mine = pd.read_csv(paths["pareto_csv"])
    theirs = pd.read_csv(committed / "pareto.csv")
    assert list(mine["trial"]) == list(theirs["trial"])
    assert 'id="calibration"' in paths["html"].read_text()


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "default-3.5M-params"


def _shown_ticks(fig: Any) -> list[str]:
    """The labelled major ticks inside the x range of the figure's first axes."""
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = sorted(ax.get_xlim())
    return [
        t.get_text()
        for t in ax.get_xticklabels()
        if t.get_text() and low <= t.get_position()[0] <= high
    ]


def test_pareto_plot_of_the_committed_run_reads_well() -> None:
    data = load_run(COMMITTED)  # reads only
    res = results(data.table)
    macs = pareto_figure(res, "macs", "MACs", knee_trial=22)
    assert macs is not None and macs.axes[0].get_xscale() == "log"
    ticks = _shown_ticks(macs)
    assert len(ticks) >= 4 and "1G" in ticks, ticks
    params = pareto_figure(res, "params", "params", limit=3.5e6)
    assert params is not None
    (label,) = params.axes[0].texts  # the lvt baseline, just left of the 3.5M budget line
    assert label.get_text() == "lvt" and label.get_ha() == "right"
    assert len(_shown_ticks(params)) >= 4
    assert params.get_size_inches()[0] * params.dpi >= 1200
    legend = params.axes[0].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > params.axes[0].bbox.x1 - 1


def test_dimensions_are_grouped_by_family() -> None:
    names = ["family", "columnar.stage1.depth", "hierarchical.stage2.dim", "hierarchical.cb.kind"]
    assert family_groups(names) == {
        "family": "",
        "columnar.stage1.depth": "columnar",
        "hierarchical.stage2.dim": "hierarchical",
        "hierarchical.cb.kind": "hierarchical",
    }
    assert set(family_groups(["stage1.mixer", "cb.kind"]).values()) == {""}  # one family

    def dim(name: str, accs: list[float]) -> Dimension:
        return Dimension(name, [("a", np.array(accs)), ("b", np.array(accs) + 0.01)], "b", 0.01)

    png = dimensions_plot(
        [dim("family", [0.6, 0.7]), dim("columnar.stage1.depth", [0.5, 0.6]),
         dim("hierarchical.stage2.dim", [0.7, 0.8]), dim("hierarchical.cb.kind", [0.7, 0.72])]
    )  # fmt: skip
    assert png is not None and png[:8] == PNG_SIGNATURE


def test_importance_plot_drops_zero_importances(tmp_path: Path) -> None:
    png = importance_plot({"family": 0.7, "hierarchical.stage1.dim": 0.3, "columnar.cb.kind": 0.0})
    assert png is not None
    path = tmp_path / "importance.png"
    path.write_bytes(png)
    _check_png(path)
    assert importance_plot({"family": 0.0, "columnar.cb.kind": 0.0}) is None
