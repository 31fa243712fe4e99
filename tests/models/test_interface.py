"""The embedding-perturbation contract, heads, and the scan/remat/bfloat16 options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_helpers import init, make

from llama_adv.errors import UserError
from llama_adv.models.layers import stack_blocks, unstack_blocks
from llama_adv.special_tokens import BOS_ID
from llama_adv.tasks import build_task
from llama_adv.train.step import make_objective


def _cases(lm_batch, seq2seq_batch):
    return [
        (make("decoder"), lm_batch, "lm"),
        (make("decoder", "classification", 3), lm_batch, "classification"),
        (make("encoder_decoder"), seq2seq_batch, "seq2seq"),
        (make("encoder_decoder", "classification", 3), lm_batch, "classification"),
        (
            make(
                "encoder_decoder",
                "classification",
                3,
                classifier_pooling="label_words",
                label_token_ids=(4, 5, 6),
            ),
            lm_batch,
            "classification",
        ),
    ]


def test_embed_then_apply_equals_plain_forward(lm_batch, seq2seq_batch):
    for model, batch, task_name in _cases(lm_batch, seq2seq_batch):
        params = init(model, batch)
        embedded = model.embed(params, batch)
        table = params.get("shared", params.get("embedding"))["embedding"]
        for stream, value in embedded.items():
            assert value.shape[-1] == 32 and stream in model.streams
        # embed is the table lookup the first layer receives ...
        first = next(iter(embedded.values()))
        token_key = "encoder_inputs" if "encoder_inputs" in batch else "inputs"
        np.testing.assert_array_equal(first[:, : batch[token_key].shape[1]],
                                      table[batch[token_key]])  # fmt: skip
        # ... and the train step's objective with a zero perturbation is the plain forward.
        masks = {k: m.astype(jnp.float32) for k, m in model.perturbable_mask(batch).items()}
        delta = {k: jnp.zeros_like(v) for k, v in embedded.items()}
        task = build_task(task_name)
        targets = batch.get("decoder_inputs", batch[token_key])
        size = targets.shape[0]
        full = {
            **batch,
            "label": jnp.zeros(size, jnp.int32),
            "weight": jnp.ones(size),
            "targets": targets,
            "target_weight": jnp.ones(targets.shape),
        }
        objective = make_objective(model, task, full, masks)
        _, outputs = objective(params, delta, jax.random.key(1))
        np.testing.assert_array_equal(outputs["logits"], model.apply(params, batch)["logits"])


def test_perturbable_mask_is_false_on_padding(lm_batch, seq2seq_batch):
    everything = {"perturb_special": True}  # only padding left out
    dec = make("decoder").perturbable_mask(lm_batch, **everything)["inputs"]
    np.testing.assert_array_equal(dec, lm_batch["inputs"] != 0)
    masks = make("encoder_decoder").perturbable_mask(seq2seq_batch, **everything)
    np.testing.assert_array_equal(masks["encoder"], seq2seq_batch["encoder_inputs"] != 0)
    np.testing.assert_array_equal(masks["decoder"], seq2seq_batch["decoder_inputs"] != 0)
    # T5 starts the decoder with id 0: the first decoder position is always real.
    start_zero = {
        **seq2seq_batch,
        "decoder_inputs": seq2seq_batch["decoder_inputs"].at[:, 0].set(0),
    }
    start = make("encoder_decoder").perturbable_mask(start_zero, **everything)["decoder"][:, 0]
    assert bool(jnp.all(start))
    for model, batch in [(make("decoder"), lm_batch), (make("encoder_decoder"), seq2seq_batch)]:
        default = model.perturbable_mask(batch)
        for stream, mask in model.perturbable_mask(batch, **everything).items():
            assert not np.any(np.asarray(default[stream]) & ~np.asarray(mask))  # a subset


def test_default_mask_leaves_out_readout_and_bos(lm_batch, seq2seq_batch):
    tokens = lm_batch["inputs"].at[:, 0].set(BOS_ID)
    batch = {"inputs": tokens}
    real = np.asarray(tokens) != 0
    last = real.sum(1) - 1
    readout = np.arange(tokens.shape[1])[None] == last[:, None]
    bos = np.asarray(tokens) == BOS_ID
    lm = np.asarray(make("decoder").perturbable_mask(batch)["inputs"])
    np.testing.assert_array_equal(lm, real & ~bos)  # no readout token in an LM
    clf = np.asarray(make("decoder", "classification", 3).perturbable_mask(batch)["inputs"])
    np.testing.assert_array_equal(clf, real & ~bos & ~readout)
    masks = make("encoder_decoder").perturbable_mask(seq2seq_batch)
    np.testing.assert_array_equal(masks["encoder"], seq2seq_batch["encoder_inputs"] != 0)
    start = np.arange(seq2seq_batch["decoder_inputs"].shape[1])[None] == 0
    np.testing.assert_array_equal(
        masks["decoder"], (np.asarray(seq2seq_batch["decoder_inputs"]) != 0) & ~start
    )
    words = make("encoder_decoder", "classification", 3, classifier_pooling="label_words",
                 label_token_ids=(4, 5, 6))  # fmt: skip
    assert not np.any(np.asarray(words.perturbable_mask(batch)["decoder"]))  # the readout


def test_stream_tokens_are_the_ids_behind_each_stream(lm_batch, seq2seq_batch):
    prefix = make("decoder").stream_tokens(seq2seq_batch)["inputs"]
    np.testing.assert_array_equal(
        prefix,
        jnp.concatenate([seq2seq_batch["encoder_inputs"], seq2seq_batch["decoder_inputs"]], 1),
    )
    t5 = make("encoder_decoder").stream_tokens(seq2seq_batch)
    np.testing.assert_array_equal(t5["decoder"], seq2seq_batch["decoder_inputs"])
    for model, batch in [(make("decoder"), lm_batch), (make("encoder_decoder"), seq2seq_batch)]:
        params = init(model, batch)
        embedded = model.embed(params, batch)
        table = model.embedding_table(params)
        for stream, tokens in model.stream_tokens(batch).items():
            np.testing.assert_array_equal(embedded[stream], table[tokens])


def test_padding_embeddings_do_not_reach_real_positions(seq2seq_batch):
    model = make("encoder_decoder")
    params = init(model, seq2seq_batch)
    embedded = model.embed(params, seq2seq_batch)
    masks = model.perturbable_mask(seq2seq_batch, perturb_special=True)
    noise = {k: 100.0 * (~masks[k])[..., None] for k in embedded}  # only padding moves
    plain = model.apply(params, seq2seq_batch)["logits"]
    moved = model.apply_embedded(
        params, {k: v + noise[k] for k, v in embedded.items()}, seq2seq_batch
    )["logits"]
    real = masks["decoder"]
    np.testing.assert_allclose(moved[real], plain[real], atol=1e-5)
    # while perturbing a real encoder token does change the output
    poked = {**embedded, "encoder": embedded["encoder"].at[0, 0].add(1.0)}
    assert not np.allclose(model.apply_embedded(params, poked, seq2seq_batch)["logits"], plain)


def test_classification_streams_and_label_words(lm_batch):
    mean = make("encoder_decoder", "classification", 3)
    assert mean.streams == ("encoder",)
    words = make("encoder_decoder", "classification", 3, classifier_pooling="label_words",
                 label_token_ids=(4, 5, 6))  # fmt: skip
    assert words.streams == ("encoder", "decoder")
    params = init(words, lm_batch)
    embedded = words.embed(params, lm_batch)
    assert embedded["decoder"].shape == (3, 1, 32)
    logits = words.apply(params, lm_batch)["logits"]
    # The same parameters as a seq2seq model: LM logits of the start step at the label ids.
    seq = make("encoder_decoder")
    start = jnp.zeros((3, 1), jnp.int32)
    lm = seq.apply(params, {"encoder_inputs": lm_batch["inputs"], "decoder_inputs": start})
    np.testing.assert_allclose(logits, lm["logits"][:, 0, jnp.array([4, 5, 6])], rtol=1e-6)
    with pytest.raises(UserError, match="label_token_ids"):
        make("encoder_decoder", "classification", 3, classifier_pooling="label_words")


@pytest.mark.parametrize("name", ["decoder", "encoder_decoder"])
def test_scan_and_remat_match_the_plain_stack(name, lm_batch, seq2seq_batch):
    batch = lm_batch if name == "decoder" else seq2seq_batch
    plain = make(name)
    params = init(plain, batch)
    reference = plain.apply(params, batch)["logits"]

    def stacked(p):
        if name == "decoder":
            return stack_blocks(p, 2)
        return {**p, "encoder": stack_blocks(p["encoder"], 2),
                "decoder": stack_blocks(p["decoder"], 2)}  # fmt: skip

    scanned_model = make(name, scan_layers=True, remat=True)
    scanned = stacked(params)
    # The scanned model's own init has exactly this layout.
    own = jax.eval_shape(scanned_model.init, jax.random.key(0), batch)
    assert jax.tree.structure(own) == jax.tree.structure(scanned)
    np.testing.assert_allclose(
        scanned_model.apply(scanned, batch)["logits"], reference, atol=1e-5, rtol=1e-5
    )
    remat_model = make(name, remat=True)

    def loss(model, p):
        return jnp.sum(model.apply(p, batch)["logits"] ** 2)

    g_plain = jax.grad(lambda p: loss(plain, p))(params)
    g_remat = jax.grad(lambda p: loss(remat_model, p))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 g_plain, g_remat)  # fmt: skip
    if name == "decoder":
        assert jax.tree.structure(unstack_blocks(scanned)) == jax.tree.structure(params)


@pytest.mark.parametrize("name", ["decoder", "encoder_decoder"])
def test_bfloat16_compute_keeps_float32_params(name, lm_batch, seq2seq_batch):
    batch = lm_batch if name == "decoder" else seq2seq_batch
    model = make(name, dtype="bfloat16")
    params = init(model, batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    low = model.apply(params, batch)["logits"]
    high = make(name).apply(params, batch)["logits"]
    assert low.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(low - high))) < 0.1 * float(jnp.max(jnp.abs(high)))
