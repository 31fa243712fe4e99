"""IMDB sentiment classification (Maas et al. 2011), evaluated on the 25,000 test reviews.

Data: ``<data root>/imdb/aclImdb.tar.gz`` (or the extracted ``aclImdb/``); prepared once
into the cache (about a minute), SentencePiece (unigram, 16k) trained on train+unsup.
The unlabelled ``unsup`` split (label -1) is there for semi-supervised VAT
(``semi`` variant: train on ``train+unsup``; the supervised loss must skip ``label < 0``).

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/imdb.py \\
        --workdir runs/imdb/none
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/imdb.py:method=vat,semi \\
        --workdir runs/imdb/vat

Variants: ``method=NAME``, ``steps=N``, ``epsilon=X``, ``semi`` (train+unsup),
``tokenizer=sentencepiece|byte``, ``tiny`` (byte tokens, 256 examples, a few steps: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests


def get_config(arg=None):
    variant = parse_variant(
        arg, method="none", steps=10000, epsilon=1.0, semi=False, tokenizer="sentencepiece",
        tiny=False,
    )  # fmt: skip
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.1
    config.task.name = "classification"
    config.data.name = "imdb"
    config.data.tokenizer = variant["tokenizer"]
    config.data.vocab_size = 16000
    config.data.tokenizer_split = "train+unsup"
    config.data.max_length = 400  # Miyato et al. truncate reviews to 400 words
    config.data.length_buckets = (128, 256)
    config.data.train_split = "train+unsup" if variant["semi"] else "train"
    config.eval.split = "test"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.optim.learning_rate = 5e-4
    config.optim.warmup_steps = 500
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 2500
    config.eval.batch_size = 128
    config.checkpoint.every_steps = 2500
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.tokenizer = "byte"
        config.data.train_split = "train[:128]+unsup[:128]" if variant["semi"] else "train[:256]"
        config.data.max_length = 128
        config.data.length_buckets = (64,)
    return config
