"""``adaptive``: instance-adaptive adversarial training (METHODS.md, "Adaptive").

Each training example ``i`` has its own radius ``eps_i`` in the method state, indexed by
``batch["example_id"]`` and replicated on every device: after each update the ids and new
radii of all devices are gathered (``lax.all_gather``) and written into every copy, so the
copies never diverge. The base method (``adv.adaptive.base``: pgd, fgm or freelb) attacks
and trains each example at its ``eps_i``.

Rules (``adv.adaptive.rule``), applied after ``adv.adaptive.warmup_steps`` (before that all
examples train at ``adv.epsilon`` and radii stay at their initial ``adv.epsilon``):

- ``one`` (default, no extra attack): wrong clean -> 0; attack survived -> ``eps_i +
  gamma``; prediction flipped -> ``eps_i - gamma``.
- ``iaat`` (Balaji et al. 2019): one more attack at ``eps_i + gamma``: survives it ->
  ``eps_i + gamma``; survives only ``eps_i`` -> ``eps_i``; flipped -> ``eps_i - gamma``.

Then ``eps_i <- b * new + (1 - b) * eps_i`` (``adv.adaptive.smoothing``), clipped to
``[adv.adaptive.eps_min, adv.adaptive.eps_max]``. "Survived" means the perturbed prediction
is still correct (for token tasks: at least half of the target tokens).

A radius schedule (``adv.radius_schedule=linear``) scales every ``eps_i`` by its factor at
the current step, so the attacks ramp up with it; the stored radii and the rule are in
unscaled units.

Dropout: ``fresh`` by default whatever the base (the base method's own default does
not apply); ``eval`` is refused with base freelb.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.adversarial.base import BatchInfo, Method, fail
from llama_adv.adversarial.methods.fgm import FGM
from llama_adv.adversarial.methods.freelb import FreeLB
from llama_adv.adversarial.methods.pgd import PGD

BASES = {"pgd": PGD, "fgm": FGM, "freelb": FreeLB}
CHECK_PASS = 0x636865  # pass index of the iaat check forward (no base pass uses it)


class Adaptive(Method):
    def __init__(self, config, task, num_steps: int = 0):
        self.ac = config.adaptive
        self.base = BASES[self.ac.base](config, task, num_steps)
        super().__init__(config, task, num_steps)
        self.base.dropout = self.dropout  # adaptive's dropout default, not the base's
        self.opt = self.base.opt
        self.passes = self.base.passes
        forward, input_backward, param_backward = self.base.cost
        if self.ac.rule == "iaat":  # the check attack: its ascent plus one forward
            extra = self.opt.steps if self.ac.base != "fgm" else 1
            forward, input_backward = forward + extra + 1, input_backward + extra
        self.cost = (forward, input_backward, param_backward)

    @classmethod
    def validate(cls, config):
        """Its sub-section first (``adv.adaptive.base`` picks the defaults), then the common
        rules with the base's attack and loss (its defaults, steps, options, dropout)."""
        a = config.adaptive
        if a.base not in BASES:
            raise fail("adaptive.base", f"must be one of {tuple(BASES)}, got {a.base!r}.")
        if a.rule not in ("one", "iaat"):
            raise fail("adaptive.rule", f"must be 'one' or 'iaat', got {a.rule!r}.")
        if a.gamma < 0:
            raise fail("adaptive.gamma", f"must be >= 0, got {a.gamma}.")
        if not 0 < a.smoothing <= 1:
            raise fail("adaptive.smoothing", f"must be in (0, 1], got {a.smoothing}.")
        if not 0 <= a.eps_min <= a.eps_max:
            raise fail("adaptive.eps_min", f"must satisfy 0 <= eps_min <= eps_max ({a.eps_max}).")
        cls.check_common(config, BASES[a.base], f"'adaptive' (base {a.base!r})")

    def eval_cost(self):
        return self.base.eval_cost()

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """``{"radii": [num_examples] float32}``, all at ``adv.epsilon``."""
        return {"radii": jnp.full((num_examples,), self.config.epsilon, jnp.float32)}

    def survived(self, outputs: dict, info: BatchInfo) -> jax.Array:
        """``[B]`` bool: the prediction is (mostly) correct."""
        return self.task.correct(outputs, info.batch) >= 0.5

    def new_radii(self, radii, clean_ok, survived, survived_up) -> jax.Array:
        """The rule before smoothing and clipping (``survived_up`` only for ``iaat``)."""
        gamma = self.ac.gamma
        if self.ac.rule == "iaat":
            grown = jnp.where(survived_up, radii + gamma, radii)
        else:
            grown = radii + gamma
        new = jnp.where(survived, grown, radii - gamma)
        return jnp.where(clean_ok, new, 0.0)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        ac, table = self.ac, state["radii"]
        num = table.shape[0]
        ids = info.batch["example_id"].astype(jnp.int32)
        warm = info.step < ac.warmup_steps
        radii = jnp.where(warm, self.config.epsilon, table[jnp.clip(ids, 0, num - 1)])
        scale = self.radius_scale(info)
        unit = self.unit(info)  # stored radii are in adv.radius_unit
        attack_radii = radii * scale * unit
        grads, metrics, clean_out, adv_out = self.base.grads_at(
            objective, params, info, rng, attack_radii
        )
        clean_ok = self.survived(clean_out, info)
        survived = clean_ok & self.survived(adv_out, info)
        survived_up = survived
        if ac.rule == "iaat":
            up = (radii + ac.gamma) * scale * unit
            delta_up = self.base.attack(
                objective, params, info, jax.random.fold_in(rng, 1), up, clean_out
            )
            up_out = objective(params, delta_up, self.attack_rng(rng, CHECK_PASS))[1]
            survived_up = survived & self.survived(up_out, info)
        new = self.new_radii(radii, clean_ok, survived, survived_up)
        new = ac.smoothing * new + (1 - ac.smoothing) * radii
        new = jnp.clip(new, ac.eps_min, ac.eps_max)
        new = jnp.where(warm, radii, new)
        # Padding rows (weight 0) and out-of-range ids write nowhere (mode="drop").
        valid = (info.batch["weight"] > 0) & (ids >= 0) & (ids < num)
        ids = jnp.where(valid, ids, num)
        if info.axis_name:
            ids = jax.lax.all_gather(ids, info.axis_name).reshape(-1)
            new = jax.lax.all_gather(new, info.axis_name).reshape(-1)
        table = table.at[ids].set(new, mode="drop")
        metrics = {
            **metrics,
            "radius_mean": info.global_example_mean(attack_radii),
            "radius_min": -info.global_max(jnp.where(valid, -attack_radii, -jnp.inf)),
            "radius_max": info.global_max(jnp.where(valid, attack_radii, -jnp.inf)),
        }
        return grads, metrics, {"radii": table}
