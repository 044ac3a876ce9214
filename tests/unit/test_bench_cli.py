"""The benchmark harness lives in ``benchmarks/``: each benchmark its own subcommand with only its own options."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from split.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _options(capsys: pytest.CaptureFixture[str], *argv: str) -> set[str]:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *argv, "--help"])
    assert exit_.value.code == 0
    return {w.rstrip(",") for w in capsys.readouterr().out.split() if w.startswith("--")}


def test_each_benchmark_lists_only_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    network = _options(capsys, "network")
    photos = _options(capsys, "photos")
    faults = _options(capsys, "faults")
    assert {"--profiles", "--adapt-requests", "--out"} <= network
    assert not network & {"--kd-alpha", "--clients", "--malformed", "--requests", "--families"}
    assert photos == {"--out", "--help"}
    assert {"--requests", "--deadline-ms"} <= faults and "--profiles" not in faults


def test_an_unknown_benchmark_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "speed", "--out", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "speed" in err and "network" in err and "photos" in err


def test_split_is_the_offline_toolchain_alone() -> None:
    """Nothing under split/ imports the benchmark harness (the harness imports split/, not the other way)."""
    offenders = []
    for path in sorted((ROOT / "split").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert offenders == []
    assert not list((ROOT / "split").glob("bench*.py"))
