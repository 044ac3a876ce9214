"""The data options of ``edgesplit export`` and ``edgesplit profile``: a built-in set (``--dataset``,
``--data-dir``) or the user's own (``--data`` folder or ``.npz``), and the dataset they name.

Nothing here imports torch: the loaders are imported when the data is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protos.preprocessing import Preprocessing
    from split.data import Dataset

__all__ = ["add_data_arguments", "load_args_data"]


def add_data_arguments(parser: argparse.ArgumentParser, image_size: bool = True) -> None:
    """The data options; ``image_size``: also ``--image-size`` and ``--resize`` (export chooses them, profile
    takes the bundle's)."""
    data = parser.add_argument_group("data: a built-in set, or your own (--data)")
    data.add_argument("--dataset", default=None, choices=["digits", "fashion-mnist"], help="default: digits")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="a directory of the four standard IDX files (Fashion-MNIST's names; classes from classes.txt or labels)",
    )
    data.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="PATH",
        help="your own data: a folder with a sub-folder of JPEG/PNG/WebP images per class (optionally inside"
        " train/, val/, test/), an .npz with arrays x, y and optionally classes, or labelled texts: a .csv"
        ' (header text,label) or a .jsonl ({"text": ..., "label": ...} per line), which make a text bundle',
    )
    if image_size:
        data.add_argument("--image-size", type=int, default=None, metavar="CROP", help="--data images: the crop (224)")
        data.add_argument(
            "--resize", type=int, default=None, help="--data images: the shorter side before the crop (CROP*256/224)"
        )
    data.add_argument(
        "--skip-bad-images", action="store_true", help="--data: leave out images that cannot be decoded (reported)"
    )
    data.add_argument(
        "--workers", type=int, default=2, help="--data: processes decoding images into the cache (default %(default)s)"
    )


def load_args_data(args: argparse.Namespace, spec: Preprocessing | None = None) -> Dataset:
    """The dataset the options name: ``--data`` (read with ``spec``: the image preprocessing), else
    ``--dataset`` / ``--data-dir`` (``--data-dir`` alone: an IDX directory)."""
    image_options = getattr(args, "image_size", None) is not None or getattr(args, "resize", None) is not None
    if args.data is None:
        if image_options or args.skip_bad_images:
            raise ValueError("--image-size, --resize and --skip-bad-images go with --data (your own images)")
        from split.data import load_dataset

        name = args.dataset or ("fashion-mnist" if args.data_dir is not None else "digits")
        return load_dataset(name, **({"data_dir": args.data_dir} if name == "fashion-mnist" else {}))
    if args.dataset is not None or args.data_dir is not None:
        raise ValueError("--data (your own folder or .npz) replaces --dataset and --data-dir; give one of them")
    from split.userdata import DataOptions, load_data

    options = DataOptions(skip_bad=args.skip_bad_images, workers=args.workers, cache_dir=args.cache_dir)
    return load_data(args.data, spec, options)
