"""Default values for every config section, one commented field per line.

``configs/*.py`` start from :func:`get_default_config` and change what they need. The
returned config is locked: assigning a key that does not exist is an error.
"""

from __future__ import annotations

import ml_collections as mlc


def model_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.name = "decoder"  # registry name: decoder (LLaMA-style) | encoder_decoder (T5-style)
    c.preset = ""  # named size preset; "" uses the fields below
    c.vocab_size = 0  # 0: taken from the tokenizer of the data section
    c.d_model = 64  # width of the residual stream
    c.num_layers = 2  # transformer blocks (per stack for encoder_decoder)
    c.num_heads = 4  # attention heads
    c.num_kv_heads = 0  # key/value heads for grouped-query attention; 0 = num_heads
    c.head_dim = 0  # 0 = d_model // num_heads
    c.d_ff = 192  # hidden width of the gated MLP
    c.dropout_rate = 0.0  # dropout on attention output and MLP output
    c.rope_theta = 10000.0  # rotary embedding base
    c.norm_eps = 1e-6  # RMSNorm epsilon
    c.tie_embeddings = True  # share the token embedding with the LM head
    c.dtype = "float32"  # computation dtype: float32 | bfloat16 (parameters stay float32)
    c.classifier_pooling = "last"  # decoder classification: hidden state at last non-pad token
    return c


def task_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.name = "classification"  # classification | lm | seq2seq
    c.num_classes = 0  # 0: taken from the dataset
    return c


def data_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.name = "synthetic_sentiment"  # dataset registry name
    c.data_dir = ""  # root of user-placed files; "" reads $LLAMA_ADV_DATA_DIR
    c.max_length = 32  # tokens per example (inputs); longer examples are truncated
    c.target_max_length = 32  # decoder-side length for seq2seq
    c.train_split = "train"
    c.eval_split = "validation"
    c.num_train = 20000  # synthetic tasks: examples in the train split
    c.num_eval = 1000  # synthetic tasks: examples in validation and test
    c.seed = 0  # seed of the synthetic generator (independent of train.seed)
    return c


def adv_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.method = "none"  # adversarial training method (registry name)
    c.epsilon = 1.0  # perturbation radius
    c.norm = "l2"  # l2 | linf
    c.scope = "example"  # example: whole sequence is one vector | token: each row of d_model
    c.streams = "all"  # streams to perturb: all | inputs | encoder | decoder (comma-separated)
    c.weight_clean = 1.0  # weight of L(x)
    c.weight_adv = 1.0  # weight of L(x + delta) (beta of Miyato et al. for fgm)
    c.weight_div = 0.0  # weight of the divergence D(p(x), p(x + delta))
    c.begin_step = 0  # adversary off before this step (clean training only)
    return c


def optim_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.name = "adamw"  # adamw | sgd
    c.learning_rate = 1e-3  # peak learning rate
    c.weight_decay = 0.01  # decoupled weight decay (adamw)
    c.b1 = 0.9
    c.b2 = 0.999
    c.eps = 1e-8
    c.momentum = 0.9  # sgd momentum (0 disables)
    c.warmup_steps = 100  # linear warm-up from 0
    c.schedule = "cosine"  # decay after warm-up: cosine | linear | constant
    c.end_learning_rate_factor = 0.0  # final lr as a fraction of the peak
    c.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    return c


def train_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.seed = 0  # root of every random stream of the run
    c.num_steps = 1000  # optimizer updates
    c.batch_size = 32  # global batch size (all devices of all processes)
    c.log_every = 50  # steps between metric lines (the only host syncs)
    c.eval_every = 0  # steps between evaluations; 0 = only at the end
    c.progress_bar = True  # tqdm bar on a terminal; plain lines otherwise
    return c


def eval_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.batch_size = 128  # global evaluation batch size
    c.split = "validation"  # split used for periodic and final evaluation
    c.max_examples = 0  # 0 = the whole split
    c.attack = mlc.ConfigDict()
    c.attack.method = "pgd"  # embedding attack at evaluation: pgd | fgm | none
    c.attack.epsilon = 1.0  # radius
    c.attack.norm = "l2"  # l2 | linf
    c.attack.scope = "example"  # example | token
    c.attack.steps = 5  # pgd ascent steps
    c.attack.step_size = 0.0  # 0 = 2.5 * epsilon / steps (Madry et al.)
    return c


def checkpoint_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.every_steps = 500  # steps between checkpoints (also saved at the end and on Ctrl-C)
    c.keep = 2  # most recent checkpoints kept
    c.best_metric = "accuracy"  # eval metric that selects the best checkpoint ("" disables)
    c.best_mode = "max"  # max | min
    return c


def robustness_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.suite = "default"  # named attack suite
    c.epsilons = (0.0, 0.25, 0.5, 1.0, 2.0)  # radii of the embedding-attack curve
    c.limit = 0  # examples to attack; 0 = the whole evaluation split
    return c


SECTIONS = {
    "model": model_defaults,
    "task": task_defaults,
    "data": data_defaults,
    "adv": adv_defaults,
    "optim": optim_defaults,
    "train": train_defaults,
    "eval": eval_defaults,
    "checkpoint": checkpoint_defaults,
    "robustness": robustness_defaults,
}


def get_default_config() -> mlc.ConfigDict:
    """Returns the full default config, locked (unknown keys are errors)."""
    config = mlc.ConfigDict({name: make() for name, make in SECTIONS.items()})
    config.lock()
    return config
