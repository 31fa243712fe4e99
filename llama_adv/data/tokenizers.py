"""Tokenizers. Every tokenizer reserves ids 0..3 for pad, bos, eos, unk.

- :class:`ByteTokenizer` (the default): UTF-8 bytes shifted past the specials; no training.
- :class:`SentencePieceTokenizer`: unigram or BPE, trained on a dataset's training split
  with ``pad=0, bos=1, eos=2, unk=3`` (see :mod:`llama_adv.data.vocab` for the cache).
- :class:`ExtraIds`: any of them with ids appended past its vocabulary (T5's sentinels,
  ``data.extra_ids``); ``data.tokenizer=spm:RUN`` reuses a run's SentencePiece model
  (:mod:`llama_adv.data.shared_vocab`).
- :class:`HFTokenizer`: a Hugging Face ``tokenizer.json`` for imported checkpoints. Its
  bos/eos/unk ids are the checkpoint's own; padding always uses id 0, which the models
  treat as padding (true of LLaMA's ``<unk>`` and T5's ``<pad>``).

All expose ``vocab_size``, ``pad_id``/``bos_id``/``eos_id``/``unk_id``, ``encode(text)``,
``encode_batch(texts) -> list[np.ndarray]`` and ``decode(ids)`` (specials dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llama_adv.errors import UserError
from llama_adv.special_tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

PAD, BOS, EOS, UNK = PAD_ID, BOS_ID, EOS_ID, UNK_ID  # llama_adv.special_tokens
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class _Specials:
    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(self.encode(t), np.int32) for t in texts]


class WordTokenizer(_Specials):
    """Whitespace tokenizer over a fixed word list (the synthetic tasks' vocabulary)."""

    def __init__(self, words: list[str]):
        self.words = list(SPECIALS) + list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, UNK) for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in ids if i not in (PAD, BOS, EOS))


class ByteTokenizer(_Specials):
    """UTF-8 bytes shifted past the special ids: vocabulary of 260, no training."""

    vocab_size = 256 + len(SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [b + len(SPECIALS) for b in text.encode("utf-8")]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        # numpy view of the bytes: ~50x faster than a Python loop on long reviews.
        return [
            np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + len(SPECIALS)
            for t in texts
        ]

    def decode(self, ids) -> str:
        data = bytes(int(i) - len(SPECIALS) for i in ids if i >= len(SPECIALS))
        return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer(_Specials):
    """A trained SentencePiece model whose first four ids are pad, bos, eos, unk."""

    def __init__(self, model: bytes | str | Path):
        import sentencepiece as spm

        if isinstance(model, (str, Path)):
            model = Path(model).read_bytes()
        self.model_proto = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        specials = tuple(self.sp.id_to_piece(i) for i in range(4))
        if (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()) != (
            PAD,
            BOS,
            EOS,
            UNK,
        ):
            raise UserError(
                f"SentencePiece model has specials {specials} at other ids than "
                "pad=0, bos=1, eos=2, unk=3; retrain it with those ids."
            )

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, np.int32) for ids in self.sp.encode(texts, num_threads=2)]

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) > UNK])


class ExtraIds:
    """``base`` with ``extra_ids`` ids appended past its vocabulary (T5's sentinels).

    Sentinel ``k`` (0-based) is id ``vocab_size - 1 - k``, counting down from the last id
    as T5's ``<extra_id_k>``; the text never encodes to them, ``decode`` writes them as
    ``<extra_id_k>``.
    """

    def __init__(self, base, extra_ids: int):
        self.base, self.extra_ids = base, int(extra_ids)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (
            base.pad_id, base.bos_id, base.eos_id, base.unk_id
        )  # fmt: skip

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + self.extra_ids

    def sentinel(self, k: int) -> int:
        return self.vocab_size - 1 - k

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return self.base.encode_batch(texts)

    def decode(self, ids) -> str:
        parts, run = [], []
        for i in (int(i) for i in ids):
            if i >= self.base.vocab_size:
                parts += [self.base.decode(run), f"<extra_id_{self.vocab_size - 1 - i}>"]
                run = []
            else:
                run.append(i)
        return "".join(parts + [self.base.decode(run)])


def train_sentencepiece(
    texts: list[str], vocab_size: int, model_type: str, max_sentences: int = 300_000
) -> bytes:
    """Trains a SentencePiece model (``unigram`` or ``bpe``) on ``texts``; returns it."""
    import io

    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
        raise UserError(f"data.spm_model_type must be unigram or bpe, got {model_type!r}.")
    if vocab_size <= len(SPECIALS):
        raise UserError(f"data.vocab_size={vocab_size} must exceed the {len(SPECIALS)} specials.")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(t.replace("\n", " ") for t in texts if t.strip()),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        unk_id=UNK,
        pad_piece=SPECIALS[0],
        bos_piece=SPECIALS[1],
        eos_piece=SPECIALS[2],
        unk_piece=SPECIALS[3],
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        max_sentence_length=1 << 16,  # whole IMDB reviews, not just short sentences
        hard_vocab_limit=False,  # a small corpus yields a smaller vocabulary, not an error
        num_threads=2,
        minloglevel=2,
    )
    return out.getvalue()


class HFTokenizer(_Specials):
    """A Hugging Face ``tokenizer.json`` (no special tokens added by ``encode``)."""

    BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "[CLS]")
    EOS_NAMES = ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "[SEP]")
    UNK_NAMES = ("<unk>", "[UNK]")

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.exists():
            raise UserError(
                f"Missing tokenizer file {path}; data.tokenizer=hf:PATH needs the "
                "tokenizer.json of the checkpoint (from its Hugging Face model page)."
            )
        self.path = path  # its folder may hold tokenizer_config.json (a chat template)
        self.tok = Tokenizer.from_file(str(path))
        self.bos_id = self._find(self.BOS_NAMES, BOS)
        self.eos_id = self._find(self.EOS_NAMES, EOS)
        self.unk_id = self._find(self.UNK_NAMES, UNK)

    def _find(self, names: tuple[str, ...], default: int) -> int:
        for name in names:
            if (i := self.tok.token_to_id(name)) is not None:
                return i
        return default

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, np.int32) for e in encs]

    def decode(self, ids) -> str:
        drop = {PAD, self.bos_id, self.eos_id}
        return self.tok.decode([int(i) for i in ids if int(i) not in drop])


def pad_to(ids: list[int], length: int) -> np.ndarray:
    """Truncates or right-pads ``ids`` to ``length`` (int32)."""
    out = np.full(length, PAD, np.int32)
    ids = ids[:length]
    out[: len(ids)] = ids
    return out
