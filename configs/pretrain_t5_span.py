"""Pre-training the encoder-decoder (T5-style) with T5's span corruption on IMDB's corpus.

The corpus, the held-out validation (the last 1% of ``unsup``) and the SentencePiece
vocabulary are those of ``configs/pretrain_decoder_lm.py`` (the same cached 16k model:
same dataset, split and settings), plus T5's 100 sentinel ids appended past the pieces
(``data.extra_ids``; the k-th span of a window is id ``16099 - k``). Windows of 284 raw
tokens (documents joined with EOS) lose 15% of their tokens in spans of mean length 3
(``data.noise_density``, ``data.mean_noise_span_length``): 43 noise tokens in 14 spans,
so the encoder reads 256 tokens (241 kept + 14 sentinels + EOS) and the decoder predicts
58 (14 sentinels + 43 tokens + EOS); see :mod:`llama_adv.data.span_corruption`. The
reported loss and perplexity are the span-corruption targets'.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/pretrain_t5_span.py \\
        --workdir runs/pretrain_t5
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/sst2_encdec.py \\
        --workdir runs/sst2_from_t5 \\
        --config.train.init_from=runs/pretrain_t5 --config.data.tokenizer=spm:runs/pretrain_t5

Fine-tuning takes the run's tokenizer *and* its extra ids with ``spm:RUN`` (the embedding
has 16,100 rows). Model: 4 encoder + 4 decoder blocks of d_model 256 (4 heads, gated MLP
768; the sizes of ``configs/sst2_encdec.py``): 3.4M encoder + 4.5M decoder + 4.1M tied
embedding (16,100 rows) = 11,991,808 parameters. A step is 32 windows: 8,192 encoder and
2,048 decoder positions (9,088 raw corpus tokens); the 1,300 steps, as many as the
decoder's, cover 11.8M of the corpus's 23M tokens. See ``STEPS`` for the measured cost.

Reports: ``RUN/metrics.jsonl`` train rows log ``tokens_per_sec`` (and ``examples_per_sec``),
eval rows (every 500 steps and at the end) the validation span-corruption ``loss``, ``perplexity``
(exp of the loss) and token ``accuracy``; ``summary.json`` the median ``step_time_sec``.

Variants: ``steps=N``, ``tiny`` (1 layer per stack, 200 reviews, byte tokens: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests

# Measured 2026-12-01 on this project's 2-CPU machine, shared (load 6-8): steps 5-20 took
# 7.3-9.3 s (median 7.8 s; the decoder LM's took 8.8 s at that load), so alone about
# 4.4 s a step: 1,300 steps in about 1.6 h alone (about 2.7 CPU-core-hours); on the shared
# machine expect 2-3 times longer. Not run yet.
STEPS = 1300
TRAIN_SPLIT = "train+unsup[:99%]"
VALIDATION_SPLIT = "unsup[99%:]"


def get_config(arg=None):
    variant = parse_variant(arg, steps=STEPS, tiny=False)
    config = get_default_config()
    config.model.name = "encoder_decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.0  # under one epoch of data (T5.1.1 pre-trains without)
    config.task.name = "seq2seq"
    config.data.name = "imdb"
    config.data.objective = "span_corruption"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 16000
    config.data.spm_model_type = "unigram"
    config.data.extra_ids = 100  # T5's sentinels
    config.data.noise_density = 0.15
    config.data.mean_noise_span_length = 3.0
    config.data.train_split = TRAIN_SPLIT
    config.data.max_length = 256  # encoder side
    config.data.target_max_length = 64  # decoder side: 58 used
    config.eval.split = VALIDATION_SPLIT
    config.eval.attack.method = "none"
    config.eval.bleu = False  # no reference texts: the targets are the spans
    config.eval.batch_size = 64
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 130
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
        config.data.target_max_length = 24
        config.eval.attack.method = "none"
    return config
