"""SST-2: adversarial fine-tuning of the pre-trained models, as the methods were designed.

Every row starts from a model pre-trained on IMDB's 75,000 train + unsup reviews (the
movie domain; never its test reviews): the 7.5M-parameter decoder of
``configs/pretrain_decoder_lm.py`` (next-token LM) and, for two T5 rows, the 12M-parameter
encoder-decoder of ``configs/pretrain_t5_span.py`` (span corruption). Fine-tuning
tokenizes with the pre-training's SentencePiece vocabulary (``data.tokenizer=spm:RUN``;
``train.init_from`` refuses another one), loads the body and initialises the classifier
(``RUN/init_report.json``). Clean GLUE-dev accuracy and accuracy under the evaluation's
embedding PGD-5 attack; one epoch (2,105 steps of 32 sentences), 3 seeds: 27 runs, about
10 h on this project's 2 CPU cores (``BUDGET``, measured), so run it where a GPU is, or
the ``pilot`` first.

First pre-train (``runs/`` of the repository root; the decoder's run is ~2 h alone)::

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/pretrain_decoder_lm.py --workdir runs/pretrain_decoder
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/pretrain_t5_span.py --workdir runs/pretrain_t5
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv sweep experiments/sst2_pretrained.py
    llama-adv table experiments/sst2_pretrained.py

Radius: relative to the embedding scale (``adv.radius_unit = eval.attack.radius_unit =
embedding_rms``: multiples of the RMS L2 norm of the embedding rows of the current
parameters), so one number is the same threat on the decoder (rows of norm ~0.3 at
LLaMA's init) and T5 (~16). EPSILON = 0.1 row norms over the whole example is Miyato et
al.'s radius as a fraction of the example's norm: eps = 5 on their normalised 256-d
embeddings (rows of norm 16) over reviews of ~240 words is 5 / (16 sqrt(240)) = 2% of the
example's norm, and 2% of a 25-piece dev sentence (norm 5 rows) is 0.1 rows. The radius
check on the pilot's undefended decoder (``llama-adv robustness --workdir RUN --suite
embedding --config.robustness.radius_unit=embedding_rms``, PGD-10, L2 over the example;
first 400 dev sentences for the small radii) measured dev accuracy 0.842 clean, 0.798 /
0.707 / 0.545 / 0.373 at 0.02 / 0.05 / 0.1 / 0.15 row norms, 0.068 at 0.25 and 0.001 at
0.5: the first design's 0.3 left every row near zero, 0.1 leaves the undefended model
about half its accuracy for the methods to defend.

Variants: ``pilot`` (2 runs).
"""

from llama_adv.config import parse_variant
from llama_adv.experiments import Experiment, Metric, Plot, Table, accuracy_metrics, named_axis

DECODER_RUN = "runs/pretrain_decoder"
T5_RUN = "runs/pretrain_t5"
STEPS = 2105  # one epoch of SST-2's 67,349 training sentences at 32 a batch
EPSILON = 0.1  # in embedding-row RMS norms (see the module docstring)
OVERRIDES = (
    f"train.init_from={DECODER_RUN}",
    f"data.tokenizer=spm:{DECODER_RUN}",
    # 48 pieces keep every dev sentence whole (95% are <= 48), but training phrases average
    # 13 pieces (half are <= 10): batches of similar length cut to these buckets compute a
    # fraction of the padding (5 compiled shapes a run).
    "data.max_length=48",
    "data.length_buckets=(8,16,24,32,48)",
    "data.group_by_length=50",
    f"train.num_steps={STEPS}",
    "train.batch_size=32",
    "train.log_every=100",
    "train.eval_every=0",
    "train.progress_bar=False",
    # Fine-tuning: a tenth of pre-training's learning rate, 10% warm-up, linear decay.
    "optim.learning_rate=1e-4",
    "optim.warmup_steps=210",
    "optim.schedule=linear",
    "checkpoint.every_steps=500",
    # One threat model for training and evaluation: L2 over the whole example.
    f"adv.epsilon={EPSILON}",
    "adv.radius_unit=embedding_rms",
    "adv.norm=l2",
    "adv.scope=example",
    "eval.attack.method=pgd",
    f"eval.attack.epsilon={EPSILON}",
    "eval.attack.radius_unit=embedding_rms",
    "eval.attack.steps=5",
    # Sizes in the radius unit, scaled to EPSILON as experiments/_sst2_small.py does.
    # Adaptive: radii move by a quarter of EPSILON per visit, within [0, 4 EPSILON] (one
    # epoch: every example is seen once, so radii adapt only from the second epoch on).
    f"adv.adaptive.gamma={EPSILON / 4}",
    f"adv.adaptive.eps_max={EPSILON * 4}",
    # VAT's probe xi is absolute (only its direction matters): well inside the radius.
    "adv.vat.xi=1e-3",
)
METHODS = ("none", "fgm", "freelb", "smart", "random", "vat", "adaptive")
T5 = {
    "config": "configs/sst2_encdec.py:tokenizer=sentencepiece",
    "train.init_from": T5_RUN,
    "data.tokenizer": f"spm:{T5_RUN}",
}
METRICS = accuracy_metrics() + (
    Metric("step_ms", "step_time_sec", "step (ms)", scale=1000.0, best="", digits=0),
)


def levels(methods, t5_methods) -> dict:
    out = {f"decoder {m}": {"adv.method": m} for m in methods}
    out.update({f"t5 {m}": {"adv.method": m, **T5} for m in t5_methods})
    return out


def get_experiment(arg=None):
    variant = parse_variant(arg, pilot=False)
    rows = levels(("none", "fgm"), ()) if variant["pilot"] else levels(METHODS, ("none", "freelb"))
    return Experiment(
        title="SST-2 (GLUE dev): adversarial fine-tuning of models pre-trained on IMDB",
        config="configs/sst2_decoder.py:tokenizer=sentencepiece",
        overrides=OVERRIDES,
        axes=(named_axis("model", rows),),
        seeds=(0,) if variant["pilot"] else (0, 1, 2),
        metrics=METRICS,
        table=Table(
            rows=("model",),
            notes=(
                "decoder: 4 layers, d_model 256, 7.5M parameters, pre-trained as an LM "
                "(configs/pretrain_decoder_lm.py: 1,300 steps, 10.65M tokens, validation "
                "perplexity 111.4; results/pretrain_decoder/card.md); t5: 4 + 4 layers, "
                "12M parameters, pre-trained with span corruption "
                "(configs/pretrain_t5_span.py); both on "
                "IMDB train + unsup, 16k SentencePiece vocabulary shared with fine-tuning.",
                "Under attack: correct both clean and under PGD-5, L2 over the whole "
                f"example, radius {EPSILON} x the RMS norm of the embedding rows.",
                "random is R3F (noise 1e-5, symmetric KL); adaptive starts every example at "
                "EPSILON and adapts on revisits, which one epoch has none of.",
            ),
        ),
        plots=(Plot("accuracy", "bar", "model", ("accuracy", "attack_accuracy")),),
        scaled_down=(
            "small models (7.5M / 12M parameters) pre-trained on ~10M IMDB tokens instead "
            "of BERT/RoBERTa/T5 pre-trained on billions; one epoch of fine-tuning; "
            "sentences cut at 48 pieces. Accuracies are below published SST-2 numbers; "
            "compare rows with each other."
        ),
        budget=BUDGET,
    )


# Measured 2026-12-02 with length-grouped batches (whole runs of seed 0, 2,105 steps and
# the final PGD-5 evaluation, on 2 CPU cores shared with test runs part of the time):
# decoder none 812 s, fgm 1,374 s, freelb 1,079 s, smart 1,212 s, random 884 s. FGM
# alone: 0.40 s a step (0.92 s before grouping). VAT, adaptive and the T5 rows: not yet.
BUDGET = (
    "measured 2026-12-02 on 2 CPU cores: decoder none 14 min, fgm 23, freelb 18, smart 20, "
    "random 15 min a run (one epoch and the PGD-5 evaluation); about 3 h a seed for the 9 "
    "rows, 9-10 h for 3 seeds, plus the T5 pre-training (~1.6 h). pilot (none, fgm; seed "
    "0): 37 min. Needs runs/pretrain_decoder and runs/pretrain_t5 first."
)
