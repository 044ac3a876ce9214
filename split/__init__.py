"""Offline tooling (PyTorch): partition models, attach and calibrate exits, export bundles.

Importing ``split`` itself imports nothing heavy: the command line (``split.cli``) must start without torch so
that ``edgesplit cloud`` and ``edgesplit edge`` run in torch-free containers. Import the submodules you need.
"""

__all__ = ["calibrate", "cli", "data", "exits", "export", "models", "partition", "train"]
