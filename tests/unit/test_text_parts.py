"""Text bundles' parts without a model: data loaders and splits, the .mo reader, the tokenizer, patience,
patience calibration, and the cloud batcher's padding."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from cloud.batcher import _stack
from edge.patience import PatienceCounter, patience_layers
from protos.texttok import TextTokenizer
from split.textcal import calibrate_patience, patience_hybrid
from split.textdata import load_fortunes, load_text_file, read_mo, split_texts


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    by_class = {c: [f"{c} text {i}" for i in range(40)] for c in ("a", "b", "c")}
    data = split_texts("x", by_class, seed=3)
    parts = [set(data.train[0]), set(data.cal[0]), set(data.test[0])]
    assert sum(map(len, parts)) == 120 and len(set.union(*parts)) == 120
    assert np.bincount(data.test[1]).tolist() == [6, 6, 6]
    assert split_texts("x", by_class, seed=3).test[0] == data.test[0] != split_texts("x", by_class, seed=4).test[0]
    with pytest.raises(ValueError, match="at least 2 classes"):
        split_texts("x", {"a": by_class["a"]})


def test_fortunes_drop_quotes_shared_by_topics(tmp_path: Path) -> None:
    (tmp_path / "alpha").write_text("".join(f"alpha quote {i}\n%\n" for i in range(10)) + "shared\n%\n")
    (tmp_path / "beta").write_text("".join(f"beta  quote\n{i}\n%\n" for i in range(10)) + "shared\n")
    data = load_fortunes(("alpha", "beta"), root=tmp_path)
    texts = data.train[0] + data.cal[0] + data.test[0]
    assert "shared" not in texts and "beta quote 3" in texts and len(texts) == 20
    with pytest.raises(FileNotFoundError, match="gamma"):
        load_fortunes(("alpha", "gamma"), root=tmp_path)


def _write_mo(path: Path, pairs: dict[str, str]) -> None:
    keys = sorted(pairs)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(pairs[k].encode() + b"\0" for k in keys)
    n, start = len(keys), 28 + 16 * len(keys)
    table_ids, table_strs, offset = b"", b"", start
    for k in keys:
        table_ids += struct.pack("<2I", len(k.encode()), offset)
        offset += len(k.encode()) + 1
    for k in keys:
        table_strs += struct.pack("<2I", len(pairs[k].encode()), offset)
        offset += len(pairs[k].encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.write_bytes(header + table_ids + table_strs + ids + strs)


def test_read_mo(tmp_path: Path) -> None:
    _write_mo(tmp_path / "x.mo", {"cannot open %s": "kann %s nicht öffnen", "yes": "ja"})
    assert read_mo(tmp_path / "x.mo") == {"cannot open %s": "kann %s nicht öffnen", "yes": "ja"}
    (tmp_path / "bad.mo").write_bytes(b"\0" * 32)
    with pytest.raises(ValueError, match="not a gettext"):
        read_mo(tmp_path / "bad.mo")


def test_user_text_files(tmp_path: Path) -> None:
    rows = [(f"text number {i}", "pos" if i % 2 else "neg") for i in range(20)]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    (tmp_path / "d.jsonl").write_text("".join(f'{{"text": "{t}", "label": "{label}"}}\n' for t, label in rows))
    for name in ("d.csv", "d.jsonl"):
        data = load_text_file(tmp_path / name)
        assert data.classes == ("neg", "pos") and len(data.train[0]) + len(data.cal[0]) + len(data.test[0]) == 20
    (tmp_path / "bad.csv").write_text("sentence,label\nx,y\n")
    with pytest.raises(ValueError, match="'text' and 'label'"):
        load_text_file(tmp_path / "bad.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "", "label": "a"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: needs a non-empty 'text'"):
        load_text_file(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=r"\.csv or a \.jsonl"):
        load_text_file(tmp_path / "d.txt")


def test_tokenizer_pads_and_masks(tmp_path: Path) -> None:
    tok = TextTokenizer.train(["the cat sat on the mat", "a dog", "das ist gut"] * 5, 60, max_length=5)
    ids, mask = tok.encode(["the cat sat on the mat again", "a"])
    assert ids.shape == (2, 5) and ids.dtype == mask.dtype == np.int64
    assert mask.tolist()[1][:2] == [1, 1] and mask[1, 2:].sum() == 0 and mask[0].all()
    tok.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.load(tmp_path / "tokenizer.json", max_length=5)
    ids1, mask1 = again.encode_one("a dog")
    assert ids1.tolist() == tok.encode(["a dog"])[0].tolist() and mask1.all()
    assert ids1[0, 0] == 2  # [CLS] first: the exits read its hidden state
    with pytest.raises(TypeError, match="sequence of texts"):
        tok.encode("one text")


def test_patience_counter_agrees_with_the_batch_form() -> None:
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 2, (6, 200))
    for k in (1, 2, 3):
        layers = patience_layers(preds, k)
        for i in range(200):
            counter = PatienceCounter(k)
            stop = next((j for j in range(5) if counter.step(int(preds[j, i]))), 5)
            assert layers[i] == stop
    with pytest.raises(ValueError, match="patience"):
        PatienceCounter(0)


def test_patience_calibration_takes_the_smallest_k_within_budget() -> None:
    labels = np.zeros(100, dtype=np.int64)
    probs = np.zeros((4, 100, 2), np.float32)
    probs[..., 0] = 1.0
    probs[0, :30] = probs[1, :30] = [0.0, 1.0]  # 30 samples wrong in the first two layers, then right
    k, summary = calibrate_patience(labels, probs, budget=0.01)
    assert k == 2 and summary["accuracy"] == 1.0  # K = 1 would answer 30 wrongly at layer 1
    assert (patience_hybrid(probs, 2).layer[30:] == 2).all()


def test_stack_pads_to_the_longest() -> None:
    a, b = np.ones((1, 2, 3), np.float32), np.full((2, 4, 3), 2, np.float32)
    out = _stack([a, b])
    assert out.shape == (3, 4, 3) and out[0, 2:].sum() == 0 and out[0, :2].sum() == 6 and (out[1:] == 2).all()
    assert _stack([a, a]).shape == (2, 2, 3)
