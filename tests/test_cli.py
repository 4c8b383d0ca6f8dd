from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "archsearch.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_models_json() -> None:
    res = _run("models", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    keys = {"name", "params", "backbone_params", "macs", "published_params", "published_macs"}
    assert all(keys <= set(r) for r in rows.values())
    lvt = rows["lvt"]
    assert lvt["published_params"] == 3_400_000 and lvt["published_scope"] == "backbone"
    assert abs(lvt["backbone_params"] / 3.4e6 - 1) < 0.02
    assert rows["t2t_vit_7"]["published_macs"] == 1_100_000_000


@pytest.mark.parametrize(
    "target, gmacs",
    [
        ("timm:deit_tiny_patch16_224", 1.26),
        ("timm:pvt_v2_b0", 0.57),
        ("timm:mobilenetv2_100", 0.31),
    ],
)
def test_count_timm_models_json(target: str, gmacs: float) -> None:
    res = _run("count", target, "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert {"params", "backbone_params", "macs", "by_module", "uncounted_ops"} <= set(d)
    assert abs(d["macs"] / 1e9 / gmacs - 1) <= 0.02
    assert d["uncounted_ops"] == []
    assert sum(d["by_module"].values()) == d["macs"]


def test_count_table_and_config_file(tmp_path) -> None:
    from archsearch.models import reference_config

    path = tmp_path / "lvt.yaml"
    path.write_text(reference_config("lvt").to_yaml())
    res = _run("count", str(path))
    assert res.returncode == 0, res.stderr
    assert "stages.0" in res.stdout and "uncounted operators: none" in res.stdout
    assert "0.871" in res.stdout


@pytest.mark.parametrize("target", ["nosuchmodel", "timm:nosuchmodel", "missing.yaml"])
def test_count_unknown_target_is_one_line_error(target: str) -> None:
    res = _run("count", target)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "archsearch: error:" in lines[0], res.stderr


def test_version_and_python_dash_m() -> None:
    import subprocess
    import sys

    from archsearch import __version__

    res = subprocess.run(
        [sys.executable, "-m", "archsearch", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.strip() == f"archsearch {__version__}"


def test_ctrl_c_while_the_package_loads_is_one_line() -> None:
    """The console script's launcher is in place before torch loads: Ctrl-C during the imports
    (seconds) ends with one line and exit code 130, not a traceback."""
    import signal
    import time

    code = "import archsearch_launch, sys; sys.exit(archsearch_launch.main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "models"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
        # as from a terminal: a test runner started in the background (nohup, &) passes
        # SIGINT on as ignored, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(0.8)  # the launcher is running; torch, timm and archsearch are still loading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == "archsearch: interrupted\n", err


def test_every_help_text_reads_as_written() -> None:
    """Descriptions are printed as they are (argparse formats only argument help): no "%%"."""
    from archsearch.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, (name, text)
