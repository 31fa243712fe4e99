"""``fgm``: the fast gradient method of Miyato et al. (2017).

``r = eps * g / ||g||_2`` with ``g`` the gradient of the clean loss with respect to the
embeddings, per example over the whole sequence; the loss is
``w_clean * L(x) + w_adv * L(x + r)``. Two forward and two backward passes: the clean
backward yields both the parameter gradient and ``g``.
"""

from __future__ import annotations

import jax

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import BatchInfo, Method, perturbation_norms


class FGM(Method):
    passes = (2, 2)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        cfg = self.config

        def clean_loss(p, delta):
            per_example, outputs = objective(p, delta, rng)
            return info.local_mean(per_example), outputs

        (loss_clean, clean_out), (g_params, g_delta) = jax.value_and_grad(
            clean_loss, argnums=(0, 1), has_aux=True
        )(params, info.zeros())
        delta = {
            k: jax.lax.stop_gradient(
                cfg.epsilon * geometry.normalize(g, info.masks[k], "l2", cfg.scope)
            )
            for k, g in g_delta.items()
        }

        (loss_adv, adv_out), g_adv = jax.value_and_grad(clean_loss, has_aux=True)(params, delta)
        grads = jax.tree.map(
            lambda a, b: cfg.weight_clean * a + cfg.weight_adv * b, g_params, g_adv
        )
        norms = perturbation_norms(delta, "l2")
        loss_clean, loss_adv = info.psum(loss_clean), info.psum(loss_adv)
        metrics = {
            "loss": cfg.weight_clean * loss_clean + cfg.weight_adv * loss_adv,
            "loss_clean": loss_clean,
            "loss_adv": loss_adv,
            "perturbation_norm": info.global_example_mean(norms),
            "perturbation_norm_max": info.global_max(norms),
            "flip_rate": self.flip_rate(clean_out, adv_out, info),
        }
        return grads, metrics, state
