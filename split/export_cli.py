"""``edgesplit export``: train (cached), calibrate and export a bundle for a family or a user's own module."""

from __future__ import annotations

import argparse
from pathlib import Path

from protos.codecs import CODECS
from split.data import load_dataset
from split.models import FAMILIES
from split.partition import ModelConfig
from split.pipeline import BundleConfig, UserModel, default_cache_dir, make_bundle
from split.train import TrainConfig

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle directory to write")
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--data-dir", type=Path, default=None, help="directory of the four Fashion-MNIST IDX files")
    model = parser.add_argument_group("model: a built-in family, or a Python file and the function that builds it")
    model.add_argument("--family", default="mobilenetv2", choices=sorted(FAMILIES))
    model.add_argument("--width", type=float, default=0.5, help="width multiplier of the family")
    model.add_argument("--model-file", type=Path, default=None, help="a Python file defining the model")
    model.add_argument("--model-fn", default="build", help="the function in --model-file that returns the module")
    model.add_argument("--weights", type=Path, default=None, help="its trained state_dict: only exits are trained")
    parser.add_argument("--split-points", nargs="+", default=None, help="boundary names (default: the family's)")
    parser.add_argument("--exits", nargs="*", default=None, help="split points that get an exit (default: all)")
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="the loss must be within budget with this one-sided confidence (0.5: point estimate; default %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--default-split", type=int, default=1, help="the split point the edge starts with")
    parser.add_argument("--codec", default="fp32", choices=CODECS, help="the edge's default wire codec")
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models (default: $EDGESPLIT_CACHE)")


def run(args: argparse.Namespace) -> int:
    """Make the bundle and print where each exit's threshold landed."""
    kwargs = {"data_dir": args.data_dir} if args.dataset == "fashion-mnist" else {}
    data = load_dataset(args.dataset, **kwargs)
    split_points = tuple(args.split_points) if args.split_points else None
    exits = tuple(args.exits) if args.exits is not None else split_points
    user = None
    family = args.family
    if args.model_file is not None:
        user = UserModel(str(args.model_file), args.model_fn, str(args.weights) if args.weights else None)
        family = args.model_fn
    model = ModelConfig(
        family,
        width=args.width,
        in_channels=data.input_shape[0],
        image_size=data.input_shape[-1],
        num_classes=len(data.classes),
        split_points=split_points,
        exits=exits,
    )
    bundle, _ = make_bundle(
        data,
        model,
        TrainConfig(epochs=args.epochs),
        BundleConfig(args.criterion, args.budget / 100, args.default_split, args.codec, args.confidence),
        cache=args.cache_dir or default_cache_dir(),
        out=args.out,
        user=user,
    )
    m = bundle.manifest
    print(f"bundle {args.out}: {m.model}, {len(m.segments)} segments, split points {list(m.split_indices)}")
    for e in m.exits:
        stats = dict(e.calibration)
        print(f"  {e.name} after segment {e.after_segment}: {e.criterion} threshold {e.threshold:.4f},"
              f" calibration exit rate {100 * stats.get('exit_rate', 0):.1f}%")  # fmt: skip
    return 0
