"""Import Hugging Face checkpoints (``LlamaForCausalLM``-style and T5 v1.1) into our params.

A checkpoint directory holds ``config.json`` and ``*.safetensors`` (one file, or shards
listed by ``model.safetensors.index.json``), optionally ``tokenizer.json``. The Python API::

    from llama_adv.models.hf_import import import_hf, save_imported
    model_config, params, tokenizer = import_hf("path/to/checkpoint", "llama")
    save_imported("imported/", model_config, params, tokenizer_dir="path/to/checkpoint")

``save_imported`` writes ``config.json`` (a full run config, usable with
``llama-adv train --config``), ``params.msgpack`` and a copy of ``tokenizer.json``.

Layout notes. Our attention kernels are ``[d_model, heads, head_dim]`` (in) and
``[heads, head_dim, d_model]`` (out): the transposed and reshaped torch ``[out, in]``
matrices. T5 keeps one relative-bias table per stack in its first block; ours sits at the
stack level (``encoder/relative_bias``). Transformers 5 always ties T5's LM head to the
shared embedding and only switches the ``d_model**-0.5`` rescaling: a scaled checkpoint
imports as ``tie_embeddings=True``, an unscaled one (T5 v1.1) as an untied head holding
``lm_head.weight`` (or a copy of the shared table when the file has no separate head).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from llama_adv.errors import UserError
from llama_adv.models.base import Params

ARCHS = ("llama", "t5")
PARAMS_FILE = "params.msgpack"
# Checkpoint entries that carry no parameter of ours.
_IGNORED = re.compile(
    r"(rotary_emb\.inv_freq$|^(encoder|decoder)\.embed_tokens\.weight$"
    r"|EncDecAttention\.relative_attention_bias\.weight$)"
)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as float32 numpy arrays, by name."""
    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"No *.safetensors files in {path}.")
    tensors = {}
    for file in files:
        # The flax framework reads bfloat16 too, which numpy alone cannot.
        with safe_open(str(file), framework="flax") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
    return tensors


def read_config(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "config.json"
    if not file.exists():
        raise UserError(f"No config.json in {path}; expected a Hugging Face checkpoint directory.")
    return json.loads(file.read_text())


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def llama_model_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """Our ``model`` section fields for a LLaMA/Mistral ``config.json``."""
    _check(hf.get("hidden_act", "silu") == "silu", "Only SiLU (SwiGLU) LLaMA MLPs are supported.")
    _check(
        not hf.get("attention_bias") and not hf.get("mlp_bias"),
        "LLaMA checkpoints with attention_bias or mlp_bias are not supported.",
    )
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    _check(
        rope.get("rope_type", rope.get("type", "default")) == "default",
        f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported.",
    )
    heads = hf["num_attention_heads"]
    return {
        "name": "decoder",
        "vocab_size": hf["vocab_size"],
        "d_model": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": heads,
        "num_kv_heads": hf.get("num_key_value_heads") or heads,
        "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
        "d_ff": hf["intermediate_size"],
        "rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "dropout_rate": 0.0,
    }


def t5_model_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """Our ``model`` section fields for a T5 v1.1 (gated-GELU) ``config.json``."""
    _check(
        hf.get("feed_forward_proj") == "gated-gelu",
        f"Only T5 v1.1 (feed_forward_proj='gated-gelu') is supported, got "
        f"{hf.get('feed_forward_proj')!r}.",
    )
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    return {
        "name": "encoder_decoder",
        "vocab_size": hf["vocab_size"],
        "d_model": hf["d_model"],
        "num_layers": hf["num_layers"],
        "num_decoder_layers": hf.get("num_decoder_layers") or hf["num_layers"],
        "num_heads": hf["num_heads"],
        "head_dim": hf["d_kv"],
        "d_ff": hf["d_ff"],
        "relative_buckets": hf.get("relative_attention_num_buckets", 32),
        "relative_max_distance": hf.get("relative_attention_max_distance", 128),
        "norm_eps": float(hf.get("layer_norm_epsilon", 1e-6)),
        "tie_embeddings": bool(scaled),
        "dropout_rate": 0.0,
    }


# -- name mapping: our path -> (checkpoint name, transform) ------------------------------

Source = tuple[str, Callable[[np.ndarray], np.ndarray]]


def _linear(t: np.ndarray) -> np.ndarray:
    return t.T


def _heads_in(heads: int) -> Callable[[np.ndarray], np.ndarray]:
    # torch [heads * head_dim, d_model] -> ours [d_model, heads, head_dim]
    return lambda t: t.T.reshape(t.shape[1], heads, -1)


def _heads_out(heads: int) -> Callable[[np.ndarray], np.ndarray]:
    # torch [d_model, heads * head_dim] -> ours [heads, head_dim, d_model]
    return lambda t: t.T.reshape(heads, -1, t.shape[0])


def _same(t: np.ndarray) -> np.ndarray:
    return t


def llama_mapping(fields: dict[str, Any]) -> dict[str, Source]:
    h, kv = fields["num_heads"], fields["num_kv_heads"]
    out: dict[str, Source] = {"embedding/embedding": ("model.embed_tokens.weight", _same)}
    for i in range(fields["num_layers"]):
        src, dst = f"model.layers.{i}.", f"block_{i}/"
        out |= {
            dst + "attention_norm/scale": (src + "input_layernorm.weight", _same),
            dst + "attention/query/kernel": (src + "self_attn.q_proj.weight", _heads_in(h)),
            dst + "attention/key/kernel": (src + "self_attn.k_proj.weight", _heads_in(kv)),
            dst + "attention/value/kernel": (src + "self_attn.v_proj.weight", _heads_in(kv)),
            dst + "attention/out/kernel": (src + "self_attn.o_proj.weight", _heads_out(h)),
            dst + "mlp_norm/scale": (src + "post_attention_layernorm.weight", _same),
            dst + "mlp/gate/kernel": (src + "mlp.gate_proj.weight", _linear),
            dst + "mlp/up/kernel": (src + "mlp.up_proj.weight", _linear),
            dst + "mlp/down/kernel": (src + "mlp.down_proj.weight", _linear),
        }
    out["final_norm/scale"] = ("model.norm.weight", _same)
    out["lm_head/kernel"] = ("lm_head.weight", _linear)
    return out


def t5_mapping(fields: dict[str, Any]) -> dict[str, Source]:
    h = fields["num_heads"]
    out: dict[str, Source] = {"shared/embedding": ("shared.weight", _same)}

    def attention(dst: str, src: str) -> dict[str, Source]:
        return {
            dst + "query/kernel": (src + "q.weight", _heads_in(h)),
            dst + "key/kernel": (src + "k.weight", _heads_in(h)),
            dst + "value/kernel": (src + "v.weight", _heads_in(h)),
            dst + "out/kernel": (src + "o.weight", _heads_out(h)),
        }

    def mlp(dst: str, src: str) -> dict[str, Source]:
        return {
            dst + "gate/kernel": (src + "wi_0.weight", _linear),
            dst + "up/kernel": (src + "wi_1.weight", _linear),
            dst + "down/kernel": (src + "wo.weight", _linear),
        }

    stacks = (("encoder", fields["num_layers"]), ("decoder", fields["num_decoder_layers"]))
    for stack, layers in stacks:
        out[f"{stack}/relative_bias/embedding"] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", _same,
        )  # fmt: skip
        out[f"{stack}/final_norm/scale"] = (f"{stack}.final_layer_norm.weight", _same)
        for i in range(layers):
            src, dst = f"{stack}.block.{i}.layer.", f"{stack}/block_{i}/"
            out[dst + "attention_norm/scale"] = (src + "0.layer_norm.weight", _same)
            out |= attention(dst + "attention/", src + "0.SelfAttention.")
            ff = 1
            if stack == "decoder":
                out[dst + "cross_attention_norm/scale"] = (src + "1.layer_norm.weight", _same)
                out |= attention(dst + "cross_attention/", src + "1.EncDecAttention.")
                ff = 2
            out[dst + "mlp_norm/scale"] = (src + f"{ff}.layer_norm.weight", _same)
            out |= mlp(dst + "mlp/", src + f"{ff}.DenseReluDense.")
    out["lm_head/kernel"] = ("lm_head.weight", _linear)
    return out


def expected_shapes(model_fields: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Our parameter paths and shapes (LM head) for ``model_fields``, without allocating."""
    from llama_adv.config import get_default_config
    from llama_adv.models import build_model

    config = get_default_config().model
    config.update(model_fields)
    model = build_model(config, head="lm", vocab_size=model_fields["vocab_size"], num_classes=0)
    tokens = jnp.ones((1, 4), jnp.int32)
    if model_fields["name"] == "decoder":
        batch = {"inputs": tokens}
    else:
        batch = {"encoder_inputs": tokens, "decoder_inputs": tokens}
    shapes = jax.eval_shape(model.init, jax.random.key(0), batch)
    return {
        "/".join(str(k.key) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    }


def convert(
    tensors: dict[str, np.ndarray], mapping: dict[str, Source], shapes: dict[str, tuple]
) -> Params:
    """Builds our nested params from checkpoint ``tensors``.

    Raises:
      UserError: listing our parameters with no checkpoint entry, checkpoint entries
        with no parameter of ours, and shape mismatches.
    """
    flat, missing, wrong = {}, [], []
    for path, shape in shapes.items():
        name, transform = mapping.get(path, (path, _same))
        if name not in tensors:
            missing.append(f"{name} (for {path})")
            continue
        value = transform(tensors[name])
        if tuple(value.shape) != shape:
            wrong.append(f"{name}: {tuple(tensors[name].shape)} does not give {path} {shape}")
            continue
        flat[path] = value
    used = {mapping[p][0] for p in flat if p in mapping}
    unexpected = sorted(n for n in tensors if n not in used and not _IGNORED.search(n))
    # A tied checkpoint may still store its head; it must then equal the embedding.
    if "lm_head.weight" in unexpected:
        table = tensors.get("model.embed_tokens.weight", tensors.get("shared.weight"))
        if table is not None and np.array_equal(tensors["lm_head.weight"], table):
            unexpected.remove("lm_head.weight")
    if missing or wrong or unexpected:
        lines = [f"missing: {', '.join(missing)}"] if missing else []
        lines += [f"shape mismatch: {'; '.join(wrong)}"] if wrong else []
        lines += [f"unexpected: {', '.join(unexpected)}"] if unexpected else []
        raise UserError("Checkpoint does not match the model.\n  " + "\n  ".join(lines))
    params: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = jnp.asarray(value, jnp.float32)
    return params


def import_hf(path: str | Path, arch: str) -> tuple[mlc.ConfigDict, Params, Any]:
    """Reads a Hugging Face checkpoint directory.

    Args:
      path: directory with ``config.json`` and ``*.safetensors``.
      arch: ``"llama"`` (LlamaForCausalLM, Mistral-style GQA) or ``"t5"`` (T5 v1.1).

    Returns:
      ``(model_section, params, tokenizer)``: a ``model`` config section, float32 params
      in our (unscanned) layout, and a ``tokenizers.Tokenizer`` or None when the
      directory has no ``tokenizer.json``.
    """
    if arch not in ARCHS:
        raise UserError(f"Unknown --arch {arch!r}; valid: {', '.join(ARCHS)}.")
    hf = read_config(path)
    kinds = {"llama": ("llama", "mistral"), "t5": ("t5",)}[arch]
    if hf.get("model_type") not in kinds:
        raise UserError(
            f"{path} holds a {hf.get('model_type')!r} checkpoint, not --arch {arch} "
            f"(model_type {' or '.join(kinds)})."
        )
    tensors = read_safetensors(path)
    if arch == "llama":
        fields = llama_model_fields(hf)
        mapping = llama_mapping(fields)
    else:
        fields = t5_model_fields(hf)
        mapping = t5_mapping(fields)
        if not fields["tie_embeddings"] and "lm_head.weight" not in tensors:
            tensors = {**tensors, "lm_head.weight": tensors["shared.weight"]}
    params = convert(tensors, mapping, expected_shapes(fields))
    from llama_adv.config import get_default_config
    from llama_adv.models.presets import matching_preset

    section = get_default_config().model
    section.update(fields)
    # A released checkpoint's shapes land on their named preset (llama3_8b, t5_base, ...).
    section.preset = matching_preset(section.name, section.to_dict())
    return section, params, load_tokenizer(path)


def load_tokenizer(path: str | Path) -> Any:
    """``tokenizers.Tokenizer`` from ``path/tokenizer.json``, or None if absent."""
    file = Path(path) / "tokenizer.json"
    if not file.exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file))


def save_imported(
    out: str | Path, model_section: mlc.ConfigDict, params: Params, tokenizer_dir: str | Path = ""
) -> Path:
    """Writes ``config.json`` (a full run config), ``params.msgpack`` and ``tokenizer.json``
    (with ``tokenizer_config.json`` and ``chat_template.jinja`` when the checkpoint has them:
    the chat template travels with the tokenizer, :mod:`llama_adv.data.chat_template`)."""
    from flax import serialization

    from llama_adv.config import get_default_config, to_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = get_default_config()
    config.model.update(model_section.to_dict())
    (out / "config.json").write_text(to_json(config) + "\n")
    (out / PARAMS_FILE).write_bytes(serialization.msgpack_serialize(jax.device_get(params)))
    tokenizer = Path(tokenizer_dir) / "tokenizer.json" if tokenizer_dir else None
    if tokenizer is not None and tokenizer.exists():
        for name in TOKENIZER_FILES:
            if (tokenizer.parent / name).is_file():
                shutil.copyfile(tokenizer.parent / name, out / name)
    return out


#: what ``import-hf`` copies beside the parameters: the tokenizer and its chat template
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def load_imported(path: str | Path) -> tuple[dict[str, Any], Params]:
    """Reads what :func:`save_imported` wrote: ``(config dict, params)``."""
    from flax import serialization

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    params = serialization.msgpack_restore((path / PARAMS_FILE).read_bytes())
    return config, params


def import_hf_to_dir(path: str | Path, arch: str, out: str | Path) -> Path:
    """``llama-adv import-hf``: :func:`import_hf` then :func:`save_imported`; prints a line."""
    from llama_adv.models.base import count_params

    section, params, tokenizer = import_hf(path, arch)
    save_imported(out, section, params, tokenizer_dir=path if tokenizer is not None else "")
    extra = f", tokenizer ({tokenizer.get_vocab_size()} tokens)" if tokenizer else ""
    if section.preset:
        extra += f", model.preset={section.preset}"
    print(f"imported {arch} ({count_params(params):,} parameters{extra}) to {out}")
    return Path(out)
