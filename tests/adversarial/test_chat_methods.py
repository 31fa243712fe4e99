"""CAT and LAT on a hand-built chat batch: where the attacks perturb, their bounds, and the
loss terms against values computed by hand from the model's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adv_helpers import single_device_setup

from llama_adv.adversarial import build_method, validate_adv_config
from llama_adv.adversarial.methods import chat_terms
from llama_adv.config import get_default_config
from llama_adv.errors import UserError
from llama_adv.models import build_model
from llama_adv.tasks import build_task
from llama_adv.train.mesh import make_mesh, replicated, to_global
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.state import TrainState
from llama_adv.train.step import make_train_step

VOCAB, LENGTH = 24, 10
# rows 0-1 harmful (safe reply in the main fields, harmful target in away_*), 2-3 utility
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12], [13, 14]]
REPLIES = [[15, 16], [15, 16, 17], [18, 19], [20, 21, 22]]
TARGETS = [[4, 4, 20], [4, 23], [], []]


def _row(prompt, reply):
    """``(inputs, targets, target_weight, prompt_mask)`` for BOS prompt reply EOS."""
    tokens = [1, *prompt, *reply, 2]
    inputs = np.zeros(LENGTH, np.int32)
    inputs[: len(tokens) - 1] = tokens[:-1]
    targets = np.zeros(LENGTH, np.int32)
    targets[: len(tokens) - 1] = tokens[1:]
    weight = np.zeros(LENGTH, np.float32)
    weight[len(prompt) : len(tokens) - 1] = 1.0  # positions predicting the reply and EOS
    prompt_mask = np.zeros(LENGTH, bool)
    prompt_mask[1 : 1 + len(prompt)] = True
    return inputs, targets, weight, prompt_mask


def chat_batch() -> dict:
    main = [_row(p, r) for p, r in zip(PROMPTS, REPLIES, strict=True)]
    away = [_row(p, t) if t else _row(p, []) for p, t in zip(PROMPTS, TARGETS, strict=True)]
    has_target = np.asarray([bool(t) for t in TARGETS], np.float32)
    batch = {
        "inputs": np.stack([m[0] for m in main]),
        "targets": np.stack([m[1] for m in main]),
        "target_weight": np.stack([m[2] for m in main]),
        "prompt_mask": np.stack([m[3] for m in main]),
        "away_inputs": np.stack([a[0] for a in away]),
        "away_targets": np.stack([a[1] for a in away]),
        "away_weight": np.stack([a[2] for a in away]) * has_target[:, None],
        "harmful": np.asarray([1, 1, 0, 0], np.float32),
        "weight": np.ones(4, np.float32),
        "example_id": np.arange(4, dtype=np.int32),
    }
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def setup():
    config = get_default_config()
    config.model.d_model, config.model.num_layers, config.model.num_heads = 32, 2, 2
    config.model.d_ff = 64
    task = build_task("lm")
    model = build_model(config.model, head="lm", vocab_size=VOCAB, num_classes=0)
    batch = chat_batch()
    params = model.init(jax.random.key(0), batch)
    return config, model, task, batch, params


def adv_config(config, method: str, **section):
    adv = config.adv.copy_and_resolve_references()
    adv.method = method
    for key, value in section.items():
        adv[method][key] = value
    return adv


def log_probs(logits, targets):
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


def test_cat_attack_touches_harmful_prompts_only_within_the_per_token_bound(setup):
    config, model, task, batch, params = setup
    method = build_method(adv_config(config, "cat", step_size=1e-3), task)
    objective, info = single_device_setup(model, task, params, batch)
    delta = np.asarray(method.attack(objective, params, info, jax.random.key(0))["inputs"])
    moved = np.linalg.norm(delta, axis=-1) > 0
    allowed = np.asarray(batch["prompt_mask"]) & (np.asarray(batch["harmful"])[:, None] > 0)
    assert moved.any() and not (moved & ~allowed).any()
    radius = 0.05 * float(model.embedding_norm(params))
    assert np.linalg.norm(delta, axis=-1).max() <= radius * (1 + 1e-5)

    # the attack makes the harmful target likelier
    def away_ce(d):
        out = objective(params, {"inputs": jnp.asarray(d)}, None, view="away")[1]
        lp = log_probs(out["logits"], batch["away_targets"])
        return -(lp * np.asarray(batch["away_weight"])).sum()

    assert away_ce(delta) < away_ce(np.zeros_like(delta))


def test_cat_loss_terms_equal_hand_computed_values(setup):
    config, model, task, batch, params = setup
    method = build_method(adv_config(config, "cat", step_size=1e-3), task)
    objective, info = single_device_setup(model, task, params, batch)
    rng = jax.random.key(3)
    _, metrics, _ = method.grads(objective, params, info, rng, {})
    delta = method.attack(objective, params, info, rng)
    main = objective(params, delta, None)[1]["logits"]
    away = objective(params, delta, None, view="away")[1]["logits"]
    w, aw = np.asarray(batch["target_weight"]), np.asarray(batch["away_weight"])
    harmful = np.asarray(batch["harmful"])[:, None]
    ce_main = -log_probs(main, batch["targets"])
    ce_away = -log_probs(away, batch["away_targets"])
    toward = (ce_main * w * harmful).sum() / (w * harmful).sum()
    utility = (ce_main * w * (1 - harmful)).sum() / (w * (1 - harmful)).sum()
    away_term = -(ce_away * aw).sum() / aw.sum()
    np.testing.assert_allclose(metrics["loss_toward"], toward, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_utility"], utility, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_away"], away_term, rtol=1e-5)
    # cutoffs: toward above 0.5 and away (-CE, about -3) above -5 here, so the total is plain
    assert toward > 0.5 and away_term > -5
    np.testing.assert_allclose(metrics["loss"], 0.5 * toward + 0.5 * away_term + utility, rtol=1e-5)


def test_cutoff_and_unlikelihood():
    values = jnp.asarray([-6.0, -4.0])
    np.testing.assert_allclose(chat_terms.cutoff(values, -5.0), [-5.006, -4.0], rtol=1e-6)
    logits = jnp.asarray([[[2.0, 0.0, -1.0], [0.0, -9.0, 0.0]]])
    log_p, log_1mp = chat_terms.token_log_probs(logits, jnp.asarray([[0, 1]]))
    p = jax.nn.softmax(logits, -1)
    np.testing.assert_allclose(log_1mp[0, 0], np.log(1 - p[0, 0, 0]), rtol=1e-5)
    ul = chat_terms.unlikelihood(log_p, log_1mp, -5.0)
    assert ul[0, 1] == 0.0  # log p(token 1) is about -9.7: already unlikely, left out
    np.testing.assert_allclose(ul[0, 0], -np.log(1 - p[0, 0, 0]), rtol=1e-5)


def test_lat_attack_is_per_token_bounded_on_every_stream(setup):
    config, model, task, batch, params = setup
    method = build_method(adv_config(config, "lat", epsilon=0.05, steps=4), task)
    objective, info = single_device_setup(model, task, params, batch)
    delta = method.attack(objective, params, info, jax.random.key(0))
    norms = np.linalg.norm(np.asarray(delta["inputs"]), axis=-1)
    assert norms.max() <= 0.05 * (1 + 1e-5) and norms.max() > 0.01
    assert (norms[2:] == 0).all()  # targeted: utility rows are never attacked
    loss = method.adversary_loss(objective, params, info, jax.random.key(0))
    assert float(loss(delta, 0)) < float(loss(info.zeros(), 0))


def _train_step(setup, adv):
    config, model, task, batch, params = setup
    method = build_method(adv, task, num_steps=10)
    mesh = make_mesh(1)
    schedule = make_schedule(config.optim, 10)
    optimizer = make_optimizer(config.optim, schedule)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        method_state=method.init_state(params, 4),
        rng=jax.random.key_data(jax.random.key(0)),
    )
    state = jax.device_put(jax.tree.map(jnp.copy, state), replicated(mesh))
    step = make_train_step(model, task, method, optimizer, schedule, mesh, adv)
    global_batch = to_global({k: np.asarray(v) for k, v in batch.items()}, mesh)
    return step(state, global_batch, jax.random.key(1))


@pytest.mark.parametrize(
    "method, section",
    [("cat", {}), ("cat", {"loss": "ipo"}), ("lat", {"steps": 2, "defense_steps": 2})],
)
def test_jitted_train_step_runs_and_reports_its_terms(setup, method, section):
    config = setup[0]
    adv = adv_config(config, method, **section)
    if method == "lat":  # LAT's setting: the embeddings and a residual stream at once
        adv.streams = "inputs,layer:0"
    _, metrics = _train_step(setup, adv)
    assert np.isfinite(float(metrics["loss"]))
    assert float(metrics["perturbation_norm"]) > 0
    if method == "lat":
        # two defence updates; the model starts at the reference, so the KL term is 0
        assert float(metrics["learning_rate"]) >= 0
        np.testing.assert_allclose(float(metrics["loss_kl"]), 0.0, atol=1e-6)
        assert {"loss_toward", "loss_away"} <= set(metrics)
    if section.get("loss") == "ipo":
        # at the reference the margin is 0: (0 - 1 / (2 * 0.25))^2 = 4
        np.testing.assert_allclose(float(metrics["loss_ipo"]), 4.0, rtol=1e-5)


def test_targeted_methods_need_a_chat_batch(setup):
    config, model, task, batch, params = setup
    plain = {k: v for k, v in batch.items() if not k.startswith("away_") and k != "harmful"}
    method = build_method(adv_config(config, "cat"), task)
    objective, info = single_device_setup(model, task, params, plain)
    with pytest.raises(UserError, match="needs a chat task"):
        method.grads(objective, params, info, jax.random.key(0), {})


@pytest.mark.parametrize(
    "method, field, value",
    [
        ("cat", "loss", "dpo"),
        ("cat", "steps", 0),
        ("lat", "defense_steps", 0),
        ("lat", "epsilon", -1.0),
    ],
)
def test_bad_sections_are_refused(setup, method, field, value):
    adv = adv_config(setup[0], method, **{field: value})
    with pytest.raises(UserError, match=f"adv.{method}.{field}"):
        validate_adv_config(adv, ("inputs",))
