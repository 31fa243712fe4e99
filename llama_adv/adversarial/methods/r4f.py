"""``r4f`` (Aghajanyan et al. 2020, "Better Fine-Tuning by Reducing Representational
Collapse"): R3F (:mod:`~llama_adv.adversarial.methods.random`, same loss, noise and
defaults: ``U(-sigma, sigma)``, sigma 1e-5, lambda 1) plus spectral normalisation of the
classification head, so that the head's Lipschitz constant is 1.

The paper's reference (fairseq ``--spectral-norm-classification-head``,
``RobertaClassificationHead``) wraps the head's projection in
``torch.nn.utils.spectral_norm``: one power iteration per training forward with a
persistent ``u`` and the forward through ``W / sigma(W)``, ``sigma = u^T W v``, the
gradient flowing through ``sigma`` with ``u`` and ``v`` held fixed. Here:

- ``u`` (``[num_classes]``) lives in the method state (checkpointed); ``init_state`` runs
  15 power iterations from a random ``u`` (as ``torch.nn.utils.parametrizations.
  spectral_norm`` does at registration), then each update runs one, as the reference.
- Every forward pass of the update sees the head ``W / sigma(W)`` (gradient as torch).
- After the optimizer step the stored kernel is replaced by ``W' / sigma(W')`` (one more
  power iteration, on ``W'``): the function the training forward computes does not change
  (``W / sigma(W)`` is invariant to the scale of ``W``), and evaluation, checkpoints and
  exports see the normalised head without knowing of the method.

The head is the parameter subtree ``adv.r4f.head`` (``"classifier"``, the classification
head of both models; its ``kernel`` is ``[d_model, num_classes]``, the bias is not
normalised, as torch). Only for classification tasks; the encoder-decoder's
``label_words`` pooling reads classes off the LM head and has no such subtree.
Dropout: ``fresh`` by default, as R3F.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.adversarial.base import BatchInfo
from llama_adv.adversarial.methods.random import RandomPerturbation
from llama_adv.errors import UserError

INIT_ITERATIONS = 15  # torch.nn.utils.parametrizations.spectral_norm at registration
EPS = 1e-12  # torch's normalize eps


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x), EPS)


def power_iteration(kernel: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One power-iteration step on the kernel ``[D, C]`` (torch's ``W = kernel.T``):
    ``v = unit(W^T u)``, ``u = unit(W v)``; returns the new ``(u [C], v [D])``."""
    kernel = jax.lax.stop_gradient(kernel).astype(jnp.float32)
    v = _unit(kernel @ u)
    return _unit(kernel.T @ v), v


def sigma(kernel: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """The spectral-norm estimate ``u^T W v`` (differentiable in ``kernel``)."""
    return u @ (kernel.astype(jnp.float32).T @ v)


class R4F(RandomPerturbation):
    miyato_baseline = False  # R3F's noise only: no sphere baseline, the divergence is on

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        if task.head != "classification":
            raise UserError(
                "adv.method=r4f normalises a classification head; use task.name="
                "classification (or adv.method=random, R3F, for other tasks)."
            )
        self.head = str(config.r4f.head)

    def kernel(self, params) -> jax.Array:
        """The head kernel ``[D, C]``; a UserError if the parameters have none."""
        if self.head not in params or "kernel" not in params[self.head]:
            raise UserError(
                f"adv.r4f.head={self.head!r} names no parameter subtree with a 'kernel' "
                f"(top level: {sorted(params)}); model.classifier_pooling=label_words has "
                "no classification head, use mean."
            )
        return params[self.head]["kernel"]

    def with_kernel(self, params, kernel):
        return {**params, self.head: {**params[self.head], "kernel": kernel}}

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """``{"u": [num_classes]}``, after 15 power iterations from a random start."""
        kernel = self.kernel(params)
        u = _unit(jax.random.normal(jax.random.key(0), (kernel.shape[-1],), jnp.float32))
        for _ in range(INIT_ITERATIONS):
            u, _ = power_iteration(kernel, u)
        return {"u": u}

    def normalized(self, params, u, v):
        """``params`` with the head kernel ``W / sigma(W)`` (gradient through sigma)."""
        kernel = self.kernel(params)
        return self.with_kernel(params, kernel / sigma(kernel, u, v).astype(kernel.dtype))

    def grads(self, objective, params, info: BatchInfo, rng, state):
        u, v = power_iteration(self.kernel(params), state["u"])

        def spectral(p, delta, rng, **kwargs):
            return objective(self.normalized(p, u, v), delta, rng, **kwargs)

        grads, metrics, _ = super().grads(spectral, params, info, rng, state)
        return grads, {**metrics, "head_sigma": sigma(self.kernel(params), u, v)}, state

    def after_descend(self, params, new_params, state, info: BatchInfo):
        """Stores the effective, normalised head, one power iteration on from ``grads``'."""
        u, _ = power_iteration(self.kernel(params), state["u"])  # the one grads took
        u, v = power_iteration(self.kernel(new_params), u)
        return self.normalized(new_params, u, v), {"u": u}, {}
