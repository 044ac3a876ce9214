"""Options more than one benchmark takes; each benchmark's ``add_arguments`` picks the ones it uses."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_budget", "add_data_dir", "add_out", "add_training"]


def add_out(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``: where results.json and plots go."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where results.json and plots go")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the Fashion-MNIST IDX files (default: the Debian package's)."""
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="a directory holding the four Fashion-MNIST IDX files"
    )


def add_budget(parser: argparse.ArgumentParser) -> None:
    """``--budget`` and ``--confidence``: the exits' calibration."""
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="calibrate so that the loss is within budget with this one-sided confidence (0.5: point estimate)",
    )


def add_training(parser: argparse.ArgumentParser, epochs: int = 12) -> None:
    """``--epochs``, ``--cache-dir`` and the data: the cached training the benchmarks share."""
    add_data_dir(parser)
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs per family (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models (default: $EDGESPLIT_CACHE)")
