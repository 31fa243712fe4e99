"""ALUM, R3F and TRADES losses against closed forms on a linear toy model, and FreeLB's
accumulated gradient against a plain Python loop."""

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.adversarial import ascent, geometry
from llama_adv.adversarial.base import NOISE_STREAM
from llama_adv.tasks import build_task

TASK = build_task("classification")


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), -1)


def toy_logits(toy, delta):
    e, m = np.asarray(toy.e, np.float64), np.asarray(toy.mask, np.float64)
    pooled = ((e + delta) * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    return pooled @ np.asarray(toy.params["w"], np.float64)


def ce(toy, logits):
    p = softmax(logits)
    return -np.log(p[np.arange(len(p)), np.asarray(toy.batch["label"])])


def logit_grad_to_delta(toy, d_logits):
    """Chain rule through the mean pool: d/d delta[b, l] = mask / n_b * W @ d_logits[b]."""
    m = np.asarray(toy.mask, np.float64)
    w = np.asarray(toy.params["w"], np.float64)
    return (m / m.sum(1, keepdims=True))[..., None] * (d_logits @ w.T)[:, None, :]


def start(toy, rng, magnitude):
    """The methods' normal start: N(0, mag^2) from the noise stream (drawn per example
    row), masked."""
    key = jax.random.split(jax.random.fold_in(rng, NOISE_STREAM), 1)[0]
    noise = np.asarray(geometry.example_noise(key, toy.e.shape, "normal"), np.float64)
    return noise * magnitude * np.asarray(toy.mask)[..., None]


def run(method, toy, rng):
    objective, info = toy.setup(TASK)
    _, metrics, _ = jax.jit(lambda p: method.grads(objective, p, info, rng, {}))(toy.params)
    return float(metrics["loss"])


def test_r3f_loss_is_clean_loss_plus_symmetric_kl(tiny, toy):
    method = tiny.method("random", init_magnitude=0.5, weight_div=0.7)
    rng = jax.random.key(3)
    _, info = toy.setup(TASK)
    z = np.asarray(method.noise(rng, info)["inputs"], np.float64)
    assert np.all(np.abs(z) <= 0.5) and np.all(z[np.asarray(toy.mask) == 0] == 0)
    p, q = softmax(toy_logits(toy, 0.0)), softmax(toy_logits(toy, z))
    expected = np.mean(ce(toy, toy_logits(toy, 0.0))) + 0.7 * np.mean(kl(p, q) + kl(q, p))
    np.testing.assert_allclose(run(method, toy, rng), expected, rtol=1e-5)


def test_random_sphere_is_miyatos_random_perturbation(tiny, toy):
    """``init=sphere, weight_adv=1, weight_div=0``: ``L(x) + L(x + z)``, ``z`` a random
    direction with L2 norm eps over each example's real tokens."""
    method = tiny.method("random", init="sphere", epsilon=0.8, weight_adv=1.0, weight_div=0.0)
    rng = jax.random.key(5)
    _, info = toy.setup(TASK)
    z = np.asarray(method.noise(rng, info)["inputs"], np.float64)
    np.testing.assert_allclose(np.sqrt((z**2).sum((1, 2))), 0.8, rtol=1e-5)
    assert np.all(z[np.asarray(toy.mask) == 0] == 0)
    assert not np.allclose(z, np.asarray(method.noise(jax.random.key(6), info)["inputs"]))
    expected = np.mean(ce(toy, toy_logits(toy, 0.0))) + np.mean(ce(toy, toy_logits(toy, z)))
    np.testing.assert_allclose(run(method, toy, rng), expected, rtol=1e-5)


def test_alum_loss_after_one_sphere_step(tiny, toy):
    method = tiny.method("alum", init_magnitude=0.3, step_size=0.5, epsilon=1.0, weight_div=2.0)
    rng = jax.random.key(4)
    d0 = np.clip(start(toy, rng, 0.3), -1.0, 1.0)
    clean = toy_logits(toy, 0.0)
    pc, pa = softmax(clean), softmax(toy_logits(toy, d0))
    # d/dz_a KL(p_a || p_c) = p_a * (log p_a - log p_c - KL(p_a || p_c))
    dz = pa * (np.log(pa) - np.log(pc) - kl(pa, pc)[:, None])
    d1 = d0 + 0.5 * logit_grad_to_delta(toy, dz)
    d1 = d1 / np.maximum(np.abs(d1).max(-1, keepdims=True), 1e-12)  # unit L-inf per token
    q = softmax(toy_logits(toy, d1))
    expected = np.mean(ce(toy, clean)) + 2.0 * np.mean(kl(pc, q) + kl(q, pc))
    np.testing.assert_allclose(run(method, toy, rng), expected, rtol=1e-5)


def test_trades_loss_after_sign_steps(tiny, toy):
    method = tiny.method("trades", steps=2, step_size=0.3, epsilon=0.5, weight_div=6.0)
    rng = jax.random.key(5)
    m = np.asarray(toy.mask)[..., None]
    d = np.clip(start(toy, rng, 1e-3), -0.5, 0.5)
    clean = toy_logits(toy, 0.0)
    pc = softmax(clean)
    for _ in range(2):
        pa = softmax(toy_logits(toy, d))
        g = logit_grad_to_delta(toy, pa - pc)  # d/dz_a KL(p_c || p_a) = p_a - p_c
        d = np.clip(d + 0.3 * np.sign(g * m), -0.5, 0.5) * m
    expected = np.mean(ce(toy, clean)) + 6.0 * np.mean(kl(pc, softmax(toy_logits(toy, d))))
    np.testing.assert_allclose(run(method, toy, rng), expected, rtol=1e-5)


def test_freelb_gradient_equals_python_loop(tiny):
    steps, radius, alpha = 3, 0.2, 0.1
    method = tiny.method("freelb", steps=steps, epsilon=radius, step_size=alpha)
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    rng = jax.random.key(6)
    grads, metrics, _ = jax.jit(lambda p: method.grads(objective, p, info, rng, {}))(params)

    # Reference: K explicit steps; each backward gives the parameter and delta gradients.
    mask = info.masks["inputs"][..., None]
    delta = method.start(info, rng, radius)["inputs"]
    acc = jax.tree.map(jnp.zeros_like, params)
    losses = []

    def loss(p, d):
        return jnp.sum(objective(p, {"inputs": d}, rng)[0]) / info.denominator

    for _ in range(steps):
        value, (g_p, g_d) = jax.value_and_grad(loss, argnums=(0, 1))(params, delta)
        losses.append(value)
        acc = jax.tree.map(lambda a, g: a + g / steps, acc, g_p)
        g_d = g_d * mask
        g_norm = jnp.sqrt(jnp.sum(g_d**2, axis=(1, 2), keepdims=True))
        delta = delta + alpha * g_d / jnp.maximum(g_norm, 1e-12)
        d_norm = jnp.sqrt(jnp.sum(delta**2, axis=(1, 2), keepdims=True))
        delta = delta * jnp.minimum(1.0, radius / jnp.maximum(d_norm, 1e-12)) * mask
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(acc), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(metrics["loss"], np.mean(losses), rtol=1e-5)


def test_ascent_scan_iterates_match_final(tiny, toy):
    method = tiny.method("pgd", steps=3, epsilon=0.4)
    objective, info = toy.setup(TASK)
    inner = method.inner_loss(objective, toy.params, info, None, "ce")
    d0 = info.zeros()
    final, iterates = ascent.run(
        inner, d0, info.masks, method.opt, steps=3, step_size=0.2, radius=0.4,
        rng_at=lambda t: jax.random.key(0), record=True,
    )  # fmt: skip
    np.testing.assert_array_equal(final["inputs"], iterates["inputs"][-1])


def test_r3f_noisy_branch_is_detached_from_the_embedding_table(tiny):
    """fairseq's R3F: the noisy pass runs on detached embeddings. Detaching changes the
    embedding table's gradient only; every other parameter gets the same gradient."""
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    rng = jax.random.key(2)

    def grads(detach):
        method = tiny.method("random", random__detach=detach, init_magnitude=0.1, dropout="shared")
        g = jax.jit(lambda p: method.grads(objective, p, info, rng, {})[0])(params)
        return dict(jax.tree_util.tree_flatten_with_path(g)[0])

    detached, attached = grads(True), grads(False)
    changed = [
        jax.tree_util.keystr(path)
        for path in detached
        if not np.allclose(detached[path], attached[path], rtol=1e-5, atol=1e-8)
    ]
    assert changed and all("embed" in name for name in changed), changed
    assert tiny.method("random").detach_perturbed  # the default, as fairseq
    assert not tiny.method("random", init="sphere").detach_perturbed  # Miyato's baseline
