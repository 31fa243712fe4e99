"""Pre-training the decoder as a next-token language model on IMDB's unlabelled corpus.

The corpus is what Miyato et al. (2017) pre-train on: IMDB's 25,000 labelled training and
50,000 unlabelled (``unsup``) reviews, never the 25,000 test reviews. Each review is one
document, followed by EOS (``data.pack_eos``), and the stream is cut into 256-token
windows (``data.objective=lm``: the labels are ignored). Validation is the last 1% of
``unsup`` (500 reviews), which training and the tokenizer never see: the test reviews
must stay unseen for the IMDB fine-tuning, and ``unsup`` reviews are from the same
movies' pages, so perplexity there measures the model on this domain.

The SentencePiece vocabulary (unigram, 16k pieces) is trained on the training split and
saved as ``RUN/tokenizer.model``; fine-tuning must tokenize with it,
``data.tokenizer=spm:RUN`` (``train.init_from`` checks that the tokenizers agree)::

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/pretrain_decoder_lm.py \\
        --workdir runs/pretrain_decoder
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/sst2_decoder.py \\
        --workdir runs/sst2_from_lm \\
        --config.train.init_from=runs/pretrain_decoder \\
        --config.data.tokenizer=spm:runs/pretrain_decoder

(see ``experiments/sst2_pretrained.py`` and ``experiments/miyato_imdb_pretrained.py``).

Model: the decoder of ``configs/sst2_decoder.py`` and ``configs/imdb.py`` (4 layers,
d_model 256, 4 heads, gated MLP 768): 3.4M parameters in the blocks + 4.1M in the tied
16k x 256 embedding = 7,506,176. A step is 32 windows of 256 tokens (8,192 tokens); the
1,300 steps see 10.6M tokens, about 0.45 of an epoch of the 23M-token corpus (measured
cost and perplexity at ``STEPS``). The run resumes from its checkpoints (every 250 steps),
so it may be trained in several sittings.

Reports: ``RUN/metrics.jsonl`` train rows log ``tokens_per_sec`` (and ``examples_per_sec``),
eval rows (every 500 steps and at the end) the validation next-token ``loss``, ``perplexity``
(exp of the loss) and token ``accuracy``; ``summary.json`` the median ``step_time_sec``.

Variants: ``steps=N``, ``tiny`` (a 1-layer model on 200 reviews, byte tokens: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests

# Measured 2026-12-01 on this project's 2-CPU machine: alone on both cores 5.0 s a step
# (median), 1,609 tokens/s; shared with tests, 2-12 times slower. The run, trained in three
# sittings (steps 0-521, 521-764, 764-1,300, each under newer code), reached validation
# perplexity 161.5 at step 500, 115.3 at 1,000 and 111.4 at 1,300 (loss 4.713, token
# accuracy 0.233): results/pretrain_decoder/card.md. The 20M tokens would be
# steps=2450, ~3.4 h alone.
STEPS = 1300
TRAIN_SPLIT = "train+unsup[:99%]"
VALIDATION_SPLIT = "unsup[99%:]"


def get_config(arg=None):
    variant = parse_variant(arg, steps=STEPS, tiny=False)
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.0  # under one epoch of data: no need to regularise
    config.task.name = "lm"
    config.data.name = "imdb"
    config.data.objective = "lm"
    config.data.pack_eos = True
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 16000
    config.data.spm_model_type = "unigram"
    config.data.train_split = TRAIN_SPLIT  # the tokenizer is trained on it, too
    config.data.max_length = 256
    config.eval.split = VALIDATION_SPLIT
    config.eval.attack.method = "none"  # perplexity only
    config.eval.batch_size = 64
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 130
    config.optim.weight_decay = 0.01
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 32
    config.train.log_every = 25
    config.train.eval_every = 500
    config.train.progress_bar = False
    config.checkpoint.best_metric = "loss"
    config.checkpoint.best_mode = "min"
    config.checkpoint.every_steps = 250
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.tokenizer = "byte"
        config.data.train_split = "train[:100]+unsup[:100]"
        config.eval.split = "unsup[-20:]"
        config.data.max_length = 64
        config.eval.attack.method = "none"
    return config
