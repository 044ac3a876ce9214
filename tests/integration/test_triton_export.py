"""``edgesplit export --format triton --from-bundle``: a Triton model repository of the bundle's tails.

The command runs in a subprocess where torch and onnx cannot be imported; its ``config.pbtxt`` files are parsed
with Triton's own ``ModelConfig`` schema (from tritonclient, in ``.venv-interop``) and compared with the copied
ONNX models' real inputs and outputs (read by ONNX Runtime); each copied model runs a batch of several samples
and gives the cloud's answer for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from cloud.model import TailModel
from protos.bundle import Bundle
from protos.codecs import Codec, encode

SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "triton_config.py"
MAX_BATCH, DELAY_US, BATCH = 16, 250, 5
_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int8)": "TYPE_INT8"}

# As in a container without torch and onnx: importing either fails.
_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
            raise ImportError(name + " is not installed here")
sys.meta_path.insert(0, _Block())
"""


def _expected(bundle: Bundle) -> dict[str, tuple[int, str, str]]:
    manifest = bundle.manifest
    return {
        f"{manifest.model}_s{sp.index}_{fmt}": (sp.index, fmt, file)
        for sp in manifest.split_points
        for fmt, file in sp.tails.items()
    }


@pytest.fixture(scope="module")
def repo(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    argv = ["export", "--format", "triton", "--from-bundle", str(bundle.root), "--out", str(out)]
    argv += ["--max-batch-size", str(MAX_BATCH), "--max-queue-delay-us", str(DELAY_US)]
    code = _BLOCK + f"from split.cli import main; raise SystemExit(main({argv!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert f"Triton model repository {out}: {len(_expected(bundle))} models" in result.stdout
    return out


@pytest.fixture(scope="module")
def configs(repo: Path, interop_python: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(interop_python), str(SCRIPT), str(repo)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"Triton's ModelConfig schema rejected a config.pbtxt:\n{result.stderr}"
    return json.loads(result.stdout)


def test_repository_layout(repo: Path, bundle: Bundle) -> None:
    expected = _expected(bundle)
    assert expected, "the bundle has no tails"
    assert sorted(p.name for p in repo.iterdir()) == sorted(expected)
    for name, (_, _, file) in expected.items():
        files = sorted(str(p.relative_to(repo / name)) for p in (repo / name).rglob("*") if p.is_file())
        assert files == ["1/model.onnx", "config.pbtxt"], name
        assert (repo / name / "1" / "model.onnx").read_bytes() == bundle.file(file).read_bytes(), name


def _ort_tensors(args: list[Any]) -> list[tuple[str, str, list[int]]]:
    return [(a.name, _ORT_TYPES[a.type], [d if isinstance(d, int) else -1 for d in a.shape]) for a in args]


def _config_tensors(entries: list[dict[str, Any]], batched: bool) -> list[tuple[str, str, list[int]]]:
    """(name, data_type, shape) with the batch dimension put back as -1 where Triton leaves it implicit."""
    prefix = [-1] if batched else []
    return [(e["name"], e["data_type"], prefix + [int(d) for d in e["dims"]]) for e in entries]


def test_configs_match_the_onnx_models(repo: Path, configs: dict[str, Any], bundle: Bundle) -> None:
    assert sorted(configs) == sorted(_expected(bundle))
    for name, (_, fmt, _) in _expected(bundle).items():
        config = configs[name]
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        batched = not fmt.startswith("int8")  # their scale and zero point have no batch dimension
        assert (config["name"], config["platform"]) == (name, "onnxruntime_onnx")
        assert config.get("max_batch_size", 0) == (MAX_BATCH if batched else 0), name
        assert _config_tensors(config["input"], batched) == _ort_tensors(session.get_inputs()), name
        assert _config_tensors(config["output"], batched) == _ort_tensors(session.get_outputs()), name
        assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
        if batched:
            assert all(shape[0] == -1 for _, _, shape in _ort_tensors(session.get_inputs())), name
            batcher = config["dynamic_batching"]
            assert batcher["preferred_batch_size"] == [4, 8, 16]
            assert int(batcher["max_queue_delay_microseconds"]) == DELAY_US
        else:
            assert "dynamic_batching" not in config, name
            assert "max_batch_size 0" in (repo / name / "config.pbtxt").read_text(), "the config says why"


def _wire(fmt: str, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    return encode(Codec(fmt), name, x)


def test_copied_models_run_a_batch_like_the_cloud(repo: Path, bundle: Bundle) -> None:
    cloud = TailModel(bundle, threads=1)
    rng = np.random.default_rng(3)
    for name, (split, fmt, _) in _expected(bundle).items():
        spec = bundle.manifest.split_point(split).tensor
        inputs = _wire(fmt, spec.name, rng.standard_normal((BATCH, *spec.sample_shape)).astype(np.float32))
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, inputs)
        want = cloud.infer(split, inputs, fmt)
        assert got.shape == (BATCH, len(bundle.manifest.classes)), name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1), err_msg=name)


def test_names_are_safe_and_other_models_stay(bundle: Bundle, tmp_path: Path) -> None:
    from split.triton import write_repository

    with pytest.raises(ValueError, match="not safe as a directory name"):
        write_repository(bundle, tmp_path, prefix="../evil")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "other" / "1").mkdir(parents=True)
    (tmp_path / "mine_s0_fp32" / "stale").mkdir(parents=True)
    models = write_repository(bundle, tmp_path, prefix="mine")
    assert (tmp_path / "other" / "1").is_dir()
    assert not (tmp_path / "mine_s0_fp32" / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other", *(m.name for m in models)])
