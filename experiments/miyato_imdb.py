"""IMDB test error beside Table 2 of Miyato et al. (2017), "Adversarial Training Methods for
Semi-Supervised Text Classification": baseline, random perturbation, adversarial training
(FGM), virtual adversarial training (VAT, with the 50,000 unlabelled reviews) and both
(``adv.method=fgm_vat``).

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv sweep experiments/miyato_imdb.py --parallel 2
    llama-adv table experiments/miyato_imdb.py

10 runs (5 methods x 2 seeds); about 45 min on 2 CPU cores (a seed measured 21 min), plus
the one-time data preparation (SentencePiece on 75,000 reviews, 2 min).
"""

from llama_adv.experiments import Experiment, Metric, Reference, Table, named_axis

STEPS = 400
EPSILON = 0.02
OVERRIDES = (
    # The quickstart's model size (1.1M parameters with the 16k vocabulary) instead of
    # 4 layers of d_model 256; from scratch (the paper pre-trains its LSTM as an LM).
    "model.d_model=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.d_ff=192",
    # The first 128 SentencePiece tokens of each review (the paper: 400 words), one length.
    "data.max_length=128",
    "data.length_buckets=()",
    f"train.num_steps={STEPS}",
    "train.batch_size=32",
    "train.log_every=50",
    "train.eval_every=0",
    "train.progress_bar=False",
    "optim.learning_rate=1e-3",
    "optim.warmup_steps=40",
    "checkpoint.every_steps=100",
    # A fixed subset of the test set (TFDS stores examples in a hash order, so the first
    # 2,000 mix both labels); only the error rate is reported, so no evaluation attack.
    "eval.max_examples=2000",
    "eval.attack.method=none",
    # Miyato et al. normalise the embeddings and use eps = 5 over the whole (400-word)
    # example, about 1.6% of its norm: a perturbation that regularises rather than breaks.
    # Here the SST-2 experiments' radius (experiments/_sst2_small.py: 0.05 already made
    # adversarial training collapse there), the same for every perturbation.
    f"adv.epsilon={EPSILON}",
    f"adv.vat.xi={EPSILON / 10}",  # the power iteration's probe inside the radius
    "adv.norm=l2",
    "adv.scope=example",
)

# train+unsup holds 1 labelled review in 3: a batch of 96 sees as many labelled ones as the
# others' 32 (the paper, too, adds unlabelled minibatches to the labelled ones).
SEMI = {"config": "configs/imdb.py:semi", "train.batch_size": 96}
METHODS = {
    "baseline": {"adv.method": "none"},
    # Their random baseline: L(x) + L(x + r), r a random direction of norm eps (not R3F).
    "random perturbation": {"adv.method": "random", "adv.init": "sphere",
                            "adv.weight_adv": 1.0, "adv.weight_div": 0.0},
    "adversarial": {"adv.method": "fgm"},
    "virtual adversarial": {"adv.method": "vat", **SEMI},
    "adversarial + virtual adversarial": {"adv.method": "fgm_vat", **SEMI},
}  # fmt: skip
# Table 2 of Miyato et al. (2017), test error (%).
PUBLISHED = {
    "baseline": 7.39,
    # 7.20 with labelled examples only, as our row (6.78 with the unlabelled ones too)
    "random perturbation": 7.20,
    "adversarial": 6.21,
    "virtual adversarial": 5.91,
    "adversarial + virtual adversarial": 6.09,
}


def get_experiment(arg=None):
    return Experiment(
        title="IMDB test error: Miyato et al. (2017), Table 2, at CPU scale",
        config="configs/imdb.py",
        overrides=OVERRIDES,
        axes=(named_axis("method", METHODS),),
        seeds=(0, 1),
        metrics=(
            Metric(
                "error",
                "eval.accuracy",
                "test error (%)",
                scale=-100.0,
                offset=100.0,
                best="min",
                digits=2,
            ),
        ),
        table=Table(
            rows=("method",),
            references=(
                Reference(
                    "Miyato et al. 2017 (%)",
                    "error",
                    PUBLISHED,
                    note="1-layer LSTM pre-trained as a language model on the labelled and "
                    "unlabelled reviews, full reviews (400 words), eps 5 on normalised "
                    "embeddings. Their random perturbation: 7.20 with labelled examples "
                    "only (as our row, shown here), 6.78 with the unlabelled ones too.",
                ),
            ),
            notes=(
                "Test error on the first 2,000 of the 25,000 test reviews: one standard "
                "error is about 0.9 points at 20% error.",
                "Adversarial = FGM (L2 over the whole example), random = a random direction "
                "of the same norm, virtual adversarial = VAT with one power iteration "
                f"(xi {EPSILON / 10}) trained on train+unsup, adversarial + virtual "
                "adversarial = adv.method=fgm_vat (both perturbations, both terms) on "
                f"train+unsup; all at radius {EPSILON}. The perturbation leaves the "
                "readout token (the appended EOS) and BOS alone, as Miyato et al. mask EOS "
                "(adv.perturb_special=False); each pass draws its own dropout masks.",
                "This re-run (2026-12-01) has seed 0 only: the second seed did not fit the "
                "session; cells marked (1/2).",
            ),
        ),
        scaled_down=(
            "2-layer d_model-64 decoder-only transformer trained from scratch (the paper: "
            "a pre-trained 1-layer LSTM); reviews cut to 128 SentencePiece tokens (16k "
            f"vocabulary); {STEPS} steps of 32 labelled reviews (half an epoch), the two VAT "
            "rows with 64 unlabelled ones besides; 2 seeds; test error on 2,000 test "
            "reviews. Expect errors far above the paper's; compare the rows' order and gaps."
        ),
        budget=(
            "measured 2026-11-23 on 2 CPU cores with --parallel 2: seed 1 alone 21 min "
            "(baseline 2 min, random and FGM 3-4 min, VAT 12 min and FGM + VAT 13 min on "
            "batches of 96); seed 0, beside the test suite, 37 min; data preparation 2 min; "
            "1.64 h of run wall time in all"
        ),
    )
