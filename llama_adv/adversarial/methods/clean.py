"""``none``: plain training on the clean loss, the reference every method is compared to."""

from __future__ import annotations

import jax

from llama_adv.adversarial.base import BatchInfo, Method


class NoAdversary(Method):
    passes = (1, 1)
    needs_radius = True
    # The clean baseline of a sweep carries the sweep's shared adversarial options (a
    # threat model, step sizes) unread: it refuses none of them.
    refuse_unused = False

    def grads(self, objective, params, info: BatchInfo, rng, state):
        def loss_fn(p):
            per_example, _ = objective(p, {}, rng)
            return info.local_mean(per_example)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        loss = info.psum(loss)
        return grads, {"loss": loss, "loss_clean": loss}, state
