"""Attacks on generation (GCG, the targeted embedding attack), their judges and report.

The fixture trains a tiny decoder to copy: ``BOS x1..x5 SEP x1..x5 EOS``. A behaviour is
prompt ``[p]``, a 4-token suffix, postfix ``SEP`` and target ``[p, t1..t4]``: the model
says the target exactly when the suffix is ``t1..t4``, so the target is easy to reach,
and GCG, which changes one suffix token per step (``n_replace=1``), needs at least 4
steps from a suffix whose 4 tokens are all wrong.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from llama_adv.config import get_default_config
from llama_adv.data.tokenizers import WordTokenizer
from llama_adv.errors import UserError
from llama_adv.models import build_model
from llama_adv.models.decoding import generate_decoder
from llama_adv.robustness.generation import (
    build_layout,
    greedy_generate,
    prompt_embeddings,
    target_logits,
    target_loss,
)
from llama_adv.robustness.generation_embedding import EmbeddingAttackConfig, make_embedding_attack
from llama_adv.robustness.generation_gcg import (
    GCGConfig,
    allowed_tokens,
    candidate_losses,
    run_gcg,
)
from llama_adv.robustness.generation_judge import (
    DEMO_TEST_PREFIXES,
    EVALUATE_TEST_PREFIXES,
    is_refusal,
    refusal_rate,
    starts_with_target,
)
from llama_adv.robustness.generation_suite import run_generation_attacks

WORDS = ["SEP", "x", "!"] + [chr(ord("a") + i) for i in range(17)]  # ids 4..23
TOKENIZER = WordTokenizer(WORDS)
VOCAB, SEP, X, N = TOKENIZER.vocab_size, 4, 5, 5
PROMPTS = [[7], [8], [9]]
TARGETS = [[7, 10, 11, 12, 13], [8, 14, 15, 16, 17], [9, 18, 19, 20, 21]]
SUFFIX = [X] * 4  # every suffix token wrong for every target


@pytest.fixture(scope="module")
def copier():
    """``(model, params)``: 2 blocks, 64 wide, trained 200 steps to copy (loss ~0.01)."""
    section = get_default_config().model
    section.name = "decoder"
    section.update(dict(d_model=64, num_layers=2, num_heads=4, d_ff=128))
    model = build_model(section, head="lm", vocab_size=VOCAB, num_classes=0)
    rng = np.random.default_rng(0)

    def batch():
        x = rng.integers(X, VOCAB, (64, N))
        ones = np.ones((64, 1), int)
        return jnp.asarray(np.concatenate([ones, x, SEP * ones, x, 2 * ones], 1), jnp.int32)

    params = model.init(jax.random.key(0), {"inputs": batch()})
    opt = optax.adam(3e-3)

    def loss_fn(p, seq):
        logits = model.apply(p, {"inputs": seq})["logits"][:, :-1]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:])
        return jnp.mean(ce[:, N + 1 :])  # the copy and the EOS

    @jax.jit
    def step(p, state, seq):
        grads = jax.grad(loss_fn)(p, seq)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    for _ in range(200):
        params, state = step(params, state, batch())
    return model, params


def _layout(suffix=SUFFIX):
    return build_layout(PROMPTS, TARGETS, suffix=suffix, prefix=[1], postfix=[SEP])


def _scorer(model):
    """Jitted ``(params, layout) -> (loss [B], match [B])``: one compilation per shape."""
    return jax.jit(lambda p, lay: target_loss(target_logits(model, p, lay), lay))


def _greedy(model, n):
    return jax.jit(lambda p, lay, emb=None: greedy_generate(model, p, lay, n, embedded=emb))


def test_layout_positions():
    lay = build_layout([[7, 8], [9]], [[10, 11], [12]], suffix=[5, 6], prefix=[1], postfix=[4])
    np.testing.assert_array_equal(
        lay.tokens, [[1, 7, 8, 5, 6, 4, 10, 11], [1, 9, 5, 6, 4, 12, 0, 0]]
    )
    np.testing.assert_array_equal(lay.predictor[0], [5, 6])
    np.testing.assert_array_equal(lay.predictor[1, :1], [4])
    np.testing.assert_array_equal(lay.suffixes(), [[5, 6], [5, 6]])
    np.testing.assert_array_equal(
        lay.with_suffix(jnp.array([[13, 14], [15, 16]]))[1, 2:4], [15, 16]
    )
    np.testing.assert_array_equal(lay.generation_prompt()[1], [1, 9, 5, 6, 4, 0, 0, 0])
    np.testing.assert_array_equal(lay.prompt_mask[0], [0, 1, 1, 0, 0, 0, 0, 0])
    s2s = build_layout([[7, 8]], [[10, 11]], suffix=[5], seq2seq=True, start_id=1)
    np.testing.assert_array_equal(s2s.tokens, [[7, 8, 5]])
    np.testing.assert_array_equal(s2s.decoder_inputs, [[1, 10]])
    with pytest.raises(UserError):
        build_layout([[7]], [[]])
    with pytest.raises(UserError):
        build_layout([[7], [8]], [[9]])
    with pytest.raises(UserError):
        GCGConfig(buffer_size=2)


def test_greedy_generation_matches_decoding(copier):
    """The embedding-prefilled cache decodes as ``decoding.generate_decoder`` on tokens."""
    model, params = copier
    lay = _layout([10, 11, 12, 13])
    greedy = _greedy(model, 6)
    ours = greedy(params, lay)
    embedded = greedy(params, lay, prompt_embeddings(model, params, lay))
    reference, _ = jax.jit(generate_decoder, static_argnums=(0, 3))(
        model, params, lay.generation_prompt(), 6
    )
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(embedded, reference)
    np.testing.assert_array_equal(ours[0, :5], TARGETS[0])  # the copier copies


def test_teacher_forced_match_is_greedy_prefix(copier):
    model, params = copier
    score, greedy = _scorer(model), _greedy(model, 5)
    for suffix in ([10, 11, 12, 13], [14, 15, 16, 17], SUFFIX):
        lay = _layout(suffix)
        _, match = score(params, lay)
        gen = greedy(params, lay)
        np.testing.assert_array_equal(match, starts_with_target(gen, lay.targets, lay.target_mask))


def test_candidate_losses_match_a_loop(copier):
    model, params = copier
    lay = _layout()
    cands = jax.random.randint(jax.random.key(1), (3, 5, 4), X, VOCAB)
    cands = cands.at[0, 0].set(jnp.array([10, 11, 12, 13]))  # one that matches
    losses, matches = jax.jit(candidate_losses, static_argnums=(0, 4))(
        model, params, lay, cands, 4
    )  # 4 chunks of 4, the last filled up
    score = _scorer(model)
    for b in range(3):
        for w in range(5):
            one = build_layout(
                [PROMPTS[b]], [TARGETS[b]], suffix=cands[b, w], prefix=[1], postfix=[SEP]
            )
            loss, match = score(params, one)
            np.testing.assert_allclose(losses[b, w], loss[0], rtol=1e-5, atol=1e-6)
            assert bool(matches[b, w]) == bool(match[0])
    assert bool(matches[0, 0])


def test_candidate_losses_encoder_decoder():
    """Parity on a random encoder-decoder (prompt + suffix in the encoder)."""
    section = get_default_config().model
    section.name = "encoder_decoder"
    section.update(dict(d_model=32, num_layers=1, num_heads=2, d_ff=32))
    model = build_model(section, head="lm", vocab_size=VOCAB, num_classes=0)
    lay = build_layout(PROMPTS[:2], TARGETS[:2], suffix=SUFFIX, seq2seq=True, start_id=1)
    params = model.init(jax.random.key(0), lay.batch())
    cands = jax.random.randint(jax.random.key(2), (2, 3, 4), X, VOCAB)
    losses, _ = jax.jit(candidate_losses, static_argnums=0)(model, params, lay, cands)
    score = _scorer(model)
    for b in range(2):
        for w in range(3):
            one = build_layout(
                [PROMPTS[b]], [TARGETS[b]], suffix=cands[b, w], seq2seq=True, start_id=1
            )
            loss, _ = score(params, one)
            np.testing.assert_allclose(losses[b, w], loss[0], rtol=1e-5, atol=1e-6)
    gen = jax.jit(lambda p, lay: greedy_generate(model, p, lay, 3, start_id=1))(params, lay)
    assert gen.shape == (2, 3)


@pytest.fixture(scope="module")
def gcg_result(copier):
    model, params = copier
    config = GCGConfig(num_steps=16, search_width=64, topk=8, filter_ids=False)
    return run_gcg(model, params, _layout(), config)


def test_gcg_best_loss_never_increases_and_reaches_easy_target(gcg_result):
    best = gcg_result["best_losses"]
    assert best.shape == (17, 3)
    assert np.all(np.diff(best, axis=0) <= 0)
    assert np.all(gcg_result["best_match"])
    np.testing.assert_array_equal(gcg_result["best_suffix"], np.array(TARGETS)[:, 1:])
    # One token per step: four wrong tokens take at least four steps.
    assert np.all(gcg_result["success_step"] >= 4)


def test_embedding_attack_needs_fewer_evaluations_than_gcg(copier, gcg_result):
    """The embedding attack moves every suffix embedding at once: it reaches the targets
    within 40 signed steps (one forward/backward pass each), fewer model evaluations
    than GCG's at least 4 steps of (1 + search_width) passes (``gcg_result``: GCG has
    not matched any target after 3 steps)."""
    model, params = copier
    config = EmbeddingAttackConfig(num_steps=40, step_size=0.05)
    out = make_embedding_attack(model, config)(params, _layout())
    assert out["losses"].shape == (41, 3)
    assert np.all(out["success_step"] > 0)  # step 0 is the clean suffix: no match
    assert np.all(out["final_success"])
    assert np.all(out["success_step"] + 1 < 4 * (1 + 64))
    assert np.all(gcg_result["success_step"] >= 4)
    gen = _greedy(model, 5)(params, _layout(), out["embedded"])
    assert np.all(starts_with_target(gen, np.array(TARGETS), np.ones((3, 5), bool)))
    # The delta stays on the suffix.
    untouched = ~np.asarray(_layout().suffix_mask)
    assert np.all(np.asarray(out["delta"])[untouched] == 0)


def test_l2_embedding_attack_stays_in_ball(copier):
    model, params = copier
    config = EmbeddingAttackConfig(
        num_steps=5, step_size=0.5, norm="l2", radius=0.3, radius_unit="embedding_rms"
    )
    out = make_embedding_attack(model, config)(params, _layout())
    norms = np.linalg.norm(np.asarray(out["delta"]), axis=-1)
    assert norms.max() <= 0.3 * float(model.embedding_rms(params)) * (1 + 1e-5)
    assert norms.max() > 0


def test_refusal_judge():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("Well... As an AI language model, no.")  # a substring test
    assert not is_refusal("Sure, here is a script that can exploit vulnerabilities")
    assert not is_refusal("i'm sorry")  # case-sensitive, as llm-attacks
    assert not is_refusal("Well, I cannot say", prefix_only=True)
    assert is_refusal("  I cannot do that", prefix_only=True)
    assert is_refusal("That is illegal.", EVALUATE_TEST_PREFIXES)
    assert not is_refusal("That is illegal.", DEMO_TEST_PREFIXES)
    assert refusal_rate(["Sorry, no.", "Sure, here", "I apologize", "Okay"]) == 0.5
    assert refusal_rate([]) == 0.0


def test_allowed_tokens_drops_specials_and_non_ascii():
    allowed = allowed_tokens(TOKENIZER, VOCAB)
    assert not allowed[:4].any() and allowed[4:].all()

    class Bytes:
        vocab_size, pad_id, bos_id, eos_id, unk_id = 8, 0, 1, 2, 3

        def decode(self, ids):
            return "\u00e9" if ids[0] == 6 else "\n" if ids[0] == 7 else "a"

    np.testing.assert_array_equal(allowed_tokens(Bytes(), 8), [0, 0, 0, 0, 1, 1, 0, 0])


def test_report_files(copier, tmp_path):
    model, params = copier
    behaviours = list(zip(PROMPTS, TARGETS, strict=True))
    results, examples = run_generation_attacks(
        model,
        params,
        TOKENIZER,
        behaviours,
        tmp_path,
        gcg=GCGConfig(num_steps=3, search_width=8, topk=4),  # filter_ids: the host path
        embedding=EmbeddingAttackConfig(num_steps=4, step_size=0.05),
        gcg_suffix=SUFFIX,
        embedding_suffix=SUFFIX,
        prefix=[1],
        postfix=[SEP],
        max_new_tokens=6,
        behaviour_batch=2,  # two groups, the second filled up
        heldout=[([7, 8, 9, 10, 11], [7, 8, 9, 10, 11])],
        clean_prompts=[[7, 8, 9, 10, 11]],
    )
    assert results["num_behaviours"] == 3
    for name in ("results.json", "table.md", "curve.png", "examples.jsonl"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["attacks"]) == {"gcg", "embedding"}
    for s in saved["attacks"].values():
        for key in ("asr_target", "asr_refusal", "teacher_forced_success", "loss_curve",
                    "success_curve", "mean_final_loss", "num_behaviours", "config"):  # fmt: skip
            assert key in s
        assert s["num_behaviours"] == 3
    assert len(saved["attacks"]["gcg"]["loss_curve"]) == 4
    assert {"heldout_perplexity", "clean_refusal_rate"} <= set(saved["utility"])
    assert saved["utility"]["heldout_perplexity"] < 2.0  # the copier copies this one
    rows = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == len(examples) == 6
    assert {"prompt", "suffix", "generation", "target", "attack"} <= set(rows[0])
    assert rows[0]["suffix"] is not None and len(rows[0]["suffix_ids"]) == 4
    assert "| gcg |" in (tmp_path / "table.md").read_text()
