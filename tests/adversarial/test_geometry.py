"""Perturbation geometry: every ascent iterate stays in its ball and off masked positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import geometry

EOS = 2


def _check(delta, mask, radius, norm, scope, *, sphere=False):
    delta = np.asarray(delta)
    assert np.all(delta[np.asarray(mask) == 0] == 0.0), "perturbation on a masked position"
    size = np.asarray(geometry.norm(jnp.asarray(delta), norm, scope))
    assert np.all(size <= radius * (1 + 1e-5)), f"norm {size.max()} > radius {radius}"
    if sphere:  # every unmasked token sits on the sphere
        rows = np.asarray(mask) > 0
        np.testing.assert_allclose(size[rows], radius, rtol=1e-5)


@pytest.mark.parametrize(
    "norm,scope,projection",
    [
        ("l2", "example", "ball"),
        ("l2", "token", "ball"),
        ("linf", "example", "ball"),
        ("linf", "token", "ball"),
        ("linf", "token", "sphere"),
    ],
)
def test_every_pgd_iterate_respects_bound_and_mask(tiny, norm, scope, projection):
    params, batch = tiny.params(), tiny.batch(8)
    method = tiny.method(
        "pgd", norm=norm, scope=scope, projection=projection, steps=4, epsilon=0.3,
        skip_token_ids=(EOS,),
    )  # fmt: skip
    objective, info = tiny.setup(params, batch, perturb_special=True)  # EOS perturbable
    clean = objective(params, {}, jax.random.key(0))[1]
    _, iterates = jax.jit(
        lambda p, c: method.attack(objective, p, info, jax.random.key(1), 0.3, c, record=True)
    )(params, clean)
    mask = method.masks(info)["inputs"]
    assert np.any((np.asarray(batch["inputs"]) == EOS) & (np.asarray(info.masks["inputs"]) > 0))
    assert not np.any(np.asarray(mask)[np.asarray(batch["inputs"]) == EOS])
    steps = iterates["inputs"]
    assert steps.shape[0] == 4
    for t in range(steps.shape[0]):
        _check(steps[t], mask, 0.3, norm, scope, sphere=projection == "sphere")
    assert float(jnp.max(jnp.abs(steps[-1]))) > 0  # it moved


def test_per_example_radii_bound_each_example(tiny):
    params, batch = tiny.params(), tiny.batch(8)
    method = tiny.method("pgd", steps=3)
    objective, info = tiny.setup(params, batch)
    radii = jnp.linspace(0.0, 0.7, 8)
    clean = objective(params, {}, jax.random.key(0))[1]
    _, iterates = jax.jit(
        lambda p, c: method.attack(objective, p, info, jax.random.key(1), radii, c, record=True)
    )(params, clean)
    for t in range(3):
        size = geometry.norm(iterates["inputs"][t], "l2", "example")
        assert np.all(np.asarray(size) <= np.asarray(radii) * (1 + 1e-5) + 1e-7)


@pytest.mark.parametrize("name", ["fgm", "fgsm", "vat", "freelb", "random"])
def test_other_methods_never_perturb_padding(tiny, name):
    params, batch = tiny.params(), tiny.batch(8)
    method = tiny.method(name, epsilon=0.3)
    objective, info = tiny.setup(params, batch)
    clean = objective(params, {}, jax.random.key(0))[1]
    if name == "random":
        delta = method.noise(jax.random.key(1), info)
    else:
        delta = jax.jit(lambda p, c: method.attack(objective, p, info, jax.random.key(1), 0.3, c))(
            params, clean
        )
    _check(delta["inputs"], info.masks["inputs"], 0.3 + 1e-6, method.opt.norm, method.opt.scope)


def test_uniform_init_has_freelb_scaling():
    mask = jnp.ones((64, 10))
    delta = geometry.init(jax.random.key(0), (64, 10, 16), mask, "uniform", 1.0)
    # U(-1, 1) * mag / sqrt(len * D): expected norm about mag / sqrt(3)
    mean = float(jnp.mean(geometry.norm(delta, "l2", "example")))
    assert abs(mean - 1 / np.sqrt(3)) < 0.02


def _linf_opts(linf_step, scope):
    from llama_adv.adversarial.base import COMMON, Options

    return Options(**{**COMMON, "norm": "linf", "scope": scope, "linf_step": linf_step})


@pytest.mark.parametrize("scope", ["example", "token"])
def test_linf_steps_are_sign_or_max_normalised_and_stay_in_the_ball(scope):
    from llama_adv.adversarial import ascent

    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 5, 4)).astype(np.float32) * np.array([1.0, 10.0, 0.1])[:, None, None]
    mask = np.ones((3, 5), np.float32)
    mask[0, 3:] = 0
    zero = {"inputs": jnp.zeros(g.shape)}
    grads, masks = {"inputs": jnp.asarray(g)}, {"inputs": jnp.asarray(mask)}
    masked = g * mask[..., None]
    axes = (1, 2) if scope == "example" else (2,)
    expected = {
        "sign": np.sign(masked),
        "max_norm": masked / np.abs(masked).max(axis=axes, keepdims=True).clip(1e-12),
    }
    for rule, direction in expected.items():
        opt = _linf_opts(rule, scope)
        step = ascent.step(zero, grads, masks, opt, 0.05, 1.0)["inputs"]  # inside the ball
        np.testing.assert_allclose(np.asarray(step), 0.05 * direction, rtol=1e-6, atol=1e-8)
        big = ascent.step(zero, grads, masks, opt, 3.0, 0.2)["inputs"]  # projected
        assert np.abs(np.asarray(big)).max() <= 0.2 * (1 + 1e-6)
        assert np.all(np.asarray(big)[mask == 0] == 0)
    # max_norm keeps the gradient's shape: each example (or token) reaches the step once
    opt = _linf_opts("max_norm", scope)
    peaks = np.abs(np.asarray(ascent.step(zero, grads, masks, opt, 0.05, 1.0)["inputs"]))
    peaks = peaks.max(axis=axes)
    live = np.ones(3, bool) if scope == "example" else mask > 0
    np.testing.assert_allclose(peaks[live], 0.05, rtol=1e-6)


@pytest.mark.parametrize(
    "name,rule",
    [("freelb", "max_norm"), ("smart", "max_norm"), ("alum", "max_norm"),
     ("pgd", "sign"), ("fgsm", "sign"), ("trades", "sign")],
)  # fmt: skip
def test_linf_step_defaults_follow_the_references(tiny, name, rule):
    assert tiny.method(name).opt.linf_step == rule
    assert tiny.method(name, linf_step="sign").opt.linf_step == "sign"
