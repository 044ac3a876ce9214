"""``edgesplit export``: train (cached), calibrate and export a bundle for a family or a user's own module;
with ``--format triton``, also (or only, from an existing bundle) a Triton model repository of its tails.

Converting an existing bundle (``--format triton --from-bundle DIR``) imports neither torch nor onnx: the
training stack is imported only when a bundle is made.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protos.bundle import EDGE_PRECISIONS, Bundle
from protos.codecs import CODECS
from split.datacli import add_data_arguments, load_args_data

if TYPE_CHECKING:
    from split.data import Dataset
    from split.pipeline import Pretrained
    from split.triton import TritonModel

__all__ = ["EDGE_FORMATS", "FAMILY_NAMES", "FORMATS", "add_arguments", "run"]

FAMILY_NAMES = (
    "efficientnet_lite0",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenetv2",
    "resnet",
    "shufflenet_v2",
    "squeezenet",
    "vgg",
)
"""The keys of :data:`split.models.FAMILIES` (named here so that the options need no torch; a test compares)."""

FORMATS = ("bundle", "triton")
EDGE_FORMATS = ("onnx", "ort")
"""The edge's graphs: ONNX only, or also ONNX Runtime's ORT format for ONNX Runtime Mobile (:mod:`split.ortformat`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="the bundle directory to write; with --format triton, the Triton model repository",
    )
    add_data_arguments(parser)
    model = parser.add_argument_group("model: a built-in family, or a Python file and the function that builds it")
    model.add_argument("--family", default="mobilenetv2", choices=FAMILY_NAMES)
    model.add_argument("--width", type=float, default=0.5, help="width multiplier of the family")
    model.add_argument("--model-file", type=Path, default=None, help="a Python file defining the model")
    model.add_argument("--model-fn", default="build", help="the function in --model-file that returns the module")
    model.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="its trained state_dict: only exits are trained (--pretrained: ImageNet weights, the family's layout)",
    )
    model.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the family's published ImageNet weights (mobilenet_v2, efficientnet_lite0; or --weights):"
        " a new classifier for the data's classes and the exits train on the frozen backbone",
    )
    model.add_argument(
        "--finetune-blocks",
        type=int,
        default=0,
        metavar="N",
        help="with --pretrained: fine-tune the backbone's last N blocks with the new classifier (default 0: a linear"
        " probe on the frozen backbone)",
    )
    text = parser.add_argument_group("text: --data FILE.csv or FILE.jsonl (text, label) makes a text bundle")
    text.add_argument("--text-family", default="mobilebert", choices=["mobilebert", "bert"])
    text.add_argument("--text-depth", type=int, default=4, help="encoder layers, an exit after each")
    text.add_argument("--text-policy", default="entropy", choices=["entropy", "patience"], help="the exit rule")
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
    parser.add_argument(
        "--exit-loss",
        default="ce",
        choices=["ce", "kd"],
        help="how exits learn: cross-entropy, or distillation from the final classifier (default %(default)s)",
    )
    parser.add_argument("--kd-temperature", type=float, default=4.0, help="the distillation temperature")
    parser.add_argument(
        "--kd-alpha", type=float, default=0.0, help="the share of cross-entropy mixed into a kd exit loss (0..1)"
    )
    parser.add_argument("--default-split", type=int, default=1, help="the split point the edge starts with")
    parser.add_argument("--codec", default="fp32", choices=CODECS, help="the edge's default wire codec")
    parser.add_argument(
        "--prune",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="remove this fraction of channels (by filter L1 norm) in the edge's segments, then fine-tune",
    )
    parser.add_argument("--prune-epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    parser.add_argument(
        "--edge-precision",
        default="fp32",
        choices=EDGE_PRECISIONS,
        help="int8: static int8 (QDQ) segments and exits, calibrated on the calibration split; tails stay fp32",
    )
    parser.add_argument(
        "--edge-format",
        default="onnx",
        choices=EDGE_FORMATS,
        help="ort: also write the edge's segments, exits and preprocessing in ONNX Runtime's ORT format (what ONNX"
        " Runtime Mobile loads; the edge then loads them) and required_operators.config for a reduced build",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models (default: $EDGESPLIT_CACHE)")
    _add_bottleneck_arguments(parser)
    _add_triton_arguments(parser)


def _add_bottleneck_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("learned bottlenecks at split points (split.bottleneck)")
    group.add_argument(
        "--bottleneck",
        action="append",
        default=[],
        metavar="SPLIT:CHANNELS[:STRIDE]",
        help="after split point SPLIT, an encoder to CHANNELS channels (stride 2 or 4 also halves or quarters the"
        " size) ends the edge's head and a decoder begins the cloud's tail, trained by distillation on the frozen"
        " model (no labels); the split point stays usable without it. Repeatable, one per split point",
    )
    group.add_argument("--bottleneck-epochs", type=int, default=20, help="its training epochs (default %(default)s)")
    group.add_argument(
        "--bottleneck-samples", type=int, default=None, help="train it on at most this many training samples"
    )


def _add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    triton = parser.add_argument_group("Triton model repository (--format triton)")
    triton.add_argument(
        "--format",
        default="bundle",
        choices=FORMATS,
        help="bundle (default), or triton: a Triton model repository of the bundle's tails at --out",
    )
    triton.add_argument("--from-bundle", type=Path, default=None, metavar="DIR", help="convert this bundle")
    triton.add_argument(
        "--bundle-out", type=Path, default=None, metavar="DIR", help="without --from-bundle: make the bundle here first"
    )
    triton.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size (default %(default)s)")
    triton.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=500,
        help="the dynamic batcher's max_queue_delay_microseconds (default %(default)s)",
    )
    triton.add_argument("--model-name", default=None, help="prefix of the model names (default: the bundle's model)")


def run(args: argparse.Namespace) -> int:
    """Make the bundle (or read it) and, with ``--format triton``, write the model repository."""
    if args.bottleneck and args.from_bundle is not None:
        raise ValueError("--bottleneck trains on the data: it goes with making a bundle, not with --from-bundle")
    if args.edge_format == "ort" and args.from_bundle is not None:
        raise ValueError("--edge-format ort goes with making a bundle (--out, or --bundle-out with --format triton)")
    if args.format == "bundle":
        if args.from_bundle is not None or args.bundle_out is not None:
            raise ValueError("--from-bundle and --bundle-out go with --format triton")
        _print_bundle(_make_bundle(args, args.out), args.out)
        return 0
    from split.triton import TritonConfig  # validate before any training

    config = TritonConfig(args.max_batch_size, args.max_queue_delay_us)
    if args.from_bundle is not None:
        bundle = Bundle.load(args.from_bundle)
    elif args.bundle_out is not None:
        bundle = _make_bundle(args, args.bundle_out)
        _print_bundle(bundle, args.bundle_out)
    else:
        raise ValueError(
            "--format triton needs --from-bundle DIR (convert a bundle) or --bundle-out DIR (make the bundle there"
            " first: the edge runs the same bundle)"
        )
    from split.triton import write_repository

    _print_models(write_repository(bundle, args.out, config, args.model_name), args.out)
    return 0


def _make_bundle(args: argparse.Namespace, out: Path) -> Bundle:
    """Train (cached), calibrate and export the bundle into ``out``: the only path that imports torch."""
    from split.bottleneck import BottleneckSpec
    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, UserModel, default_cache_dir, make_bundle
    from split.prune import PruneConfig
    from split.train import ExitLoss, TrainConfig

    if args.data is not None and args.data.suffix in (".csv", ".jsonl"):
        if args.bottleneck:
            raise ValueError("--bottleneck goes with image models; a text bundle (--data *.csv|*.jsonl) has none")
        return _make_text_bundle(args, out)
    specs = [BottleneckSpec.parse(text) for text in args.bottleneck]  # a bad one fails before any training
    data = _load_data(args)
    split_points = tuple(args.split_points) if args.split_points else None
    exits = tuple(args.exits) if args.exits is not None else split_points
    user = None
    family = args.family
    pretrained = _pretrained(args)
    if args.model_file is not None:
        user = UserModel(str(args.model_file), args.model_fn, str(args.weights) if args.weights else None)
        family = args.model_fn
    model = ModelConfig(
        family,
        width=1.0 if pretrained else args.width,
        in_channels=data.input_shape[0],
        image_size=data.input_shape[-1],
        num_classes=len(data.classes),
        split_points=split_points,
        exits=exits,
    )
    bundle, net = make_bundle(
        data,
        model,
        TrainConfig(epochs=args.epochs),
        BundleConfig(
            args.criterion, args.budget / 100, args.default_split, args.codec, args.confidence, args.edge_precision
        ),
        cache=args.cache_dir or default_cache_dir(),
        out=out,
        user=user,
        loss=ExitLoss(args.exit_loss, args.kd_temperature, args.kd_alpha),
        prune=PruneConfig(args.prune, args.prune_epochs) if args.prune else None,
        pretrained=pretrained,
    )
    if specs:
        bundle = _add_bottlenecks(args, bundle, net, data, specs)
    if args.edge_format == "ort":
        from split.ortformat import write_ort_format

        bundle = write_ort_format(bundle)
    return bundle


def _make_text_bundle(args: argparse.Namespace, out: Path) -> Bundle:
    """A user's labelled texts (``.csv`` / ``.jsonl``): a text bundle (:mod:`split.textbundle`)."""
    from split.textbundle import make_text_bundle
    from split.textdata import load_text_file
    from split.texttrain import TextConfig

    cfg = TextConfig(family=args.text_family, depth=args.text_depth, epochs=args.epochs, max_length=64)
    bundle, report = make_text_bundle(
        load_text_file(args.data),
        cfg,
        out,
        budget=args.budget / 100,
        confidence=args.confidence,
        policy=args.text_policy,
    )
    print(
        f"test accuracy: full {100 * report['full_accuracy']:.1f}%, with {args.text_policy} exits"
        f" {100 * report[args.text_policy]['accuracy']:.1f}% ({100 * report[args.text_policy]['exited_early']:.0f}%"
        " answered before the last layer)"
    )
    return bundle


def _add_bottlenecks(args: argparse.Namespace, bundle: Bundle, net: Any, data: Dataset, specs: list[Any]) -> Bundle:
    """``--bottleneck``: train and add each (:mod:`split.bottleneck_export`) on the training split."""
    from split.bottleneck import BottleneckConfig
    from split.bottleneck_export import add_bottlenecks
    from split.pipeline import default_cache_dir

    config = BottleneckConfig(epochs=args.bottleneck_epochs, max_samples=args.bottleneck_samples)
    return add_bottlenecks(bundle, net, data.x_train, specs, config, cache=args.cache_dir or default_cache_dir())


def _pretrained(args: argparse.Namespace) -> Pretrained | None:
    """``--pretrained``: the family's published weights, or ``--weights``, and ``--finetune-blocks``; refused with
    ``--model-file``."""
    if not args.pretrained:
        if args.finetune_blocks:
            raise ValueError("--finetune-blocks fine-tunes a pretrained backbone; it goes with --pretrained")
        return None
    if args.model_file is not None:
        raise ValueError("--pretrained starts a built-in family from ImageNet weights; a --model-file brings its own")
    from split.pipeline import Pretrained

    return Pretrained(str(args.weights) if args.weights else None, args.finetune_blocks)


def _load_data(args: argparse.Namespace) -> Dataset:
    """The dataset the options name; a user's images are preprocessed as ``--image-size`` / ``--resize`` say,
    else as the family's own ``preprocessing`` (a pretrained family's), else ImageNet's at crop 224."""
    spec = None
    if args.data is not None:
        from split.userdata import image_spec

        spec = image_spec(args.image_size, args.resize, _family_preprocessing(args))
    return load_args_data(args, spec)


def _family_preprocessing(args: argparse.Namespace) -> dict[str, Any] | None:
    """A family's own preprocessing (a class attribute ``preprocessing``, e.g. a pretrained family's), if any."""
    if args.model_file is not None:
        return None
    from split.models import FAMILIES

    record = getattr(FAMILIES.get(args.family), "preprocessing", None)
    return dict(record) if record else None


def _print_bundle(bundle: Bundle, out: Path) -> None:
    m = bundle.manifest
    print(
        f"bundle {out}: {m.model}, {len(m.segments)} segments ({m.edge_precision} edge),"
        f" split points {list(m.split_indices)}"
    )
    images = m.split_points[0].images
    if images:
        names = ", ".join("jpeg<Q> (e.g. jpeg90)" if fmt == "jpeg" else fmt for fmt in images)
        print(f"  split point 0 codecs: {', '.join(sorted(m.split_points[0].tails))}, and the frame itself as {names}")
    for e in m.exits:
        stats = dict(e.calibration)
        print(f"  {e.name} after segment {e.after_segment}: {e.criterion} threshold {e.threshold:.4f},"
              f" calibration exit rate {100 * stats.get('exit_rate', 0):.1f}%")  # fmt: skip
    for sp in m.split_points:
        if sp.bottleneck is not None:
            bn = sp.bottleneck
            print(f"  split point {sp.index}: bottleneck {list(sp.tensor.sample_shape)} -> {list(bn.code.sample_shape)}"
                  f" ({bn.codec} by default), trained in {bn.training.get('seconds', 0):.0f} s")  # fmt: skip
    if m.ort_format:
        files, operators = m.ort_format["files"], m.ort_format["operators"]
        print(f"  the edge's {len(files)} graphs also in ORT format, operators: {operators}")


def _print_models(models: list[TritonModel], repo: Path) -> None:
    print(f"Triton model repository {repo}: {len(models)} models (tritonserver --model-repository {repo})")
    print("  (split point 0's image codecs, jpeg<Q> and png, are not exported: serve them with `edgesplit cloud`)")
    for model in models:
        batching = "not batched" if model.unbatched else "dynamic batching"
        print(f"  {model.name}: split point {model.split}, {model.format}, {batching}")
