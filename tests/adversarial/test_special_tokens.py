"""The model says which tokens may be perturbed: no method of the registry moves the
classification readout token or BOS under the default mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import METHODS
from llama_adv.special_tokens import BOS_ID


def _batch_with_bos(tiny):
    batch = tiny.batch(8)
    inputs = jnp.concatenate([jnp.full((8, 1), BOS_ID, jnp.int32), batch["inputs"][:, :-1]], 1)
    return {**batch, "inputs": inputs}


def _special(batch):
    tokens = np.asarray(batch["inputs"])
    last = (tokens != 0).sum(1) - 1
    readout = np.arange(tokens.shape[1])[None] == last[:, None]
    return jnp.asarray(readout | (tokens == BOS_ID), jnp.float32)


def _largest_delta_on_special(tiny, name, perturb_special):
    """Runs one update of ``name`` and returns the largest |delta| any of its passes put on
    the readout token or BOS (before the objective's own masking)."""
    params, batch = tiny.params(), _batch_with_bos(tiny)
    special = _special(batch)
    objective, info = tiny.setup(params, batch, perturb_special=perturb_special)
    seen = []

    def spy(p, delta, rng, **kwargs):
        for d in delta.values():
            size = jnp.max(jnp.abs(d) * special[..., None])
            jax.debug.callback(lambda x: seen.append(float(x)), size)
        return objective(p, delta, rng, **kwargs)

    untargeted = {"lat__targeted": False} if name == "lat" else {}  # any task, no chat rows
    method = tiny.method(name, epsilon=0.5, **untargeted)

    def descend(p, o, g):
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), o, jnp.zeros(())

    state = method.init_state(params, 64)
    out = jax.jit(lambda p, s: method.update(spy, p, None, info, jax.random.key(3), s, descend))(
        params, state
    )
    jax.block_until_ready(out)
    return max(seen, default=0.0)


# cat attacks chat prompts only (its masks: tests/adversarial/test_chat_methods.py)
@pytest.mark.parametrize("name", sorted(set(METHODS.names()) - {"none", "cat"}))
def test_no_method_perturbs_readout_or_bos_by_default(tiny, name):
    assert _largest_delta_on_special(tiny, name, perturb_special=False) == 0.0


def test_perturb_special_restores_perturbing_them(tiny):
    assert _largest_delta_on_special(tiny, "pgd", perturb_special=True) > 0.0
