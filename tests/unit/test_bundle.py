"""``protos.bundle``: loading and verifying a real exported bundle, and every way a bundle can be wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from protos.bundle import FORMAT_VERSION, MANIFEST, Bundle, BundleError, Manifest, content_hash


@pytest.fixture()
def copy(bundle, tmp_path: Path) -> Path:
    """A private copy of the session's bundle that a test may damage."""
    return Path(shutil.copytree(bundle.root, tmp_path / "bundle"))


def _edit_manifest(root: Path, edit: Any) -> None:
    path = root / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_load_checks_files_and_hash(bundle) -> None:
    loaded = Bundle.load(bundle.root)
    manifest = loaded.manifest
    assert manifest == bundle.manifest
    files = manifest.artifact_files()
    assert files == tuple(sorted(files)) and len(set(files)) == len(files)
    expected = {s.file for s in manifest.segments} | {e.file for e in manifest.exits}
    expected |= {f for sp in manifest.split_points for f in sp.tails.values()}
    assert set(files) == expected
    assert all(f.endswith(".onnx") and loaded.file(f).is_file() for f in files)
    assert manifest.content_hash.startswith("sha256:") and len(manifest.content_hash) == len("sha256:") + 64
    assert content_hash(loaded.root, files) == manifest.content_hash
    assert manifest.format_version == FORMAT_VERSION


def test_split_points_are_consistent(bundle) -> None:
    manifest = bundle.manifest
    n = len(manifest.segments)
    assert manifest.split_indices == tuple(range(n + 1))
    assert manifest.split_point(0).tensor == manifest.input
    assert manifest.split_point(n).tensor == manifest.output and manifest.split_point(n).tail is None
    for seg in manifest.segments:
        assert manifest.split_point(seg.index).tensor == seg.input


def test_tampered_artifact_is_refused(copy: Path, bundle) -> None:
    victim = copy / bundle.manifest.split_point(1).tail
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="content hash") as info:
        Bundle.load(copy)
    assert bundle.manifest.content_hash in str(info.value)
    Bundle.load(copy, verify=False)  # the manifest itself is still fine


def test_missing_file_is_listed(copy: Path, bundle) -> None:
    missing = bundle.manifest.exits[0].file
    (copy / missing).unlink()
    with pytest.raises(BundleError, match="missing files") as info:
        Bundle.load(copy)
    assert repr(missing) in str(info.value)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=f"{MANIFEST} not found"):
        Bundle.load(tmp_path)


def test_malformed_json(copy: Path) -> None:
    (copy / MANIFEST).write_text('{"model": ')
    with pytest.raises(BundleError, match="not valid JSON") as info:
        Bundle.load(copy)
    assert MANIFEST in str(info.value)


@pytest.mark.parametrize("key", ["model", "segments", "split_points", "default_split"])
def test_missing_key_is_named(copy: Path, key: str) -> None:
    _edit_manifest(copy, lambda data: data.pop(key))
    with pytest.raises(BundleError, match="malformed manifest") as info:
        Bundle.load(copy)
    assert repr(key) in str(info.value)


def test_missing_nested_key_is_named(copy: Path) -> None:
    _edit_manifest(copy, lambda data: data["segments"][0]["input"].pop("shape"))
    with pytest.raises(BundleError, match=r"malformed manifest.*'shape'"):
        Bundle.load(copy)


def test_wrong_format_version(copy: Path) -> None:
    _edit_manifest(copy, lambda data: data.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match=f"format {FORMAT_VERSION + 1} is not supported.*{FORMAT_VERSION}"):
        Bundle.load(copy)


def test_unknown_criterion(copy: Path, bundle) -> None:
    _edit_manifest(copy, lambda data: data["exits"][0].update(criterion="vibes"))
    with pytest.raises(BundleError, match="criterion 'vibes'") as info:
        Bundle.load(copy)
    message = str(info.value)
    assert repr(bundle.manifest.exits[0].name) in message
    assert "max_softmax" in message and "entropy" in message


def test_bad_default_split_lists_valid_ones(copy: Path, bundle) -> None:
    _edit_manifest(copy, lambda data: data.update(default_split=99))
    with pytest.raises(BundleError, match=r"unknown split point 99") as info:
        Bundle.load(copy)
    assert str(list(bundle.manifest.split_indices)) in str(info.value)


def test_unknown_split_point_lists_valid_ones(bundle) -> None:
    manifest = bundle.manifest
    with pytest.raises(BundleError, match="unknown split point 99") as info:
        manifest.split_point(99)
    assert str(list(manifest.split_indices)) in str(info.value)


def test_unknown_exit_lists_valid_ones(bundle) -> None:
    manifest = bundle.manifest
    assert manifest.exit(manifest.exits[0].name) == manifest.exits[0]
    with pytest.raises(BundleError, match="unknown exit 'nope'") as info:
        manifest.exit("nope")
    assert str([e.name for e in manifest.exits]) in str(info.value)


@pytest.mark.parametrize("rel", ["../../etc/passwd", "/etc/passwd", "segments/../../outside.onnx"])
def test_paths_leaving_the_bundle_are_refused(bundle, rel: str) -> None:
    with pytest.raises(BundleError, match="leaves the bundle"):
        bundle.file(rel)


def test_symlink_out_of_the_bundle_is_refused(copy: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (copy / "link").symlink_to(tmp_path / "secret")
    loaded = Bundle.load(copy)
    with pytest.raises(BundleError, match="leaves the bundle"):
        loaded.file("link")


def test_manifest_json_round_trip(bundle) -> None:
    manifest = bundle.manifest
    again = Manifest.from_dict(json.loads(manifest.to_json()))
    assert again == manifest
    assert again.to_json() == manifest.to_json()


def test_with_thresholds_changes_only_the_named_exit(bundle) -> None:
    manifest = bundle.manifest
    first, *rest = manifest.exits
    changed = manifest.with_thresholds({first.name: 0.5}, {first.name: {"exited": 1}})
    assert changed.exit(first.name).threshold == 0.5
    assert dict(changed.exit(first.name).calibration) == {"exited": 1}
    assert changed.exits[1:] == tuple(rest)
    assert manifest.exit(first.name) == first  # the original is untouched


def test_edge_precision_defaults_to_fp32_and_is_checked(copy: Path, bundle) -> None:
    assert bundle.manifest.edge_precision == "fp32"
    _edit_manifest(copy, lambda data: data.pop("edge_precision"))  # a manifest from before the option
    assert Bundle.load(copy).manifest.edge_precision == "fp32"
    _edit_manifest(copy, lambda data: data.update(edge_precision="int4"))
    with pytest.raises(BundleError, match=r"edge precision 'int4' is not one of.*fp32.*int8"):
        Bundle.load(copy)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"datatype": "FP32", "scale": 0.1, "zero_point": 0}, "a quantized boundary is UINT8 with both"),
        ({"datatype": "UINT8", "scale": 0.1}, "a quantized boundary is UINT8 with both"),
        ({"datatype": "UINT8", "scale": -0.1, "zero_point": 0}, "scale must be positive and finite"),
        ({"datatype": "UINT8", "scale": 0.1, "zero_point": 300}, r"zero point in 0\.\.255"),
    ],
)
def test_a_quantized_boundary_must_say_how(copy: Path, fields: dict[str, Any], message: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        for spec in (data["segments"][0]["output"], data["segments"][1]["input"]):
            spec.update(fields)

    _edit_manifest(copy, edit)
    with pytest.raises(BundleError, match=message):
        Bundle.load(copy, verify=False)


def test_a_quantized_boundary_must_match_on_both_sides(copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["segments"][0]["output"].update(datatype="UINT8", scale=0.1, zero_point=7)
        data["segments"][1]["input"].update(datatype="UINT8", scale=0.1, zero_point=8)

    _edit_manifest(copy, edit)
    with pytest.raises(BundleError, match=r"segment 1 input .* != previous output"):
        Bundle.load(copy, verify=False)
