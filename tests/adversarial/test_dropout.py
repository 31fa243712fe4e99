"""``adv.dropout``: which dropout masks an update's forward passes use (shared, fresh, eval),
and each method's default from its reference code."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import METHODS, validate_adv_config
from llama_adv.config import get_default_config
from llama_adv.errors import UserError
from llama_adv.models import build_model


@pytest.fixture(scope="module")
def dropped(tiny):
    """``tiny`` with dropout 0.1 in the model."""
    config = tiny.config.copy_and_resolve_references()
    config.model.dropout_rate = 0.1
    model = build_model(
        config.model, head=tiny.task.head, vocab_size=tiny.dataset.vocab_size, num_classes=2
    )
    return dataclasses.replace(tiny, config=config, model=model)


def r3f_divergence(dropped, mode):
    method = dropped.method("random", dropout=mode, init_magnitude=1e-5, init="normal")
    params, batch = dropped.params(), dropped.batch(8)
    objective, info = dropped.setup(params, batch)
    _, metrics, _ = jax.jit(lambda p: method.grads(objective, p, info, jax.random.key(5), {}))(
        params
    )
    return float(metrics["loss_div"])


def test_r3f_sees_dropout_noise_only_with_fresh_masks(dropped):
    assert r3f_divergence(dropped, "fresh") > 1e-3  # two masks: dropout noise dominates
    assert r3f_divergence(dropped, "shared") < 1e-6  # one mask: only the 1e-5 noise
    assert r3f_divergence(dropped, "") > 1e-3  # R3F's default is fresh (fairseq)


def test_defaults_follow_the_references(tiny):
    expected = {"freelb": "shared", "trades": "eval"}
    for name in METHODS.names():
        method = tiny.method(name, adaptive__base="pgd")
        assert method.dropout == expected.get(name, "fresh"), name
    adaptive = tiny.method("adaptive", adaptive__base="freelb")
    assert adaptive.dropout == adaptive.base.dropout == "fresh"
    assert tiny.method("freelb", dropout="fresh").dropout == "fresh"


def test_shared_and_fresh_keys(tiny):
    rng = jax.random.key(0)
    shared, fresh = tiny.method("pgd", dropout="shared"), tiny.method("pgd", dropout="fresh")
    keys = [jax.random.key_data(fresh.rng_at(rng, i)) for i in range(3)]
    assert len({bytes(np.asarray(k)) for k in keys}) == 3
    assert all(shared.rng_at(rng, i) is rng for i in range(3))
    evaluate = tiny.method("pgd", dropout="eval")
    assert evaluate.attack_rng(rng, 2) is None
    assert evaluate.rng_at(rng, 1) is not None  # the loss passes stay in train mode


def test_eval_attack_is_deterministic_and_loss_passes_are_not(dropped):
    """Under eval the PGD iterate does not depend on the update's key; under fresh it does.
    The loss still sees dropout (its value changes with the key)."""
    params, batch = dropped.params(), dropped.batch(8)
    objective, info = dropped.setup(params, batch)

    def attack_and_loss(method, key):
        clean = objective(params, {}, method.rng_at(key, 0))[1]
        delta = method.attack(objective, params, info, key, jnp.float32(1.0), clean)
        _, metrics, _ = method.grads(objective, params, info, key, {})
        return delta["inputs"], metrics["loss_adv"]

    # A zero start, so that the two update keys differ only in their dropout masks.
    for mode, same in (("eval", True), ("fresh", False)):
        method = dropped.method("pgd", dropout=mode, init="zero", steps=2, epsilon=1.0)
        run = jax.jit(lambda k, m=method: attack_and_loss(m, k))
        d1, l1 = run(jax.random.key(1))
        d2, l2 = run(jax.random.key(2))
        assert np.allclose(d1, d2, atol=1e-6) == same, mode
        assert float(l1) != float(l2)  # train-mode loss passes in both modes


def test_trades_attack_runs_in_eval_mode(dropped):
    """TRADES' inner KL is measured against a deterministic clean pass: at delta = 0 the
    attack's KL is exactly zero, whatever the dropout key."""
    method = dropped.method("trades")
    params, batch = dropped.params(), dropped.batch(8)
    objective, info = dropped.setup(params, batch)
    clean = objective(params, {}, jax.random.key(3))[1]  # a train-mode pass: ignored
    inner = method.inner_loss(objective, params, info, clean, "kl")
    kl = inner(info.zeros(), method.attack_rng(jax.random.key(4), 2))
    np.testing.assert_array_equal(np.asarray(kl), 0.0)
    assert method.passes == (13, 11)  # K + 2 forwards, plus the deterministic clean one


@pytest.mark.parametrize("method", ["freelb", "freeat", "random"])
def test_eval_is_refused_where_no_pass_is_attack_only(method):
    adv = get_default_config().adv
    adv.method, adv.dropout = method, "eval"
    with pytest.raises(UserError, match=r"adv\.dropout") as err:
        validate_adv_config(adv, ("inputs",))
    assert method in str(err.value) and "\n" not in str(err.value)


def test_unknown_dropout_mode_names_valid_values():
    adv = get_default_config().adv
    adv.method, adv.dropout = "pgd", "sometimes"
    with pytest.raises(UserError, match=r"adv\.dropout.*shared.*fresh.*eval"):
        validate_adv_config(adv, ("inputs",))


@pytest.mark.parametrize("name", ["fgm", "fgsm", "vat", "fgm_vat", "smart", "alum"])
def test_every_attack_runs_under_eval(dropped, name):
    method = dropped.method(name, dropout="eval", epsilon=0.5)
    params, batch = dropped.params(), dropped.batch(8)
    objective, info = dropped.setup(params, batch)
    state = method.init_state(params, 64)
    if name == "smart":
        import optax

        opt = optax.sgd(0.1)
        out = method.update(
            objective, params, opt.init(params), info, jax.random.key(0), state,
            lambda p, s, g: (optax.apply_updates(p, opt.update(g, s)[0]), s, jnp.float32(0)),
        )  # fmt: skip
        metrics = out[2]
    else:
        _, metrics, _ = method.grads(objective, params, info, jax.random.key(0), state)
    assert np.isfinite(float(metrics["loss"]))
