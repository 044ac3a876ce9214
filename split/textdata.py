"""Labelled text, offline and real: fortune topics, languages of gettext catalogues, or a user's CSV / JSONL file.

* **Topics** (:func:`load_fortunes`): Debian's ``fortunes`` package, one file of ``%``-separated quotes per topic
  under ``/usr/share/games/fortunes``. :data:`TOPICS` are the seven large files that are topics: ``people``,
  ``definitions``, ``computers``, ``songs-poems``, ``politics``, ``work``, ``science`` (625-1,250 quotes each).
  ``cookie`` (1,133) is left out: it is a grab-bag of unrelated sayings, not a topic.
* **Languages** (:func:`load_languages`): the gettext catalogues (``.mo``) of Debian's essential packages
  (:data:`DOMAINS`: coreutils, grep, sed, tar, findutils, diffutils, dpkg, bash), the same interface strings
  translated by people; one label per language (``pt_BR`` counts as ``pt``, ``zh_TW`` as ``zh``), closely
  related languages kept (es/pt/gl/ca, da/nb/sv, cs/sk, hr/sr/sl, ru/uk/be/bg, id/ms, nl/af). A sample is one
  line of a translation with its ``printf`` directives taken out; lines shared by two languages are dropped.
* **A user's file** (:func:`load_text_file`): ``.csv`` with a header naming ``text`` and ``label``, or ``.jsonl``
  with one ``{"text": ..., "label": ...}`` per line.

Splits are fixed, seeded and stratified (:func:`split_texts`): in each class, after a seeded shuffle, ``test`` and
``cal`` fractions go to the test and calibration splits, the rest to training; no text is in two splits.

Example:
    >>> data = load_languages(per_class=300)                            # doctest: +SKIP
    >>> len(data.classes), len(data.train[0])                           # doctest: +SKIP
    (37, 7770)
"""

from __future__ import annotations

import csv
import json
import re
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DOMAINS",
    "FORTUNES",
    "LOCALE",
    "TOPICS",
    "TextData",
    "load_fortunes",
    "load_languages",
    "load_text_file",
    "read_mo",
    "split_texts",
]

FORTUNES = Path("/usr/share/games/fortunes")
LOCALE = Path("/usr/share/locale")
TOPICS = ("people", "definitions", "computers", "songs-poems", "politics", "work", "science")
DOMAINS = ("coreutils", "grep", "sed", "tar", "findutils", "diffutils", "dpkg", "bash")
_PRINTF = re.compile(r"%[-+ #0-9.*'lhzjtL]*[a-zA-Z%]|\$\{?\w+\}?|[\t]")
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)

Split = tuple[list[str], np.ndarray]


@dataclass(frozen=True)
class TextData:
    """Texts and integer labels per split, and the class names (a label indexes ``classes``)."""

    name: str
    classes: tuple[str, ...]
    train: Split
    cal: Split
    test: Split


def split_texts(
    name: str, by_class: dict[str, list[str]], seed: int = 0, test: float = 0.15, cal: float = 0.15
) -> TextData:
    """Stratified, seeded split of ``{class: texts}`` (classes sorted by name; texts deduplicated in order)."""
    if not (0 < test < 1 and 0 < cal < 1 and test + cal < 1):
        raise ValueError(f"test and cal are fractions with test + cal < 1, got {test}, {cal}")
    if len(by_class) < 2:
        raise ValueError(f"{name}: text classification needs at least 2 classes, got {sorted(by_class)}")
    classes = tuple(sorted(by_class))
    rng = np.random.default_rng(seed)
    parts: list[tuple[list[str], list[int]]] = [([], []), ([], []), ([], [])]
    for label, cls in enumerate(classes):
        texts = list(dict.fromkeys(by_class[cls]))
        if len(texts) < 3:
            raise ValueError(f"{name}: class {cls!r} has {len(texts)} distinct texts; each class needs at least 3")
        order = rng.permutation(len(texts))
        n_test, n_cal = max(1, round(test * len(texts))), max(1, round(cal * len(texts)))
        chunks = (order[n_test + n_cal :], order[n_test : n_test + n_cal], order[:n_test])
        for (xs, ys), chunk in zip(parts, chunks, strict=True):
            xs.extend(texts[i] for i in chunk)
            ys.extend([label] * len(chunk))
    train, cal_split, test_split = ((xs, np.array(ys, dtype=np.int64)) for xs, ys in parts)
    return TextData(name, classes, train, cal_split, test_split)


def _cap(texts: list[str], per_class: int | None, seed: int) -> list[str]:
    if per_class is None or len(texts) <= per_class:
        return texts
    keep = np.sort(np.random.default_rng(seed).permutation(len(texts))[:per_class])
    return [texts[i] for i in keep]


def _drop_shared(by_class: dict[str, list[str]]) -> dict[str, list[str]]:
    """Texts that occur in more than one class are dropped from all (their label is not defined)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for cls, texts in by_class.items():
        for t in texts:
            owners[t].add(cls)
    return {cls: [t for t in dict.fromkeys(texts) if len(owners[t]) == 1] for cls, texts in by_class.items()}


def read_fortune_file(path: Path) -> list[str]:
    """The quotes of one fortune file (separated by lines holding ``%``), whitespace collapsed."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    quotes = (" ".join(q.split()) for q in re.split(r"^%\s*$", raw, flags=re.MULTILINE))
    return [q for q in quotes if q]


def load_fortunes(
    topics: Sequence[str] = TOPICS, root: Path = FORTUNES, per_class: int | None = None, seed: int = 0
) -> TextData:
    """Topic classification over fortune files (see the module docstring); ``per_class`` caps each topic."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"no fortunes at {root}: install Debian's 'fortunes' package (apt-get install fortunes)"
        )
    missing = [t for t in topics if not (root / t).is_file()]
    if missing:
        have = sorted(p.name for p in root.iterdir() if (root / f"{p.name}.dat").is_file())
        raise FileNotFoundError(f"fortune topics {missing} not in {root}; topics there: {have}")
    by_class = _drop_shared({t: read_fortune_file(root / t) for t in topics})
    return split_texts("topics", {t: _cap(q, per_class, seed) for t, q in by_class.items()}, seed)


def read_mo(path: Path) -> dict[str, str]:
    """A gettext ``.mo`` catalogue as ``{msgid: msgstr}`` (first plural form; the header entry left out)."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise ValueError(f"{path}: not a gettext .mo file (magic {magic:#x})")
    n, ids_at, strs_at = struct.unpack(order + "3I", data[8:20])
    catalogue = {}
    for i in range(n):
        id_len, id_off = struct.unpack(order + "2I", data[ids_at + 8 * i : ids_at + 8 * i + 8])
        str_len, str_off = struct.unpack(order + "2I", data[strs_at + 8 * i : strs_at + 8 * i + 8])
        msgid = data[id_off : id_off + id_len].split(b"\0")[0].decode("utf-8", "replace")
        msgstr = data[str_off : str_off + str_len].split(b"\0")[0].decode("utf-8", "replace")
        if msgid:
            catalogue[msgid] = msgstr
    return catalogue


def _lines(catalogue: dict[str, str]) -> Iterable[str]:
    """The translated lines worth a sample: printf directives out, at least 3 letters, not the English copy."""
    for msgid, msgstr in catalogue.items():
        english = set(msgid.splitlines())
        for line in msgstr.splitlines():
            if line in english:
                continue
            text = " ".join(_PRINTF.sub(" ", line).split())
            if len(_LETTERS.findall(text)) >= 3:
                yield text


def load_languages(
    domains: Sequence[str] = DOMAINS,
    root: Path = LOCALE,
    per_class: int | None = None,
    min_texts: int = 100,
    seed: int = 0,
) -> TextData:
    """Language identification over gettext catalogues (see the module docstring); languages with fewer than
    ``min_texts`` distinct lines are left out, ``per_class`` caps each language."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for domain in domains:
        for mo in sorted(root.glob(f"*/LC_MESSAGES/{domain}.mo")):
            lang = mo.parts[-3].split("_")[0].split("@")[0]
            if lang == "en":  # en@quot, en_GB: English with other quotes or spellings, not a translation
                continue
            by_lang[lang].extend(_lines(read_mo(mo)))
    if not by_lang:
        raise FileNotFoundError(
            f"no gettext catalogues of {list(domains)} under {root}/*/LC_MESSAGES: they ship with Debian's"
            " coreutils, grep, sed, ...; reinstall them without a dpkg path-exclude for /usr/share/locale"
        )
    kept = {k: v for k, v in _drop_shared(by_lang).items() if len(v) >= min_texts}
    return split_texts("languages", {k: _cap(v, per_class, seed) for k, v in kept.items()}, seed)


def _rows(path: Path) -> Iterable[tuple[int, object, object]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: the CSV header must name 'text' and 'label', got {reader.fieldnames}")
            for i, row in enumerate(reader, start=2):
                yield i, row["text"], row["label"]
        return
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{i}: each line is an object with 'text' and 'label', got {type(row).__name__}"
                )
            yield i, row.get("text"), row.get("label")


def load_text_file(path: Path, seed: int = 0, test: float = 0.15, cal: float = 0.15) -> TextData:
    """A user's labelled texts, ``.csv`` (header ``text,label``) or ``.jsonl``, split as :func:`split_texts`."""
    if path.suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: text data is a .csv or a .jsonl file, got {path.suffix or 'no suffix'!r}")
    by_class: dict[str, list[str]] = defaultdict(list)
    for where, text, label in _rows(path):
        if not isinstance(text, str) or not text.strip() or label is None or str(label) == "":
            raise ValueError(f"{path}:{where}: needs a non-empty 'text' and a 'label', got {text!r}, {label!r}")
        by_class[str(label)].append(" ".join(text.split()))
    return split_texts(path.stem, dict(by_class), seed, test, cal)
