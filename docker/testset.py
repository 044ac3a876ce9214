"""Write a dataset's test split as ``.npy`` for the compose ``client`` (runs on the host: it needs the split extra).

    python docker/testset.py --out out/data [--dataset digits] [--limit N]

writes ``out/data/x_test.npy`` (model-ready float32, as the bundle's input expects) and ``out/data/y_test.npy``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    args = parser.parse_args(argv)
    from split.data import load_dataset

    data = load_dataset(args.dataset)
    x, y = data.x_test[: args.limit], data.y_test[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "x_test.npy", np.ascontiguousarray(x, dtype=np.float32))
    np.save(args.out / "y_test.npy", np.asarray(y, dtype=np.int64))
    print(f"wrote {len(x)} samples of {args.dataset} to {args.out}/x_test.npy, y_test.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
