"""One attack engine: the evaluation attacks (``adversarial/attacks.py``, used by
``train/evaluate.py`` and the robustness suite) are the training methods' inner loops, with
the same options, start, step, projection and step-size rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adv_helpers import single_device_setup, tiny_seq2seq

from llama_adv.adversarial import ascent, attacks, build_method
from llama_adv.adversarial.base import NOISE_STREAM
from llama_adv.train import evaluate

EPS = {"l2": 0.5, "linf": 0.02}


def _pgd_pair(tiny, norm, scope, steps=3, step_size=0.0, dropout="eval"):
    """The PGD training method's perturbation and the evaluation PGD attack's, for the
    same options, key and batch (the method under ``adv.dropout=eval``: deterministic)."""
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    method = tiny.method(
        "pgd", epsilon=EPS[norm], norm=norm, scope=scope, steps=steps, step_size=step_size,
        dropout=dropout,
    )  # fmt: skip
    attack = attacks.EmbeddingAttack.build(
        "pgd", norm=norm, scope=scope, steps=steps, step_size=step_size
    )
    rng = jax.random.key(7)

    @jax.jit
    def train_delta(params):
        return method.attack(objective, params, info, rng, method.radius(info), None)

    @jax.jit
    def eval_delta(params):
        # the method draws its start from its update key folded with NOISE_STREAM (kept
        # apart from its dropout keys); an evaluation attack is given its start key
        def loss_fn(delta):
            return objective(params, delta, None)[0]

        start_key = jax.random.fold_in(rng, NOISE_STREAM)
        return attack(loss_fn, info.masks, info.shapes, start_key, EPS[norm])

    return method, attack, train_delta(params), eval_delta(params)


@pytest.mark.parametrize(
    ("norm", "scope", "step_size"),
    [
        ("l2", "example", 0.0),
        ("linf", "example", 0.0),
        ("l2", "token", 0.0),
        ("l2", "example", 0.1),
    ],
)
def test_eval_pgd_is_the_pgd_methods_inner_loop(tiny, norm, scope, step_size):
    method, attack, train, evaluated = _pgd_pair(tiny, norm, scope, step_size=step_size)
    assert attack.opt == method.opt  # the same resolved options
    assert set(train) == set(evaluated) == {"inputs"}
    assert float(jnp.max(jnp.abs(train["inputs"]))) > 0
    np.testing.assert_array_equal(np.asarray(train["inputs"]), np.asarray(evaluated["inputs"]))


def test_one_step_size_rule(tiny):
    """Madry et al.'s 2.5 eps / K is ascent.default_step_size, for the training methods
    (Method.step_size) and the evaluation attacks (step_size 0) alike."""
    params, batch = tiny.params(), tiny.batch(4)
    _, info = tiny.setup(params, batch)
    method = tiny.method("pgd", epsilon=0.3, steps=4)
    expected = ascent.default_step_size(0.3, 4)
    assert float(expected) == pytest.approx(2.5 * 0.3 / 4)
    assert float(method.step_size(method.radius(info), info)) == float(expected)
    opt = attacks.attack_options("pgd", norm="l2", scope="example", steps=4)
    assert float(ascent.step_size(opt, jnp.float32(0.3))) == float(expected)
    fixed = attacks.attack_options("pgd", norm="l2", scope="example", steps=4, step_size=0.01)
    assert float(ascent.step_size(fixed, 0.3)) == float(jnp.float32(0.01))


def test_robustness_perturbation_matches_the_pgd_method(tiny):
    """Through ``train.evaluate.perturbed_embeddings`` (the robustness step's attack): the
    perturbation it adds is the PGD method's, to float32 rounding (its loss closure embeds
    outside the gradient, the train step's inside)."""
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    method = tiny.method("pgd", epsilon=0.5, steps=3, dropout="eval")
    attack = attacks.EmbeddingAttack.build("pgd", norm="l2", scope="example", steps=3)
    rng = jax.random.key(3)
    train = jax.jit(lambda p: method.attack(objective, p, info, rng, method.radius(info), None))
    perturbed = jax.jit(
        lambda p: evaluate.perturbed_embeddings(
            tiny.model, tiny.task, p, batch, jax.random.fold_in(rng, NOISE_STREAM), attack, 0.5
        )
    )
    added = perturbed(params)["inputs"] - tiny.model.embed(params, batch)["inputs"]
    np.testing.assert_allclose(
        np.asarray(added), np.asarray(train(params)["inputs"]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_eval_fgm_is_one_ascent_step_at_the_radius(tiny, norm):
    """Evaluation FGM: the FGM training method's direction at the radius (``at_radius``),
    which the evaluation attack also projects onto the ball (a no-op up to rounding)."""
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    method = tiny.method("fgm", epsilon=EPS[norm], norm=norm, dropout="eval")
    attack = attacks.EmbeddingAttack.build("fgm", norm=norm, scope="example")
    train = method.attack(objective, params, info, jax.random.key(0), method.radius(info))

    def loss_fn(delta):
        return objective(params, delta, None)[0]

    evaluated = attack(loss_fn, info.masks, info.shapes, None, EPS[norm])
    np.testing.assert_allclose(
        np.asarray(evaluated["inputs"]), np.asarray(train["inputs"]), rtol=1e-6, atol=1e-9
    )


def test_eval_pgd_on_two_streams_is_the_methods(tiny):
    """Encoder-decoder, both streams attacked (``eval.attack`` in train evaluation): the
    uniform start is scaled over both streams together (FreeLB's ``len * D`` under joint
    geometry) as the training method's; the evaluation attack used to scale each stream
    alone."""

    config, task, model, batch, params = tiny_seq2seq()
    objective, info = single_device_setup(model, task, params, batch)
    adv = config.adv.copy_and_resolve_references()
    adv.method, adv.epsilon, adv.steps, adv.dropout = "pgd", 0.3, 2, "eval"
    method = build_method(adv, task)
    attack = attacks.EmbeddingAttack.build("pgd", norm="l2", scope="example", steps=2)
    rng = jax.random.key(5)
    train = jax.jit(lambda p: method.attack(objective, p, info, rng, method.radius(info), None))
    evaluated = jax.jit(
        lambda p: attack(
            lambda d: objective(p, d, None)[0],
            info.masks,
            info.shapes,
            jax.random.fold_in(rng, NOISE_STREAM),
            0.3,
        )
    )
    train, evaluated = train(params), evaluated(params)
    assert set(train) == set(evaluated) == {"encoder", "decoder"}
    for k in train:
        np.testing.assert_array_equal(np.asarray(train[k]), np.asarray(evaluated[k]))
