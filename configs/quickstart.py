"""Quickstart: a small decoder-only model on the synthetic sentiment task.

Run (clean, then with FGM; ``make quickstart`` runs both and prints a table):

    llama-adv train --config configs/quickstart.py --workdir runs/quickstart/none
    llama-adv train --config configs/quickstart.py:method=fgm --workdir runs/quickstart/fgm

Variants (comma-separated): ``method=NAME`` (any adversarial method), ``steps=N``,
``epsilon=X`` (training radius), ``tiny`` (a few steps, for tests).
"""

from llama_adv.config import get_default_config, parse_variant


def get_config(arg=None):
    variant = parse_variant(arg, method="none", steps=1000, epsilon=0.3, tiny=False)
    config = get_default_config()
    config.model.d_model = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.d_ff = 192
    config.data.name = "synthetic_sentiment"
    config.data.max_length = 24
    config.data.num_train = 8000
    config.data.num_eval = 1000
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 50
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 64
    config.train.log_every = 50
    config.eval.batch_size = 200
    config.eval.attack.epsilon = 0.3  # the radius the adversarial run trains at
    config.checkpoint.every_steps = 200
    if variant["tiny"]:
        config.train.num_steps = 6
        config.train.log_every = 2
        config.optim.warmup_steps = 2
        config.data.num_train = 256
        config.data.num_eval = 64
        config.eval.batch_size = 32
        config.train.batch_size = 16
        config.checkpoint.every_steps = 4
    return config
