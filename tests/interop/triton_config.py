"""Parse every ``config.pbtxt`` of a Triton model repository with Triton's own schema: run by
``.venv-interop/bin/python``, not by pytest.

tritonclient ships Triton's ``ModelConfig`` message (``tritonclient.grpc.model_config_pb2``); protobuf's text
format parser rejects unknown fields, wrong enum names (``TYPE_FP32``, ``KIND_CPU``) and malformed syntax the way
Triton's loader does. Prints ``{model directory: ModelConfig as JSON}`` on stdout (field names as in the proto).

Usage:
    python tests/interop/triton_config.py REPO
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


def main(argv: list[str]) -> int:
    """Parse ``REPO/*/config.pbtxt``; exit 1 naming the file if one does not parse."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    configs = {}
    for path in sorted(Path(argv[0]).glob("*/config.pbtxt")):
        try:
            message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        except text_format.ParseError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
        configs[path.parent.name] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    json.dump(configs, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
