"""Smaller points where the methods now follow their references: no NaN from an unlabelled
batch, FreeLB's unprojected start and its refused options, SMART's teacher at begin_step,
TRADES' step size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import geometry, validate_adv_config
from llama_adv.config import get_default_config
from llama_adv.errors import UserError


def test_a_batch_without_labels_gives_zero_loss_not_nan(tiny):
    params, batch = tiny.params(), tiny.batch(8)
    batch = {**batch, "label": jnp.full((8,), -1, jnp.int32)}
    objective, info = tiny.setup(params, batch)
    assert float(info.denominator) == 0.0
    for name in ("none", "pgd"):
        method = tiny.method(name, epsilon=0.3)
        grads, metrics, _ = method.grads(objective, params, info, jax.random.key(0), {})
        assert float(metrics["loss"]) == 0.0, name
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads)), name


def test_freelb_starts_unprojected_and_projects_after_each_step(tiny):
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    method = tiny.method("freelb", epsilon=0.05, init_magnitude=2.0, steps=2)
    radius = jnp.float32(0.05)
    start = method.start(info, jax.random.key(0), radius)
    # FreeLB's L2 init has expected norm init_mag / sqrt(3) ~ 1.15, far outside 0.05
    assert np.all(np.asarray(perturbation_norm(start)) > 0.5)
    final = method.attack(objective, params, info, jax.random.key(0), radius)
    assert np.all(np.asarray(perturbation_norm(final)) <= 0.05 * (1 + 1e-5))


def perturbation_norm(delta):
    return geometry.norm(delta["inputs"], "l2", "example")


@pytest.mark.parametrize(
    "field,value",
    [("weight_clean", 1.0), ("weight_adv", 0.5), ("weight_div", 1.0), ("inner", "kl"),
     ("divergence", "kl")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["freelb", "adaptive"])
def test_freelb_refuses_options_it_ignores(method, field, value):
    adv = get_default_config().adv
    adv.method, adv.adaptive.base = method, "freelb"
    adv[field] = value
    with pytest.raises(UserError, match=rf"adv\.{field} .*'freelb'") as err:
        validate_adv_config(adv, ("inputs",))
    assert "\n" not in str(err.value)


def test_smart_teacher_starts_at_the_student_at_begin_step(tiny):
    method = tiny.method("smart", begin_step=3, smart__ema_switch_step=100)
    params, batch = tiny.params(), tiny.batch(8)
    stale = {"teacher": jax.tree.map(lambda x: x - 1.0, params)}  # from initialisation

    def descend(p, opt_state, grads):  # a fixed "update": every parameter + 1
        return jax.tree.map(lambda x: x + 1.0, p), opt_state, jnp.zeros(())

    for step, fresh in ((3, True), (4, False)):
        objective, info = tiny.setup(params, batch, step=step)
        new_params, _, metrics, state = method.update(
            objective, params, None, info, jax.random.key(1), stale, descend
        )
        start = params if fresh else stale["teacher"]
        expected = jax.tree.map(lambda t, p: 0.99 * t + 0.01 * p, start, new_params)
        for a, b in zip(jax.tree.leaves(state["teacher"]), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert (float(metrics["loss_breg"]) == 0.0) == fresh  # teacher == student at step 3


def test_trades_step_size_is_the_references(tiny):
    method = tiny.method("trades")
    _, info = tiny.setup(tiny.params(), tiny.batch(4))
    assert method.opt.steps == 10
    assert float(method.step_size(0.031, info)) == pytest.approx(0.003, rel=1e-6)
    given = tiny.method("trades", step_size=0.007)
    assert float(given.step_size(0.031, info)) == pytest.approx(0.007)
