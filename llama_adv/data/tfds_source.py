"""Real datasets through tensorflow-datasets: prepare, tokenize, hold in memory.

``load_tfds_dataset(config.data)`` prepares the dataset once into the cache (a project
builder for user-placed files, or any ``tfds.load`` registry name), trains or loads the
tokenizer, and returns a :class:`Dataset` whose splits are read and encoded on first use
(``Split`` arrays: see :mod:`llama_adv.data.encode`). Split names follow TFDS's syntax, so
``"train+unsup"`` and ``"train[:1000]"`` work; example ids index the resulting split.

The task comes from the features: the chat builder's ``prompt``/``response``/``away``/
``harmful`` -> chat (:mod:`llama_adv.data.chat`); ``data.target_field`` set -> seq2seq; a
ClassLabel ``data.label_field`` -> classification; otherwise language modelling over the
text. ``data.objective`` overrides that for pre-training on the text alone: ``lm`` (packed
next-token prediction) or ``span_corruption`` (T5's, seq2seq batches:
:mod:`llama_adv.data.span_corruption`). ``data.tokenizer=spm:RUN`` reuses another run's
SentencePiece model (:mod:`llama_adv.data.shared_vocab`).

Unlabelled examples (IMDB's ``unsup`` split, for semi-supervised VAT) keep the label -1
used by TFDS and ``weight`` 1.0: ``weight`` marks real examples (0 only on evaluation
padding), and a supervised loss must ignore rows with ``label < 0`` (``label >= 0`` is the
"labelled" mask). ``data.train_split="train+unsup"`` trains on both.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_collections as mlc
import numpy as np

from llama_adv.data import chat, encode, shared_vocab, span_corruption
from llama_adv.data.base import Dataset, Split
from llama_adv.data.builders import SOURCES, builder_config
from llama_adv.data.paths import cache_root, source_dir
from llama_adv.data.tokenizers import (
    ByteTokenizer,
    ExtraIds,
    HFTokenizer,
    SentencePieceTokenizer,
    train_sentencepiece,
)
from llama_adv.errors import UserError

TEXT_CANDIDATES = ("text", "sentence", "content", "document", "description")
CHAT_FEATURES = {"prompt", "response", "away", "harmful"}  # builders/chat.py


def _tfds():
    # tensorflow_datasets imports TensorFlow (seconds): only when a real dataset is used.
    # Its absl warnings ("Using custom data configuration ...") and tqdm
    # bars would bury our own one-line messages on stderr; "data: preparing" says enough.
    for name in ("absl", "urllib3", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return tfds


def _network_reachable(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """Whether a download could start at all (TFDS would otherwise retry for minutes)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def prepare_builder(config: mlc.ConfigDict):
    """Returns a prepared TFDS builder for ``config.name`` (preparing it if needed)."""
    tfds = _tfds()
    tfds_dir = cache_root(config) / "tfds"
    source = SOURCES.get(config.name)
    manual: Path | None = None
    if source is not None and source.builder is not None:
        manual = source_dir(config, source.folder, source.how)
        builder = source.builder(
            config=builder_config(config.name, config, manual), data_dir=str(tfds_dir)
        )
    else:
        name = source.tfds_name if source else config.name
        try:
            builder = tfds.builder(name, data_dir=str(tfds_dir))
        except Exception as e:  # DatasetNotFoundError and friends
            # TFDS's own message lists every registered dataset: keep only its first line.
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            close = difflib.get_close_matches(config.name, SOURCES, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(
                f"Unknown dataset {config.name!r}.{hint} Valid datasets: "
                f"{', '.join(sorted(SOURCES))}, the synthetic_* tasks, or a "
                f"tensorflow-datasets name (TFDS said: {reason})."
            ) from None
        if source is not None:
            manual = source_dir(config, source.folder, source.how)
        elif config.manual_dir:
            manual = Path(config.manual_dir).expanduser()
    if not builder.is_prepared():
        if manual is None and not _network_reachable():
            raise UserError(
                f"Dataset {config.name!r} is not prepared in {tfds_dir} and needs a download, "
                "but the network is unreachable. Prepare it on a machine with network access "
                "and copy the folder into data.cache_dir, or place its files in "
                "data.manual_dir."
            )
        download = tfds.download.DownloadConfig(manual_dir=str(manual) if manual else None)
        print(f"data: preparing {config.name} into {tfds_dir} (once)")
        try:
            builder.download_and_prepare(download_config=download)
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"Could not prepare dataset {config.name!r} with tensorflow-datasets: "
                f"{type(e).__name__}: {e}. Offline, place its files in data.manual_dir "
                f"(now {manual or 'unset'})."
            ) from None
    skipped = builder.info.metadata.get("skipped_rows", {}) if builder.info.metadata else {}
    for path, count in (skipped or {}).items():
        print(f"data: skipped {count} malformed rows of {path} (data.skip_malformed)")
    return builder


def _default_text_field(features) -> str:
    for name in TEXT_CANDIDATES:
        if name in features:
            return name
    texts = [k for k, f in features.items() if type(f).__name__ == "Text"]
    if not texts:
        raise UserError(f"No text feature found; set data.text_field (features: {list(features)}).")
    return texts[0]


def _dataset_key(builder) -> str:
    config = builder.builder_config
    return f"{builder.name}/{config.name if config else ''}/{builder.version}"


def _check_field(features, field: str, what: str) -> None:
    if field not in features:
        raise UserError(f"data.{what}={field!r} is not a feature; features: {list(features)}.")


class LazySplits(Mapping):
    """Split name -> Split, read from TFDS and encoded on first access."""

    def __init__(self, names: list[str], load):
        self._names, self._load, self._cache = names, load, {}

    def __contains__(self, name) -> bool:
        bases = [re.sub(r"\[.*\]$", "", p.strip()) for p in str(name).split("+")]
        return all(b in self._names for b in bases)

    def __getitem__(self, name: str) -> Split:
        if name not in self:
            raise KeyError(name)
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_texts(builder, split: str, fields: list[str]) -> dict[str, np.ndarray]:
    """All values of ``fields`` in ``split``, in the prepared (stable) order."""
    tfds = _tfds()
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    return {f: data[f] for f in fields}


def _decode(values: np.ndarray, where: str) -> list[str]:
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: a text is not valid UTF-8 ({e.reason}).") from None


def build_tokenizer(config: mlc.ConfigDict, builder, fields: list[str]):
    """The configured tokenizer; SentencePiece is trained once and cached by a key of the
    dataset, fields, split and settings (``<cache>/tokenizers/<key>.model``)."""
    tokenizer, extra_ids = _base_tokenizer(config, builder, fields)
    return ExtraIds(tokenizer, extra_ids) if extra_ids else tokenizer


def _base_tokenizer(config: mlc.ConfigDict, builder, fields: list[str]):
    """``(tokenizer, extra ids)``; the extra ids are ``data.extra_ids``, or for
    ``spm:RUN`` those of that run."""
    kind, extra_ids = config.tokenizer, int(config.get("extra_ids", 0))
    if kind == "byte":
        return ByteTokenizer(), extra_ids
    if kind.startswith("hf:"):
        return HFTokenizer(kind[3:]), extra_ids
    if kind.startswith(shared_vocab.PREFIX):
        return shared_vocab.load_shared(kind[len(shared_vocab.PREFIX) :], extra_ids)
    if kind != "sentencepiece":
        raise UserError(
            f"data.tokenizer={kind!r} is not byte, sentencepiece, spm:RUN_OR_MODEL_FILE or "
            "hf:/path/tokenizer.json."
        )
    split = config.tokenizer_split or config.train_split
    settings = [_dataset_key(builder), fields, split, config.vocab_size, config.spm_model_type]
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    path = cache_root(config) / "tokenizers" / f"{config.name.replace('/', '_')}-{key}.model"
    if path.exists():
        return SentencePieceTokenizer(path), extra_ids
    texts = read_texts(builder, split, fields)
    corpus = [t for f in fields for t in _decode(texts[f], f"{config.name}[{split}]")]
    print(
        f"data: training a {config.vocab_size}-piece {config.spm_model_type} SentencePiece "
        f"model on {len(corpus)} texts of {split!r}"
    )
    model = train_sentencepiece(corpus, config.vocab_size, config.spm_model_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a model
    return SentencePieceTokenizer(model), extra_ids


def _buckets(config: mlc.ConfigDict) -> tuple[int, ...]:
    buckets = tuple(sorted({int(b) for b in config.length_buckets}))
    if any(b <= 0 for b in buckets):
        raise UserError(f"data.length_buckets must be positive, got {config.length_buckets}.")
    return buckets


def _load_chat(config: mlc.ConfigDict, builder) -> Dataset:
    """A chat dataset (task ``chat``): splits encoded by :func:`chat.chat_split`."""
    tokenizer = build_tokenizer(config, builder, ["prompt", "response"])
    buckets = _buckets(config)

    def load(split: str) -> Split:
        where = f"{config.name}[{split}]"
        raw = read_texts(builder, split, sorted(CHAT_FEATURES))
        prompts = _decode(raw["prompt"], where)
        if not prompts:
            raise UserError(f"Split {where} is empty.")
        return chat.chat_split(
            tokenizer,
            prompts,
            _decode(raw["response"], where),
            _decode(raw["away"], where),
            raw["harmful"].astype(np.int32),
            config.max_length,
            config.chat_refusal,
            buckets,
        )

    splits = LazySplits([str(s) for s in builder.info.splits], load)
    return Dataset(config.name, "chat", splits, tokenizer)


def load_tfds_dataset(config: mlc.ConfigDict) -> Dataset:
    """A real dataset for the ``data`` config section (see the module docstring)."""
    builder = prepare_builder(config)
    features = builder.info.features
    if set(features) >= CHAT_FEATURES:
        return _load_chat(config, builder)
    source = SOURCES.get(config.name)
    text_field = config.text_field or (source.text_field if source else "")
    text_field = text_field or _default_text_field(features)
    target_field = config.target_field or (source.target_field if source else "")
    label_field = config.label_field or "label"
    _check_field(features, text_field, "text_field")
    if config.objective:  # pre-training on the text alone, whatever else the features hold
        target_field = ""
        task = "lm" if config.objective == "lm" else "seq2seq"
    elif target_field:
        _check_field(features, target_field, "target_field")
        task = "seq2seq"
    elif label_field in features and type(features[label_field]).__name__ == "ClassLabel":
        task = "classification"
    elif config.label_field:
        raise UserError(f"data.label_field={label_field!r} is not a ClassLabel feature.")
    else:
        task = "lm"
    fields = [text_field] + ([target_field] if target_field else [])
    tokenizer = build_tokenizer(config, builder, fields)
    num_classes = features[label_field].num_classes if task == "classification" else 0
    class_names = tuple(features[label_field].names) if task == "classification" else ()
    buckets = _buckets(config)

    def load(split: str) -> Split:
        where = f"{config.name}[{split}]"
        raw = read_texts(builder, split, fields + ([label_field] if num_classes else []))
        texts = _decode(raw[text_field], where)
        if not texts:
            raise UserError(f"Split {where} is empty.")
        ids = tokenizer.encode_batch(texts)
        if task == "classification":
            labels = raw[label_field].astype(np.int64)
            bad = (labels < -1) | (labels >= num_classes)
            if bad.any():
                raise UserError(
                    f"{where}: label {int(labels[bad][0])} of example {int(np.argmax(bad))} "
                    f"is outside the class set 0..{num_classes - 1} (-1 = unlabelled)."
                )
            arrays = encode.classification(ids, labels, config.max_length, tokenizer.eos_id)
            return Split(arrays, texts, length_buckets=buckets)
        if config.objective == "span_corruption":
            arrays = span_corruption.span_corruption_arrays(
                ids,
                inputs_length=config.max_length,
                targets_length=config.target_max_length,
                density=config.noise_density,
                mean_span_length=config.mean_noise_span_length,
                vocab_size=tokenizer.vocab_size,
                extra_ids=int(getattr(tokenizer, "extra_ids", 0)),
                bos=tokenizer.bos_id,
                eos=tokenizer.eos_id,
                seed=config.seed,
            )
            return Split(arrays, length_buckets=buckets)
        if task == "seq2seq":
            refs = _decode(raw[target_field], where)
            arrays = encode.seq2seq(
                ids,
                tokenizer.encode_batch(refs),
                config.max_length,
                config.target_max_length,
                tokenizer.bos_id,
                tokenizer.eos_id,
            )
            return Split(arrays, texts, refs, length_buckets=buckets)
        eos = tokenizer.eos_id if config.pack_eos else None
        return Split(encode.pack_lm(ids, config.max_length, eos))  # windows are full: no buckets

    splits = LazySplits([str(s) for s in builder.info.splits], load)
    return Dataset(config.name, task, splits, tokenizer, num_classes, class_names)
