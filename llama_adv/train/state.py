"""The train state: everything a checkpoint must hold to resume exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Attributes:
    step: optimizer steps taken (int32 scalar); also the data position.
    params: model parameters (float32).
    opt_state: optax state.
    method_state: the adversarial method's state (teacher, radii, ...); ``{}`` if none.
    rng: root key data (``jax.random.key_data``) of the run; each step folds in its number.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    method_state: Any
    rng: jax.Array
