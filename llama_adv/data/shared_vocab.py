"""One vocabulary for pre-training and fine-tuning: a run's tokenizer, saved and reused.

A run whose tokenizer is SentencePiece writes it to ``RUN/tokenizer.model``. Another run
tokenizes with exactly that model by ``data.tokenizer = "spm:RUN"`` (a run workdir) or
``"spm:PATH.model"`` (any model file with the project's specials). Fine-tuning from a
pre-trained run (``train.init_from``) checks that the two runs' tokenizers are the same:
with the same vocabulary *size* but another vocabulary, the copied embedding rows would
silently mean other tokens.

A run's tokenizer is identified by :func:`fingerprint`: ``byte``, or ``spm:<sha256 of the
model file>+<extra ids>`` (the T5 sentinel ids appended past the pieces, ``data.extra_ids``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llama_adv.data.tokenizers import ByteTokenizer, SentencePieceTokenizer
from llama_adv.errors import UserError

TOKENIZER_FILE = "tokenizer.model"
PREFIX = "spm:"


def _run_data_config(run: Path) -> dict:
    try:
        return json.loads((run / "config.json").read_text()).get("data", {})
    except (OSError, ValueError):
        return {}


def resolve_model(spec: str) -> tuple[Path, int | None]:
    """The model file ``spm:SPEC`` names and, for a run workdir, that run's extra ids.

    Raises:
      UserError: neither a ``.model`` file nor a run workdir holding ``tokenizer.model``.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path, None
    if (path / TOKENIZER_FILE).is_file():
        return path / TOKENIZER_FILE, int(_run_data_config(path).get("extra_ids", 0))
    if path.is_dir():
        raise UserError(
            f"data.tokenizer=spm:{spec}: {path} holds no {TOKENIZER_FILE}; a run writes it "
            "when it starts with data.tokenizer=sentencepiece (or spm:...). Runs trained "
            "before it did cannot be shared this way."
        )
    raise UserError(
        f"data.tokenizer=spm:{spec}: {path} does not exist; give a run workdir (holding "
        f"{TOKENIZER_FILE}) or a SentencePiece .model file."
    )


def load_shared(spec: str, extra_ids: int) -> tuple[SentencePieceTokenizer, int]:
    """``(tokenizer, extra ids)`` of ``data.tokenizer = "spm:SPEC"``.

    A run workdir brings its own ``data.extra_ids``; ``extra_ids`` (the config's) must then
    be 0 or equal to it.
    """
    path, run_extra = resolve_model(spec)
    if run_extra is not None:
        if extra_ids and extra_ids != run_extra:
            raise UserError(
                f"data.extra_ids={extra_ids} but the run {spec} has {run_extra} extra ids; "
                "leave data.extra_ids at 0 to take the run's."
            )
        extra_ids = run_extra
    try:
        return SentencePieceTokenizer(path), extra_ids
    except UserError:
        raise
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad file
        raise UserError(
            f"data.tokenizer=spm:{spec}: {path} is not a SentencePiece model ({e})."
        ) from None


def fingerprint(tokenizer, extra_ids: int = 0) -> str:
    """``byte``, ``spm:<sha256[:16]>+<extra ids>``, or ``""`` for tokenizers not tracked."""
    base = getattr(tokenizer, "base", tokenizer)  # an ExtraIds wrapper
    extra_ids = getattr(tokenizer, "extra_ids", extra_ids)
    if isinstance(base, ByteTokenizer):
        return "byte"
    if isinstance(base, SentencePieceTokenizer):
        digest = hashlib.sha256(base.model_proto).hexdigest()[:16]
        return f"spm:{digest}+{extra_ids}"
    return ""


def save_tokenizer(workdir: Path, tokenizer) -> None:
    """Writes a SentencePiece tokenizer to ``workdir/tokenizer.model`` (atomic); others
    are not written (bytes need no file, imported ones have their own)."""
    base = getattr(tokenizer, "base", tokenizer)
    if not isinstance(base, SentencePieceTokenizer):
        return
    path = workdir / TOKENIZER_FILE
    if path.is_file() and path.read_bytes() == base.model_proto:
        return
    tmp = path.with_name(TOKENIZER_FILE + ".tmp")
    tmp.write_bytes(base.model_proto)
    tmp.replace(path)


def check_resumed_tokenizer(workdir: Path, tokenizer) -> None:
    """Raises UserError when the run in ``workdir`` saved another SentencePiece model than
    ``tokenizer`` (trained again from changed data or settings): its checkpoints index
    another vocabulary, so resuming would train on tokens its embedding does not mean."""
    theirs, ours = source_fingerprint(workdir), fingerprint(tokenizer)
    if theirs is None or not ours or theirs == ours:
        return
    raise UserError(
        f"{workdir} was trained with the SentencePiece model in {workdir / TOKENIZER_FILE}, "
        "and this run's tokenizer is another (the prepared data or the SentencePiece "
        "training changed since). Pass --overwrite to start that run again, or train into "
        f"a new --workdir from it with data.tokenizer=spm:{workdir} and "
        f"train.init_from={workdir}."
    )


def source_fingerprint(run: Path) -> str | None:
    """The tokenizer fingerprint of the run in ``run``; None when it cannot be known
    (no config, a SentencePiece run from before runs saved their tokenizer, hf:)."""
    data = _run_data_config(run)
    kind = str(data.get("tokenizer", ""))
    if kind == "byte":
        return "byte"
    if (run / TOKENIZER_FILE).is_file():
        digest = hashlib.sha256((run / TOKENIZER_FILE).read_bytes()).hexdigest()[:16]
        return f"spm:{digest}+{int(data.get('extra_ids', 0))}"
    return None


def check_same_tokenizer(source: Path, tokenizer) -> None:
    """Raises UserError when the run ``train.init_from`` resolved to (``source``: a
    checkpoint step folder ``RUN/checkpoints/STEP`` or an imported directory) tokenized
    with another tokenizer than ``tokenizer`` (this run's)."""
    if source.parent.name != "checkpoints":
        return  # an imported checkpoint: data.tokenizer=hf:... is the user's to match
    run = source.parent.parent
    theirs, ours = source_fingerprint(run), fingerprint(tokenizer)
    if theirs is None or not ours or theirs == ours:
        return
    hint = f"data.tokenizer=spm:{run}" if theirs.startswith("spm:") else "data.tokenizer=byte"
    raise UserError(
        f"train.init_from={run} was trained with another tokenizer ({theirs}) than this run "
        f"uses ({ours}): its embedding rows would mean other tokens. Set {hint} to tokenize "
        "with the pre-trained run's vocabulary."
    )
