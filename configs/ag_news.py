"""AG News topic classification (4 classes), evaluated on the official 7,600-example test.

Data: ``<data root>/ag_news`` with ``test.csv`` and ``train.csv`` or the 10,001-row
``train_subset10k.tsv`` variant; byte tokens by default.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/ag_news.py \\
        --workdir runs/ag_news/none

Variants: ``method=NAME``, ``steps=N``, ``epsilon=X``, ``tokenizer=byte|sentencepiece``,
``tiny`` (512 examples, a few steps: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests


def get_config(arg=None):
    variant = parse_variant(
        arg, method="none", steps=3000, epsilon=1.0, tokenizer="byte", tiny=False
    )
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.1
    config.task.name = "classification"
    config.data.name = "ag_news"
    config.data.tokenizer = variant["tokenizer"]
    config.data.vocab_size = 8000
    config.data.max_length = 256 if variant["tokenizer"] == "byte" else 96
    config.data.length_buckets = (128, 192) if variant["tokenizer"] == "byte" else (64,)
    config.eval.split = "test"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.optim.learning_rate = 5e-4
    config.optim.warmup_steps = 200
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.eval.batch_size = 200
    config.checkpoint.every_steps = 1000
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.train_split = "train[:512]"
        config.data.max_length = 64
        config.data.length_buckets = ()
    return config
