"""Export our params as Hugging Face checkpoints: the inverse of :mod:`hf_import`.

A decoder-only run becomes ``LlamaForCausalLM`` (LM head) or
``LlamaForSequenceClassification`` (classification head, see below); an encoder-decoder
run becomes ``T5ForConditionalGeneration`` in the T5 v1.1 layout (gated-GELU, RMS norms, no
biases). The directory written holds ``config.json``, ``model.safetensors`` (float32) and,
when the run's tokenizer is a Hugging Face ``tokenizer.json`` (``data.tokenizer=hf:PATH``),
a copy of it. The Python API::

    from llama_adv.models.hf_export import export_hf, export_model
    export_hf("runs/x", "runs/x/hf")               # a run's best (or latest) checkpoint
    export_model(model, params, "out/")            # a built Model and its params

Layout notes (see :mod:`hf_import` for the other direction). Parameter names come from the
importer's mapping, so the two stay inverse; the arrays go back to torch's ``[out, in]``:
attention kernels ``[d_model, heads, head_dim]`` (in) and ``[heads, head_dim, d_model]``
(out) are merged over the head axes and transposed, dense kernels ``[in, out]`` transposed.
Scanned layers (``blocks``, a leading layer axis) are unstacked first. Tied LM heads are
written as ``tie_word_embeddings=True`` with no ``lm_head.weight``; T5's tie flag also
switches its ``d_model**-0.5`` output scaling, which matches ours in both cases (untied:
``tie_word_embeddings=False`` and a separate ``lm_head.weight``, which transformers keeps
untied because it differs from the shared table).

LoRA runs (``model.lora.rank > 0``) are exported unmerged by default: the frozen base
model as above, and the adapters in PEFT's format in ``adapter/`` (``adapter_config.json``,
``adapter_model.safetensors``), which ``PeftModel.from_pretrained(base, out / "adapter")``
loads; ``merged=True`` (``--merged``) writes the merged weights only, a plain checkpoint.
Our kernels are ``x @ W`` with the update ``scale * A @ B`` flattened over the kernel's
input and output dimensions in the same (row-major) order the importer's reshapes use, so
in torch's ``[out, in]`` layout it is ``scale * B.T @ A.T``: ``lora_A.weight = A.T``
``[rank, in]`` and ``lora_B.weight = B.T`` ``[out, rank]``. A LoRA run that also trains a
task head (a decoder classifier) is refused unmerged: the head is not part of the base
model, and PEFT would have to carry it as ``modules_to_save``, which this exporter does not
write; ``--merged`` exports it as a plain ``LlamaForSequenceClassification``.

What has no exact Hugging Face form is refused with a :class:`UserError`: a decoder
classifier whose bias is not zero (``LlamaForSequenceClassification.score`` has none), an
encoder-decoder with a mean-pooling classifier, and any parameter tree that is not exactly
the model's own (:func:`export_model` takes adapters separately, see above).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.errors import UserError
from llama_adv.models.base import Model, Params, count_params
from llama_adv.models.decoder import DecoderOnlyModel
from llama_adv.models.encoder_decoder import EncoderDecoderModel
from llama_adv.models.hf_import import llama_mapping, t5_mapping
from llama_adv.models.layers import unstack_blocks
from llama_adv.models.lora import ADAPTERS, Lora, factors
from llama_adv.special_tokens import BOS_ID, EOS_ID, PAD_ID

WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"  # PEFT's adapter_config.json + adapter_model.safetensors
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# Our models have no position limit (RoPE / relative buckets); HF configs want one.
DEFAULT_MAX_POSITIONS = 2048


def _unstacked(tree: Any) -> Any:
    """``tree`` with every ``blocks`` subtree (scanned layers) split into ``block_{i}``."""
    if not isinstance(tree, dict):
        return tree
    if "blocks" in tree:
        tree = unstack_blocks(tree)
    return {k: _unstacked(v) for k, v in tree.items()}


def _flat(tree: Any) -> dict[str, Any]:
    """``{"a/b/c": leaf}`` of a nested mapping (FrozenDicts and plain dicts alike)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def _example_batch(model: Model) -> dict[str, jax.Array]:
    tokens = jnp.ones((1, 4), jnp.int32)
    if isinstance(model, EncoderDecoderModel) and model.cfg.head == "lm":
        return {"encoder_inputs": tokens, "decoder_inputs": tokens}
    return {"inputs": tokens}


def _to_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Our array at ``path`` in torch's layout (the inverse of the importer's transforms)."""
    if not path.endswith("/kernel"):  # embeddings, norm scales, relative-bias tables
        return value
    if value.ndim == 3:
        # out: [heads, head_dim, d_model] -> [d_model, heads * head_dim];
        # query/key/value: [d_model, heads, head_dim] -> [heads * head_dim, d_model]
        if path.endswith("out/kernel"):
            return value.reshape(-1, value.shape[-1]).T
        return value.reshape(value.shape[0], -1).T
    return value.T  # Dense [in, out] -> torch Linear [out, in]


def _plain_params(model: Model, params: Params) -> dict[str, np.ndarray]:
    """``params`` flattened, unstacked and checked to be exactly ``model``'s tree.

    This is the seam for adapters (LoRA, ...): a tree with extra or missing entries is
    refused rather than exported with them silently dropped.
    """
    # Shapes only (nothing allocated), unstacked like the params below.
    batch = _example_batch(model)
    expected = jax.eval_shape(lambda: _unstacked(model.init(jax.random.key(0), batch)))
    expected = {k: tuple(v.shape) for k, v in _flat(expected).items()}
    if not hasattr(params, "keys"):
        raise UserError(f"export-hf needs a parameter tree (a mapping), got {type(params)!r}.")
    flat = {k: np.asarray(jax.device_get(v)) for k, v in _flat(_unstacked(dict(params))).items()}
    extra = sorted(set(flat) - set(expected))
    missing = sorted(set(expected) - set(flat))
    wrong = sorted(f"{k} {flat[k].shape} (model: {expected[k]})"
                   for k in set(flat) & set(expected) if flat[k].shape != expected[k])  # fmt: skip
    if extra or missing or wrong:
        parts = [f"unexpected {', '.join(extra)}"] if extra else []
        parts += [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"shape mismatch {', '.join(wrong)}"] if wrong else []
        raise UserError(
            "The params are not a plain tree of this model (" + "; ".join(parts) + "); "
            "pass LoRA adapters to export_model separately (lora=, adapters=)."
        )
    return {k: v.astype(np.float32) for k, v in flat.items()}


# -- config.json -------------------------------------------------------------------------


def _llama_config(model: DecoderOnlyModel, special: dict[str, int], max_positions: int) -> dict:
    cfg = model.cfg
    if cfg.d_model % cfg.num_heads:
        # transformers' LlamaConfig validates hidden_size % num_attention_heads == 0.
        raise UserError(
            f"model.d_model={cfg.d_model} is not a multiple of model.num_heads="
            f"{cfg.num_heads}; transformers' LlamaConfig cannot hold such a model."
        )
    rope = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": float(cfg.norm_eps),
        # transformers 5 reads rope_parameters, 4.x the top-level rope_theta.
        "rope_parameters": rope,
        "rope_theta": rope["rope_theta"],
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "dtype": "float32",
        **special,
    }
    if cfg.head == "classification":
        # The sequence classifier pools at the last token != pad_token_id, as ours does.
        config["architectures"] = ["LlamaForSequenceClassification"]
        config["num_labels"] = cfg.num_classes
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_classes)}
        config["tie_word_embeddings"] = False  # no LM head to tie
    return config


def _t5_config(model: EncoderDecoderModel, special: dict[str, int]) -> dict:
    cfg = model.cfg
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.num_buckets,
        "relative_attention_max_distance": cfg.max_distance,
        "dropout_rate": 0.0,
        "layer_norm_epsilon": float(cfg.norm_eps),
        "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": True,
        # Also T5's switch for the d_model**-0.5 output scaling (ours: tied heads only).
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "dtype": "float32",
        "pad_token_id": special["pad_token_id"],
        "eos_token_id": special["eos_token_id"],
        "decoder_start_token_id": special["bos_token_id"],
    }


# -- tensors -----------------------------------------------------------------------------


def _importer_names(model: Model) -> dict[str, str]:
    """``{our path: Hugging Face tensor name}`` of the importer's mapping for ``model``."""
    cfg = model.cfg
    if isinstance(model, DecoderOnlyModel):
        mapping = llama_mapping({"num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads,
                                 "num_layers": cfg.num_layers})  # fmt: skip
    else:
        mapping = t5_mapping({"num_heads": cfg.num_heads, "num_layers": cfg.num_layers,
                              "num_decoder_layers": cfg.num_decoder_layers})  # fmt: skip
    return {path: name for path, (name, _) in mapping.items()}


def _check_layout(model: Model) -> None:
    """Refuses a model with no Hugging Face class at all (whatever its params)."""
    if isinstance(model, EncoderDecoderModel) and not model.cfg.has_decoder:
        raise UserError(
            "This encoder-decoder run classifies by mean pooling (model.classifier_pooling="
            "mean), which no Hugging Face T5 class computes; export an LM (seq2seq) or a "
            "classifier_pooling=label_words run instead."
        )
    if not isinstance(model, DecoderOnlyModel | EncoderDecoderModel):
        raise UserError(
            f"{type(model).__name__} has no Hugging Face layout; export-hf writes "
            "model.name=decoder (LLaMA) and model.name=encoder_decoder (T5) runs."
        )


def _decoder_names(model: DecoderOnlyModel, flat: dict[str, np.ndarray]) -> dict[str, str]:
    cfg = model.cfg
    names = _importer_names(model)
    if cfg.head == "classification":
        del names["lm_head/kernel"]
        bias = flat["classifier/bias"]
        if np.any(bias != 0):
            raise UserError(
                "LlamaForSequenceClassification's score layer has no bias and this run's "
                f"classifier/bias is not zero (max |b| = {np.max(np.abs(bias)):.3g}), so its "
                "logits cannot be reproduced exactly; nothing was written."
            )
        # The bias is zero, so dropping it (from ``flat``, in place) is exact.
        names["classifier/kernel"] = "score.weight"
        flat.pop("classifier/bias")
    elif cfg.tie_embeddings:
        del names["lm_head/kernel"]
    return names


def _t5_names(model: EncoderDecoderModel) -> dict[str, str]:
    cfg = model.cfg
    names = _importer_names(model)  # mean pooling was refused by _check_layout
    if cfg.tie_embeddings:
        del names["lm_head/kernel"]
    return names


def hf_checkpoint(
    model: Model,
    params: Params,
    *,
    special_ids: dict[str, int] | None = None,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The Hugging Face ``config.json`` and tensors of ``model`` with ``params``, in memory.

    Args:
      model: a built :class:`DecoderOnlyModel` or :class:`EncoderDecoderModel`.
      params: its parameter tree (unrolled ``block_{i}`` or scanned ``blocks``).
      special_ids: ``pad_token_id``, ``bos_token_id``, ``eos_token_id`` (default: the
        project's 0, 1, 2).
      max_positions: ``max_position_embeddings`` of a LLaMA config (ours has no limit).

    Returns:
      ``(config, tensors)``: the config as a dict and float32 numpy arrays in torch layout
      (``[out, in]`` matrices) by Hugging Face parameter name.

    Raises:
      UserError: the model or its params have no exact Hugging Face form (module docstring).
    """
    special = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
    special.update(special_ids or {})
    _check_layout(model)
    if isinstance(model, DecoderOnlyModel):
        flat = _plain_params(model, params)
        names = _decoder_names(model, flat)
        config = _llama_config(model, special, max_positions)
    elif isinstance(model, EncoderDecoderModel):
        names = _t5_names(model)  # before reading params: mean pooling has no form at all
        flat = _plain_params(model, params)
        config = _t5_config(model, special)
    unmapped = sorted(set(flat) - set(names))
    if unmapped:  # a model change the mapping does not know yet
        raise UserError(f"No Hugging Face name for {', '.join(unmapped)}.")
    tensors = {names[p]: np.ascontiguousarray(_to_torch(p, v)) for p, v in flat.items()}
    return config, tensors


def peft_adapter(
    model: Model, lora: Lora, adapters: Params, base_model_name_or_path: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` tensors of LoRA
    ``adapters`` (``trainable["lora"]``) on ``model``, in memory.

    Each of our factors ``A`` ``[in, rank]`` / ``B`` ``[rank, out]`` (per layer; scanned
    ones are unstacked) becomes ``base_model.model.<module>.lora_A.weight`` ``[rank, in]``
    / ``lora_B.weight`` ``[out, rank]``, ``<module>`` the Hugging Face module of the kernel
    (``model.layers.0.self_attn.q_proj``), so that PEFT's ``W + (alpha / r) * B @ A`` in
    torch's ``[out, in]`` layout is our merged kernel transposed (module docstring).

    Raises:
      UserError: an adapter on a kernel with no Hugging Face name.
    """
    _check_layout(model)
    names = _importer_names(model)
    tensors, modules = {}, set()
    for path, (a, b) in factors(_unstacked(adapters)).items():
        kernel = "/".join(path)
        if kernel not in names:
            raise UserError(f"No Hugging Face name for the LoRA adapter on {kernel}.")
        module = names[kernel].removesuffix(".weight")
        modules.add(module.rsplit(".", 1)[-1])
        for factor, value in (("lora_A", a), ("lora_B", b)):
            value = np.asarray(jax.device_get(value), np.float32).T
            tensors[f"base_model.model.{module}.{factor}.weight"] = np.ascontiguousarray(value)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if isinstance(model, DecoderOnlyModel) else "SEQ_2_SEQ_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        # Module names, not paths: PEFT matches them at the end of every module's name,
        # which selects exactly our targets (T5's q also in its cross-attention, as ours).
        "target_modules": sorted(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,  # torch Linear [out, in] weights
        "use_rslora": False,  # scale alpha / r, as ours
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    return config, tensors


# -- writing -----------------------------------------------------------------------------


def check_out_dir(out: str | Path, overwrite: bool, workdir: str | Path | None = None) -> Path:
    """Refuses an ``out`` that is a file, holds anything (unless ``overwrite``) or would
    replace ``workdir`` itself; returns it as a Path. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory to write the checkpoint to.")
    if workdir is not None:
        run = Path(workdir).resolve()
        if out.resolve() == run or out.resolve() in run.parents:
            raise UserError(f"--out {out} would replace the run {workdir}; choose another one.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"--out {out} exists and is not empty; pass --overwrite to replace it, "
            "or choose a new directory."
        )
    return out


def write_checkpoint(
    out: str | Path,
    config: dict[str, Any],
    tensors: dict[str, np.ndarray],
    *,
    tokenizer_file: str | Path | None = None,
    overwrite: bool = False,
    adapter: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` (and ``tokenizer.json``) to ``out``,
    and ``adapter``'s config and tensors (:func:`peft_adapter`) to ``out/adapter/``.

    Everything goes to a temporary sibling folder first, renamed to ``out`` at the end, so
    a failure while writing (disk full, an unreadable tokenizer file) leaves ``out`` as it
    was and no partial checkpoint behind.
    """
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise UserError(
            "export-hf needs the safetensors package: pip install 'llama-adv[hf]'."
        ) from None
    out = check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        # transformers refuses safetensors files whose metadata does not name a framework.
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        if adapter is not None:
            (tmp / ADAPTER_DIR).mkdir()
            adapter_config, adapter_tensors = adapter
            text = json.dumps(adapter_config, indent=2) + "\n"
            (tmp / ADAPTER_DIR / "adapter_config.json").write_text(text)
            save_file(adapter_tensors, str(tmp / ADAPTER_DIR / ADAPTER_WEIGHTS_FILE),
                      metadata={"format": "pt"})  # fmt: skip
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_model(
    model: Model,
    params: Params,
    out: str | Path,
    *,
    tokenizer_file: str | Path | None = None,
    special_ids: dict[str, int] | None = None,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    overwrite: bool = False,
    lora: Lora | None = None,
    adapters: Params | None = None,
) -> Path:
    """:func:`hf_checkpoint` then :func:`write_checkpoint`; returns ``out``.

    With ``lora`` and its ``adapters`` (``trainable["lora"]``), ``params`` are the frozen
    base model's and the adapters go to ``out/adapter/`` in PEFT's format, naming ``out``
    (absolute) as their base model. ``out`` must not exist or be empty, unless
    ``overwrite``. Raises UserError (and writes nothing) when the model has no exact
    Hugging Face form.
    """
    check_out_dir(out, overwrite)
    config, tensors = hf_checkpoint(
        model, params, special_ids=special_ids, max_positions=max_positions
    )
    if (lora is None) != (adapters is None):
        raise ValueError("export_model takes lora and adapters together.")
    adapter = None
    if lora is not None:
        adapter = peft_adapter(model, lora, adapters, str(Path(out).resolve()))
    return write_checkpoint(
        out, config, tensors, tokenizer_file=tokenizer_file, overwrite=overwrite,
        adapter=adapter,
    )  # fmt: skip


def _has_checkpoint(workdir: Path) -> bool:
    folder = workdir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def export_hf(
    workdir: str | Path,
    out: str | Path,
    *,
    step: int | None = None,
    overwrite: bool = False,
    merged: bool = False,
) -> Path:
    """``llama-adv export-hf``: a trained run's checkpoint as a Hugging Face directory.

    Args:
      workdir: the run (its ``config.json`` and ``checkpoints/``).
      out: the directory to write (must not exist or be empty, unless ``overwrite``).
      step: the checkpoint step; default: the best one if the run tracks a best
        (``checkpoint.best_metric``), else the latest.
      overwrite: replace whatever is in ``out``.
      merged: for a LoRA run, write the base weights with the adapters merged in (and no
        ``adapter/``); other runs are written the same either way.

    Returns:
      ``out``, holding ``config.json``, ``model.safetensors`` (a LoRA run's frozen base
      unless ``merged``), ``adapter/`` (a LoRA run's adapters in PEFT's format, unless
      ``merged``) and, for a run on a Hugging Face tokenizer (``data.tokenizer=hf:PATH``),
      ``tokenizer.json``. Prints one line, and a note when the tokenizer is not copied.

    Raises:
      UserError: no run or checkpoint in ``workdir``, no such ``step``, a bad ``out``, a
        model with no exact Hugging Face form, or an unmerged LoRA run that trains a task
        head; nothing is written then.
    """
    from llama_adv.robustness.loading import load_run, run_config

    workdir = Path(workdir)
    check_out_dir(out, overwrite, workdir)
    config = run_config(workdir)
    if not _has_checkpoint(workdir):
        raise UserError(f"{workdir}/checkpoints holds no checkpoint; train the run first.")
    run = load_run(workdir, config=config, step=step)
    model, tokenizer = run.exp.model, run.exp.dataset.tokenizer
    lora = run.exp.lora if not merged else None
    params, adapters = run.params, None
    if lora is not None:
        _check_layout(model)  # a model with no form at all is not helped by --merged
        heads = sorted(k for k in run.trainable if k != ADAPTERS)
        if heads:
            raise UserError(
                f"This LoRA run also trains its task head ({', '.join(heads)}), which PEFT's "
                "adapter format cannot hold without modules_to_save; pass --merged to export "
                "the merged weights as a plain checkpoint. Nothing was written."
            )
        params, adapters = run.frozen, run.trainable[ADAPTERS]
    special = {"pad_token_id": PAD_ID,
               "bos_token_id": int(getattr(tokenizer, "bos_id", BOS_ID)),
               "eos_token_id": int(getattr(tokenizer, "eos_id", EOS_ID))}  # fmt: skip
    data = config.data
    longest = data.max_length + (data.get("target_max_length") or 0)
    kind = data.tokenizer
    tokenizer_file = Path(kind[3:]) if kind.startswith("hf:") else None
    out = export_model(
        model, params, out, tokenizer_file=tokenizer_file, special_ids=special,
        max_positions=max(DEFAULT_MAX_POSITIONS, longest), overwrite=overwrite,
        lora=lora, adapters=adapters,
    )  # fmt: skip
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    what, adapter = ("LoRA merged, " if run.exp.lora is not None else ""), ""
    if lora is not None:
        adapter_config = json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())
        what = "frozen base, "
        adapter = (f", LoRA adapter (r={lora.rank} on "
                   f"{', '.join(adapter_config['target_modules'])}; "
                   f"{count_params(adapters):,} parameters) to {out / ADAPTER_DIR}")  # fmt: skip
    print(f"exported {workdir} step {run.step} as {arch} ({what}"
          f"{count_params(params):,} parameters) to {out}{adapter}")  # fmt: skip
    if tokenizer_file is None:
        print(f"note: tokenizer not copied: data.tokenizer={kind} has no Hugging Face "
              "tokenizer.json (only hf:PATH tokenizers do)")  # fmt: skip
    if isinstance(model, EncoderDecoderModel) and model.cfg.head == "classification":
        ids = list(model.cfg.label_token_ids)
        print(f"note: class logits are the LM logits at the first decoder position, "
              f"token ids {ids}")  # fmt: skip
    return out
