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
    objective, info = tiny.setup(params, batch)
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
