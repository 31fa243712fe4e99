"""A method describes itself: its class attributes and ``validate`` are all the config
validation knows of it, and a method registered with one line trains through the real step."""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import METHODS, DelayedStart, Method, build_method, validate_adv_config
from llama_adv.adversarial.base import METHOD_OPTIONS
from llama_adv.adversarial.methods.adaptive import BASES
from llama_adv.config import get_default_config
from llama_adv.errors import UserError

# A valid value other than the sentinel for every option a method may or may not read.
NON_DEFAULT = {
    "weight_clean": 0.5,
    "weight_adv": 0.5,
    "weight_div": 0.5,
    "steps": 2,
    "step_size": 0.01,
    "init": "normal",
    "init_magnitude": 0.01,
    "norm": "l2",
    "scope": "example",
    "inner": "kl",
    "divergence": "kl",
    "projection": "ball",
    "linf_step": "sign",
}


def test_the_table_covers_every_method_option():
    assert set(NON_DEFAULT) == set(METHOD_OPTIONS)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_validates_its_own_options(name):
    """An option the method does not read, set, is an error naming the field and the
    method; one it reads validates."""
    factory = METHODS.get(name)
    attack = BASES[get_default_config().adv.adaptive.base] if name == "adaptive" else factory
    assert attack.uses <= set(METHOD_OPTIONS), attack.uses - set(METHOD_OPTIONS)
    for field, value in NON_DEFAULT.items():
        adv = get_default_config().adv
        adv.method = name
        adv[field] = value
        if field in attack.uses or not attack.refuse_unused:
            validate_adv_config(adv, ("inputs",))
            continue
        with pytest.raises(UserError, match=rf"adv\.{field} is not used by '{name}'") as err:
            validate_adv_config(adv, ("inputs",))
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_states_its_traits(name):
    """The class attributes the validation reads are booleans on every registered class
    (no table elsewhere lists methods)."""
    factory = METHODS.get(name)
    assert issubclass(factory, Method)
    for trait in ("iterative", "needs_radius", "divergence_only", "attack_pass", "refuse_unused"):
        assert isinstance(getattr(factory, trait), bool), trait
    assert factory.default_dropout in ("shared", "fresh", "eval")


class TinyNoise(Method):
    """A method written for this test: ``L(x + r)``, ``r`` a random direction at the
    radius. It only states its traits; no other module knows of it."""

    needs_radius = True
    uses = frozenset({"weight_adv", "norm", "scope"})
    defaults: ClassVar[dict[str, Any]] = {"weight_clean": 0.0, "weight_adv": 1.0}
    passes = (1, 1)
    cost = (1, 0, 1)

    def grads(self, objective, params, info, rng, state):
        keys = jax.random.split(rng, len(info.shapes))
        shapes = info.shapes.items()
        directions = {k: jax.random.normal(r, s) for r, (k, s) in zip(keys, shapes, strict=True)}
        delta = self.at_radius(directions, info, self.radius(info))

        def loss_fn(p):
            per_example, _ = objective(p, delta, self.rng_at(rng, 0))
            return self.opt.weight_adv * info.local_mean(per_example)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        loss = info.psum(loss)
        return grads, {"loss": loss, "loss_adv": loss}, state


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # undone after the test
    METHODS.register("tiny_noise")(TinyNoise)  # the one registry line
    return "tiny_noise"


def test_a_method_registered_in_a_test_validates_from_its_traits(registered):
    adv = get_default_config().adv
    adv.method = registered
    validate_adv_config(adv, ("inputs",))
    adv.steps = 3  # not in its uses
    with pytest.raises(UserError, match=r"adv\.steps is not used by 'tiny_noise'"):
        validate_adv_config(adv, ("inputs",))
    adv.steps, adv.unbounded = -1, True  # needs_radius
    with pytest.raises(UserError, match=r"adv\.unbounded .*'tiny_noise'"):
        validate_adv_config(adv, ("inputs",))


def test_a_method_registered_in_a_test_trains_through_the_real_step(tiny, registered):
    adv = tiny.adv(method=registered, epsilon=0.5, begin_step=1)
    validate_adv_config(adv, tiny.model.streams)
    method = build_method(adv, tiny.task, num_steps=100)
    assert isinstance(method, DelayedStart)  # build_method applies adv.begin_step
    assert method.num_steps == 100 and method.passes == (1, 1)
    state, run, _, _ = tiny.trainer(method)
    before = jax.tree.map(np.array, state.params)
    state, clean = run(state, tiny.batch(8))
    state, noisy = run(state, tiny.batch(8, 8), 1)
    assert int(state.step) == 2
    assert float(clean["loss_adv"]) == 0.0  # step 0: clean training, the adversary is off
    assert float(noisy["loss_adv"]) > 0 and np.isfinite(float(noisy["loss"]))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), before, state.params)
    assert max(jax.tree.leaves(moved)) > 0


def test_the_delayed_start_wraps_only_an_adversary(tiny):
    assert not isinstance(build_method(tiny.adv(method="fgm"), tiny.task), DelayedStart)
    assert not isinstance(build_method(tiny.adv(method="none", begin_step=3), tiny.task),
                          DelayedStart)  # fmt: skip
    delayed = build_method(tiny.adv(method="pgd", begin_step=3), tiny.task, num_steps=7)
    assert isinstance(delayed, DelayedStart) and delayed.begin_step == 3
    assert delayed.opt.steps == 3 and delayed.num_steps == 7  # the wrapped method's
