"""NEFTune: noise of scale alpha / sqrt(L_i * d) with each example's own length, in training
only, equal to transformers' hook on an unpadded batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import validate_adv_config
from llama_adv.adversarial.methods.neftune import neftune_noise
from llama_adv.config import get_default_config
from llama_adv.errors import UserError


def test_noise_is_bounded_by_each_examples_own_length(tiny):
    method = tiny.method("neftune", neftune__alpha=5.0)
    params, batch = tiny.params(), tiny.batch(16)
    _, info = tiny.setup(params, batch)
    mask = np.asarray(info.masks["inputs"])
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "the batch should mix lengths"
    noise = np.asarray(method.noise(jax.random.key(0), info)["inputs"])
    d = noise.shape[-1]
    peak = np.abs(noise).max(axis=(1, 2))
    bound = 5.0 / np.sqrt(lengths * d)
    assert np.all(peak <= bound * (1 + 1e-6))
    # L_i, not the padded length: each example comes close to its own bound (a uniform
    # draw of many elements nearly reaches it), above the padded-length bound when shorter
    padded = 5.0 / np.sqrt(mask.shape[1] * d)
    assert np.all(peak > 0.8 * bound)
    short = lengths <= mask.shape[1] / 2  # own bound >= 1.41 x the padded-length bound
    assert short.any() and np.all(peak[short] > padded)
    assert np.all(noise[mask == 0] == 0)


def test_noise_changes_the_update_but_not_evaluation(tiny):
    """The training update differs from clean training's; the parameters it is evaluated
    with see no noise (evaluation runs model.apply, the method is not involved), and the
    noise at alpha 0 is exactly clean training."""
    params, batch = tiny.params(), tiny.batch(8)
    objective, info = tiny.setup(params, batch)
    rng = jax.random.key(1)

    def grads(method):
        return jax.jit(lambda p: method.grads(objective, p, info, rng, {})[0])(params)

    clean = grads(tiny.method("none"))
    noisy = grads(tiny.method("neftune"))
    silent = grads(tiny.method("neftune", neftune__alpha=0.0))
    leaves = list(
        zip(jax.tree.leaves(clean), jax.tree.leaves(noisy), jax.tree.leaves(silent), strict=True)
    )
    assert any(not np.allclose(a, b) for a, b, _ in leaves)
    for a, _, c in leaves:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    method = tiny.method("neftune")
    assert method.passes == (1, 1) and method.theoretical_ratio() == 1.0


def test_equals_the_transformers_hook_on_an_unpadded_batch(monkeypatch):
    torch = pytest.importorskip("torch")
    from transformers.integrations.neftune import neftune_post_forward_hook

    rng = np.random.default_rng(0)
    batch, length, dim, alpha = 3, 7, 16, 5.0
    embeddings = rng.normal(size=(batch, length, dim)).astype(np.float32)
    uniform = rng.uniform(-1, 1, size=(batch, length, dim)).astype(np.float32)

    def given_draws(self, a, b):  # U(a, b) from the same U(-1, 1) draws
        return self.copy_(torch.from_numpy(uniform) * (b - a) / 2 + (a + b) / 2)

    monkeypatch.setattr(torch.Tensor, "uniform_", given_draws)
    module = torch.nn.Embedding(4, dim)
    module.neftune_noise_alpha = alpha
    module.train()
    theirs = neftune_post_forward_hook(module, None, torch.from_numpy(embeddings)).numpy()
    mask = {"inputs": jnp.ones((batch, length))}
    ours = neftune_noise({"inputs": jnp.asarray(uniform)}, mask, mask, alpha)["inputs"]
    np.testing.assert_allclose(embeddings + np.asarray(ours), theirs, rtol=1e-6, atol=1e-7)
    module.eval()  # and the hook, too, adds nothing outside training
    np.testing.assert_array_equal(
        neftune_post_forward_hook(module, None, torch.from_numpy(embeddings)).numpy(), embeddings
    )


def test_negative_alpha_is_a_config_error():
    adv = get_default_config().adv
    adv.method, adv.neftune.alpha = "neftune", -1.0
    with pytest.raises(UserError, match=r"adv\.neftune\.alpha") as err:
        validate_adv_config(adv, ("inputs",))
    assert "\n" not in str(err.value)
