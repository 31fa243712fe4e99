"""Character-level (byte) language modelling on Tiny Shakespeare.

Data: ``<data root>/tiny_shakespeare/input.txt``, prepared offline by TFDS's own
``tiny_shakespeare`` builder (the file matches its checksum; TFDS splits it 90/5/5).
The text is packed into 256-byte windows; every byte is a target once.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/tiny_shakespeare_lm.py \\
        --workdir runs/tiny_shakespeare/none

Its model is the one of ``configs/sst2_decoder.py``: fine-tune it there with
``configs/sst2_decoder.py:init_from=runs/tiny_shakespeare/none``.

Variants: ``method=NAME``, ``steps=N``, ``epsilon=X``, ``tiny`` (a few steps: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests


def get_config(arg=None):
    variant = parse_variant(arg, method="none", steps=5000, epsilon=1.0, tiny=False)
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.1
    config.task.name = "lm"
    config.data.name = "tiny_shakespeare"
    config.data.tokenizer = "byte"
    config.data.max_length = 256
    config.eval.split = "validation"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 200
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.eval.batch_size = 64
    config.checkpoint.best_metric = "loss"
    config.checkpoint.best_mode = "min"
    config.checkpoint.every_steps = 1000
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.max_length = 64
    return config
