"""The Triton repository writer's pieces: tail inputs per wire format, config text, names, options, CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from protos.bundle import TensorSpec
from split.cli import main
from split.triton import TritonConfig, TritonModel, render_config, tail_inputs

B2 = TensorSpec("b2", (-1, 8, 4, 4))
LOGITS = TensorSpec("logits", (-1, 10))


def _names(specs: tuple[TensorSpec, ...]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(s.name, s.datatype, s.shape) for s in specs]


def test_tail_inputs_per_wire_format() -> None:
    assert _names(tail_inputs("fp32", B2)) == [("b2", "FP32", (-1, 8, 4, 4))]
    assert _names(tail_inputs("fp16", B2)) == [("b2", "FP16", (-1, 8, 4, 4))]
    assert _names(tail_inputs("int8", B2)) == [
        ("b2", "INT8", (-1, 8, 4, 4)),
        ("b2_scale", "FP32", (1,)),
        ("b2_zero_point", "INT8", (1,)),
    ]
    assert _names(tail_inputs("int8c", B2))[1:] == [("b2_scale", "FP32", (8,)), ("b2_zero_point", "INT8", (8,))]
    with pytest.raises(ValueError, match="valid"):
        tail_inputs("bf16", B2)


def test_batched_config_drops_the_batch_dimension() -> None:
    model = TritonModel("m_s2_fp32", 2, "fp32", "tails/tail2.onnx", tail_inputs("fp32", B2), LOGITS)
    text = render_config(model, TritonConfig(max_batch_size=8, max_queue_delay_us=100))
    assert 'name: "m_s2_fp32"' in text and 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 8\n" in text
    assert "dims: [ 8, 4, 4 ]" in text and "dims: [ 10 ]" in text
    assert "preferred_batch_size: [ 2, 4, 8 ]" in text and "max_queue_delay_microseconds: 100" in text
    assert "kind: KIND_CPU" in text


def test_unbatched_inputs_make_max_batch_size_zero() -> None:
    model = TritonModel("m_s2_int8", 2, "int8", "tails/tail2.int8.onnx", tail_inputs("int8", B2), LOGITS)
    assert model.unbatched == ("b2_scale", "b2_zero_point")
    text = render_config(model, TritonConfig())
    assert "max_batch_size: 0\n" in text and "dynamic_batching" not in text
    assert "# max_batch_size 0: b2_scale, b2_zero_point have no batch dimension" in text
    assert "dims: [ -1, 8, 4, 4 ]" in text and "dims: [ 1 ]" in text and "dims: [ -1, 10 ]" in text


def test_config_parameters_carry_the_bundle_hash_split_point_and_wire_format() -> None:
    model = TritonModel("m_s2_int8", 2, "int8", "tails/tail2.int8.onnx", tail_inputs("int8", B2), LOGITS)
    text = render_config(model, TritonConfig(), bundle_hash="sha256:abc")
    for key, value in (("edgesplit.bundle_hash", "sha256:abc"), ("edgesplit.split_point", "2"),
                       ("edgesplit.codec", "int8")):  # fmt: skip
        assert f'key: "{key}"\n    value: {{ string_value: "{value}" }}' in text
    assert "edgesplit.bundle_hash" not in render_config(model, TritonConfig())


def test_edge_model_names_match_the_repository_s() -> None:
    from edge.triton import model_name
    from protos.codecs import Codec
    from split.triton import _model_name

    split = type("SP", (), {"index": 3})()
    for codec in ("fp32", "fp16", "int8", "int8c", "int8+zstd"):
        fmt = Codec.parse(codec).format
        assert model_name("m", 3, Codec.parse(codec)) == _model_name("m", split, fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_queue_delay_us": -1}, {"instances": 0}])
def test_config_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TritonConfig(**kwargs)


def test_preferred_batch_sizes() -> None:
    assert TritonConfig(max_batch_size=32).preferred_batch_sizes == (8, 16, 32)
    assert TritonConfig(max_batch_size=1).preferred_batch_sizes == (1,)


def test_family_names_match_the_families() -> None:
    from split.export_cli import FAMILY_NAMES
    from split.models import FAMILIES

    assert tuple(sorted(FAMILIES)) == FAMILY_NAMES


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--from-bundle DIR"),
        (["--from-bundle", "nowhere", "--format", "bundle"], "go with --format triton"),
        (["--from-bundle", "nowhere", "--max-batch-size", "0"], "max_batch_size must be >= 1"),
        (["--from-bundle", "nowhere"], "no bundle at nowhere"),
    ],
)
def test_cli_errors(extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--out", str(tmp_path / "repo"), *(["--format", "triton"] if "--format" not in extra else [])]
    assert main([*argv, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
