"""The text bundle's tokenizer, read on the edge (and by ``split/`` for training): Hugging Face ``tokenizers``,
torch-free, imported only when a text bundle is loaded (the ``text`` extra).

The tokenizer is data: ``tokenizer.json`` in the bundle (covered by the content hash), a WordPiece vocabulary
trained on the training split. Every sequence starts with ``[CLS]`` (the exits read its hidden state) and is cut
to the bundle's ``max_length``.

Example:
    >>> tok = TextTokenizer.load("bundle/tokenizer.json", max_length=32)       # doctest: +SKIP
    >>> ids, mask = tok.encode(["ls: cannot access"])                          # doctest: +SKIP
    >>> ids.shape, mask.dtype                                                  # doctest: +SKIP
    ((1, 6), dtype('int64'))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPECIAL", "TextTokenizer"]

SPECIAL = ("[PAD]", "[UNK]", "[CLS]")
"""The special tokens; ``[PAD]`` is id 0."""


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "text bundles need Hugging Face 'tokenizers' (torch-free): pip install 'edgesplit[text]'"
        ) from None
    return tokenizers


class TextTokenizer:
    """Texts -> ``(input_ids, attention_mask)``, both int64 ``[N, L]``, right-padded to the longest text."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if not 2 <= max_length <= 4096:
            raise ValueError(f"max_length must be in 2..4096, got {max_length}")
        self.max_length = max_length
        self._tok = tokenizer
        self._tok.enable_truncation(max_length)
        self._tok.no_padding()

    @classmethod
    def load(cls, path: str | Path, max_length: int) -> TextTokenizer:
        """Read a ``tokenizer.json``."""
        return cls(_tokenizers().Tokenizer.from_file(str(path)), max_length)

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int, max_length: int) -> TextTokenizer:
        """A WordPiece tokenizer learnt from ``texts`` (the training split): NFKC, lower case, accents kept."""
        tk = _tokenizers()
        tok = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=64))
        tok.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
        tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tok.decoder = tk.decoders.WordPiece()
        trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
        tok.train_from_iterator(texts, trainer)
        cls_id = tok.token_to_id("[CLS]")
        tok.post_processor = tk.processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", cls_id)])
        return cls(tok, max_length)

    @property
    def vocab_size(self) -> int:
        """How many token ids there are."""
        return int(self._tok.get_vocab_size())

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (truncation and padding are the bundle's, not the file's)."""
        self._tok.save(str(path))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` for ``texts``, padded with id 0 to the longest (mask 0 there)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, got one str: wrap it in a list")
        encodings = self._tok.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in zip(ids, encodings, strict=True):
            row[: len(e.ids)] = e.ids
        return ids, (ids != 0).astype(np.int64)

    def encode_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text, unpadded: ``[1, L]`` ids and a mask of ones (the edge's per-request path)."""
        ids = np.asarray(self._tok.encode(text).ids, dtype=np.int64)[None]
        return ids, np.ones_like(ids)
