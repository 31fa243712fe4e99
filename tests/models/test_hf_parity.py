"""Parity with the Hugging Face reference implementations (torch, CPU, float32).

Small randomly initialised ``LlamaForCausalLM`` and ``T5ForConditionalGeneration`` are
saved with ``save_pretrained``, imported, and their logits compared on the real
(non-padding) positions of a padded batch.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.errors import UserError
from llama_adv.models import build_model
from llama_adv.models.hf_import import import_hf, load_imported, save_imported

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
VOCAB = 61


def _batch(rng: np.random.Generator, lengths: list[int], width: int) -> np.ndarray:
    tokens = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(3, VOCAB, n)
    return tokens


def _ours(path, arch, batch):
    section, params, _ = import_hf(path, arch)
    model = build_model(section, head="lm", vocab_size=VOCAB, num_classes=0)
    return np.asarray(model.apply(params, {k: jnp.asarray(v) for k, v in batch.items()})["logits"])


@pytest.mark.parametrize(
    "tied,kv_heads,head_dim", [(False, 2, None), (True, 2, None), (False, 4, 12)]
)
def test_llama_logits_match(tmp_path, tied, kv_heads, head_dim):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=head_dim,
        tie_word_embeddings=tied, rms_norm_eps=1e-5, rope_theta=500.0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    tokens = _batch(np.random.default_rng(0), [9, 5, 1], 9)
    mask = tokens != 0
    with torch.no_grad():
        ref = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).logits.numpy()
    ours = _ours(tmp_path, "llama", {"inputs": tokens})
    diff = float(np.max(np.abs(ours - ref)[mask]))
    print(f"llama tied={tied} kv_heads={kv_heads} head_dim={head_dim}: max |diff| = {diff:.2e}")
    assert diff <= TOLERANCE


def _t5(tmp_path, tied, **save_kwargs):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=3,
        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=tied,
        dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=20,
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path, **save_kwargs)
    return model


@pytest.mark.parametrize("tied,sharded", [(False, False), (True, True)])
def test_t5_logits_match_with_decoder_prefix(tmp_path, tied, sharded):
    model = _t5(tmp_path, tied, **({"max_shard_size": "20KB"} if sharded else {}))
    if sharded:
        assert (tmp_path / "model.safetensors.index.json").exists()
    rng = np.random.default_rng(1)
    # Distances beyond relative_attention_max_distance exercise the log buckets.
    encoder = _batch(rng, [30, 12, 3], 30)
    decoder = _batch(rng, [24, 7, 2], 24)
    decoder[:, 0] = 0  # T5 starts the decoder with the padding id
    dec_mask = decoder != 0
    dec_mask[:, 0] = True
    with torch.no_grad():
        ref = model(
            input_ids=torch.tensor(encoder, dtype=torch.long),
            attention_mask=torch.tensor(encoder != 0, dtype=torch.long),
            decoder_input_ids=torch.tensor(decoder, dtype=torch.long),
            decoder_attention_mask=torch.tensor(dec_mask, dtype=torch.long),
        ).logits.numpy()
    ours = _ours(tmp_path, "t5", {"encoder_inputs": encoder, "decoder_inputs": decoder})
    diff = float(np.max(np.abs(ours - ref)[dec_mask]))
    print(f"t5 tied={tied} sharded={sharded}: max |diff| = {diff:.2e}")
    assert diff <= TOLERANCE


def test_mismatching_checkpoint_lists_parameter_names(tmp_path):
    _t5(tmp_path, tied=False)
    config = json.loads((tmp_path / "config.json").read_text())
    config["d_ff"] = 44  # the tensors keep d_ff=40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as error:
        import_hf(tmp_path, "t5")
    message = str(error.value)
    assert "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in message
    assert "decoder.block.2.layer.2.DenseReluDense.wo.weight" in message


def test_missing_tensor_is_reported(tmp_path):
    from safetensors.numpy import load_file, save_file

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.weight"]
    tensors["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"missing: model\.layers\.0\.mlp\.up_proj\.weight") as err:
        import_hf(tmp_path, "llama")
    assert "unexpected: model.layers.0.extra.weight" in str(err.value)


def test_saved_import_round_trips(tmp_path):
    _t5(tmp_path / "hf", tied=True)
    section, params, _ = import_hf(tmp_path / "hf", "t5")
    save_imported(tmp_path / "out", section, params)
    config, restored = load_imported(tmp_path / "out")
    assert config["model"]["name"] == "encoder_decoder"
    assert config["model"]["tie_embeddings"] is True
    np.testing.assert_array_equal(
        restored["shared"]["embedding"], np.asarray(params["shared"]["embedding"])
    )


def test_import_hf_cli_then_finetune_a_classifier(tmp_path):
    """``llama-adv import-hf`` writes a run config and parameters; a classification run
    started from them (``train.init_from``) keeps every imported body parameter."""
    from llama_adv.cli import main
    from llama_adv.config import get_default_config, load_config
    from llama_adv.data import load_dataset
    from llama_adv.train import train_and_evaluate

    vocab = load_dataset(get_default_config().data).vocab_size
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        )
    )  # fmt: skip
    hf.save_pretrained(tmp_path / "hf")
    assert main(["import-hf", "--arch", "llama", "--path", str(tmp_path / "hf"),
                 "--out", str(tmp_path / "imported")]) == 0  # fmt: skip
    config = load_config(
        str(tmp_path / "imported" / "config.json"),
        ["data.name=synthetic_sentiment", "data.num_train=64", "data.num_eval=16",
         "task.name=classification", f"train.init_from={tmp_path / 'imported'}",
         "train.num_steps=1", "train.batch_size=8", "train.progress_bar=False",
         "eval.batch_size=16", "eval.attack.method=none", "optim.warmup_steps=0"],
    )  # fmt: skip
    train_and_evaluate(config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "init_report.json").read_text())
    assert report["initialized"] == ["classifier/bias", "classifier/kernel"]
    assert report["ignored"] == ["lm_head/kernel"]  # the untied LM head is not used
    _, imported = load_imported(tmp_path / "imported")
    assert len(report["loaded"]) == len(jax.tree.leaves(imported)) - 1
