"""Regenerate, or check, the committed Python stubs of ``protos/*.proto``.

The stubs are generated from the repository root with ``-I <root>``, so the generated imports read
``from protos import inference_pb2`` with no hand edits. ``--check`` generates into a temporary directory
and compares byte for byte with the committed files; a test runs it.

Example:
    $ python -m protos.codegen            # rewrite protos/*_pb2*.py[i]
    $ python -m protos.codegen --check    # exit 1 and list the stale files if any
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED", "PROTOS", "generate", "main", "protoc_command", "repo_root", "stale_files"]

PROTOS: tuple[str, ...] = ("protos/inference.proto", "protos/health.proto")
"""The sources, relative to the repository root."""

GENERATED: tuple[str, ...] = tuple(
    f"{proto.removesuffix('.proto')}{suffix}" for proto in PROTOS for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
)
"""The generated files, relative to the repository root (``protos/inference_pb2.py``, ...)."""


def repo_root() -> Path:
    """Return the repository root: the directory that holds the ``protos`` package.

    Returns:
        The absolute path of the repository root.
    """
    return Path(__file__).resolve().parent.parent


def protoc_command(root: Path, out_dir: Path) -> list[str]:
    """Build the ``grpc_tools.protoc`` command line that generates every stub.

    Args:
        root: The repository root, used as the only include path; the command runs from it.
        out_dir: Where ``--python_out``, ``--pyi_out`` and ``--grpc_python_out`` write; the files land in
            ``out_dir/protos/``.

    Returns:
        The argument vector, starting with the current Python interpreter.
    """
    out = str(out_dir)
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]


def generate(out_dir: Path, root: Path | None = None) -> None:
    """Run protoc on every ``.proto`` file, writing the stubs under ``out_dir/protos/``.

    Args:
        out_dir: The output root; pass the repository root to rewrite the committed files.
        root: The repository root (default: the one holding this package).

    Raises:
        RuntimeError: protoc failed; the message carries its output.
    """
    root = repo_root() if root is None else root
    result = subprocess.run(protoc_command(root, out_dir), cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed (exit {result.returncode}):\n{result.stderr}{result.stdout}")


def stale_files(committed: Path, root: Path | None = None) -> list[str]:
    """Regenerate into a temporary directory and list the committed stubs that differ.

    Args:
        committed: The directory holding the committed stubs, normally ``<root>/protos``.
        root: The repository root holding the ``.proto`` sources (default: the one holding this package).

    Returns:
        The names (e.g. ``inference_pb2.py``) of the files that are missing or differ byte for byte,
        in the order of ``GENERATED``; empty when everything is up to date.
    """
    with tempfile.TemporaryDirectory(prefix="edgesplit-codegen-") as tmp:
        generate(Path(tmp), root)
        stale = []
        for relative in GENERATED:
            name = Path(relative).name
            fresh = (Path(tmp) / relative).read_bytes()
            target = committed / name
            if not target.is_file() or target.read_bytes() != fresh:
                stale.append(name)
        return stale


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protos.codegen", description="Regenerate the Python stubs of protos/*.proto."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare freshly generated stubs with the committed ones; exit 1 if any is stale",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Regenerate the stubs in place, or with ``--check`` report the stale ones.

    Args:
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success or when up to date; 1 when ``--check`` found stale files; 2 when protoc failed.
    """
    args = _parser().parse_args(argv)
    root = repo_root()
    try:
        if not args.check:
            generate(root, root)
            print(f"regenerated {len(GENERATED)} files in {root / 'protos'}")
            return 0
        stale = stale_files(root / "protos", root)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if stale:
        print("stale generated files: " + ", ".join(f"protos/{name}" for name in stale), file=sys.stderr)
        print("run `python -m protos.codegen` and commit the result", file=sys.stderr)
        return 1
    print(f"{len(GENERATED)} generated files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
