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
    # classification head: auto = "last" for decoder (hidden state at the last non-pad
    # token), "mean" for encoder_decoder (mean encoder output); encoder_decoder also takes
    # "label_words" (decoder LM logits at label_token_ids, T5's text-to-text way)
    c.classifier_pooling = "auto"
    c.label_token_ids = (0,)  # encoder_decoder label_words: one token id per class
    c.num_decoder_layers = 0  # encoder_decoder decoder blocks; 0 = num_layers
    c.relative_buckets = 32  # encoder_decoder: relative position buckets (T5)
    c.relative_max_distance = 128  # encoder_decoder: distance beyond which buckets merge
    c.remat = False  # recompute each block's activations in the backward pass (less memory)
    c.scan_layers = False  # nn.scan over blocks: flat compile time in depth; params stacked
    # LoRA adapters (models/lora.py; defaults are PEFT's LoraConfig): base weights frozen,
    # only adapters (and a classification head) trained. rank 0 = off (full fine-tuning).
    c.lora = mlc.ConfigDict()
    c.lora.rank = 0
    c.lora.alpha = 8.0  # the update is (alpha / rank) * A @ B
    c.lora.targets = ("q", "v")  # any of q, k, v, o (attention), gate, up, down (MLP)
    c.lora.dropout = 0.0  # only 0: adapters are merged into the kernels
    c.lora.base_dtype = "float32"  # float32 | bfloat16: how the frozen base is stored
    return c


def task_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.name = "classification"  # classification | lm | seq2seq | chat
    c.num_classes = 0  # 0: taken from the dataset
    return c


def data_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    # Dataset: synthetic_* | sst2 | imdb | ag_news | multi30k | parallel_text | text_corpus |
    # wikitext2 | tiny_shakespeare | alpaca_seed | advbench | chat_file (task.name=chat) |
    # any other tfds.load name (glue/sst2, imdb_reviews, ...).
    c.name = "synthetic_sentiment"
    c.data_dir = ""  # root of user-placed files (<root>/sst2, ...); "" reads $LLAMA_ADV_DATA_DIR
    c.manual_dir = ""  # this dataset's own folder; "" = <data_dir>/<dataset's folder>
    c.cache_dir = ""  # prepared TFDS data, tokenizers; "" = $LLAMA_ADV_CACHE_DIR or ~/.cache
    # text_corpus / parallel_text: "train=train,validation=val" (file stems); chat_file:
    # "train=train.jsonl,validation=val.csv" (file names)
    c.split_files = ""
    c.text_field = ""  # feature holding the input (source) text; "" = the dataset's default
    c.label_field = ""  # classification label feature; "" = "label"
    c.target_field = ""  # seq2seq target text feature (makes the dataset seq2seq)
    c.skip_malformed = False  # skip and count malformed rows instead of failing on the first
    c.tokenizer = "byte"  # byte | sentencepiece | hf:/path/to/tokenizer.json
    c.vocab_size = 8000  # sentencepiece: vocabulary size (specials included)
    c.spm_model_type = "unigram"  # sentencepiece: unigram | bpe
    c.tokenizer_split = ""  # split the tokenizer is trained on; "" = train_split
    c.max_length = 32  # tokens per example (inputs); longer examples are truncated
    c.target_max_length = 32  # decoder-side length for seq2seq
    c.length_buckets = ()  # batch lengths (e.g. (64, 128, 256)); () = always max_length
    # train batches of similar length: global batches per length-sorted pool (HF Trainer's
    # group_by_length uses 50); 0 = random batches. Needs length_buckets.
    c.group_by_length = 0
    c.pack_eos = False  # lm packing: append EOS after each example (document-per-example data)
    # what the text is for: "" = from the features (labels -> classification, ...) | lm:
    # next-token prediction on the packed text, labels ignored (pre-training on IMDB) |
    # span_corruption: T5's objective, seq2seq batches (llama_adv/data/span_corruption.py)
    c.objective = ""
    c.extra_ids = 0  # ids appended past the tokenizer's vocabulary: T5's sentinels
    c.noise_density = 0.15  # span_corruption: fraction of tokens masked (T5: 0.15)
    c.mean_noise_span_length = 3.0  # span_corruption: mean masked span (T5: 3)
    c.train_split = "train"  # TFDS split syntax allowed, e.g. "train+unsup"
    c.num_train = 20000  # synthetic tasks: examples in the train split
    c.num_eval = 1000  # synthetic tasks: examples in validation and test
    c.seed = 0  # seed of the synthetic generator (independent of train.seed)
    # chat data (task.name=chat): harmful examples without an away target answer with this
    # refusal and keep their response (AdvBench's target) as the away target; "" = off
    # (synthetic_chat: "" uses its built-in refusal)
    c.chat_refusal = ""
    c.harmful_fraction = 0.125  # synthetic_chat: share of harmful prompts (CAT's 12.5%)
    return c


def adv_defaults() -> mlc.ConfigDict:
    # -1 (numbers) and "" (strings) mean "the method's own default" (METHODS.md table).
    c = mlc.ConfigDict()
    # none|random|r4f|fgsm|fgm|pgd|freeat|freelb|smart|vat|fgm_vat|alum|trades|adaptive|neftune
    # |cat|lat (chat models)
    c.method = "none"
    c.epsilon = 1.0  # perturbation radius (adaptive: every example's starting radius)
    # unit of epsilon and of absolute step sizes: absolute | embedding_rms (times the RMS
    # L2 norm of the embedding rows, from the current parameters; Xhonneux et al. 2024 use
    # 0.05 x the mean row norm)
    c.radius_unit = "absolute"
    c.unbounded = False  # no projection at all (FreeLB's max_norm 0); needs adv.step_size
    c.radius_schedule = "constant"  # constant | linear (ramp from 0 after begin_step)
    c.radius_ramp_steps = 0  # linear schedule: steps to reach epsilon
    c.norm = ""  # l2 | linf ("" = method default: linf for fgsm/trades/smart/alum)
    c.scope = ""  # example: whole sequence is one vector | token: each row of d_model
    # L-inf ascent step: sign | max_norm (g / ||g||_inf in the scope; freelb, smart, alum)
    c.linf_step = ""
    c.projection = ""  # ball: project onto the eps-ball | sphere: rescale onto it (SMART/ALUM code)
    c.steps = -1  # ascent steps K (vat: power iterations); pgd 3, freelb 2, trades 10
    c.step_size = -1.0  # ascent step alpha; 0 = 2.5 * radius / K; freelb 0.1, smart/alum 1e-3
    c.init = ""  # start of the ascent: zero | uniform (FreeLB scaling) | normal | sphere (random)
    c.init_magnitude = -1.0  # init scale (sigma for normal); smart/alum/random 1e-5
    c.inner = ""  # what the ascent maximises: ce | kl | reverse_kl | symmetric_kl (vs clean)
    c.divergence = ""  # divergence of the weight_div term: kl | reverse_kl | symmetric_kl
    # streams to perturb (comma-separated): all (every embedding stream) | inputs | encoder |
    # decoder | layer:N, the residual stream after block N (0-based; HF hidden_states[N+1];
    # the encoder's on an encoder-decoder), so LAT's layers ["embedding", 8, 16] are
    # "inputs,layer:8,layer:16". Radii stay absolute (LAT: eps 6.0 per token at Llama-3-8B,
    # adv.scope=token); embedding_rms is the embeddings' unit, not the latents' (larger)
    c.streams = "all"
    # tokens to perturb: all | prompt | response (the prompt_mask of task.name=chat batches)
    c.perturb_tokens = "all"
    # joint: the radius bounds an example's perturbed streams together (concatenated) |
    # per_stream: each stream alone (before: an encoder-decoder reached sqrt(2) eps)
    c.stream_geometry = "joint"
    c.skip_token_ids = ()  # token ids never perturbed besides padding, e.g. (1, 2) = BOS, EOS
    # also perturb the model's special tokens (classification readout, BOS); False: the
    # model leaves them out (Miyato et al. mask the EOS their classifier reads)
    c.perturb_special = False
    # dropout masks of an update's passes: shared (one key for all; freelb) | fresh (a new key
    # per pass; most methods) | eval (attack passes deterministic; trades) | "" = method's
    c.dropout = ""
    c.weight_clean = -1.0  # weight of L(x)
    c.weight_adv = -1.0  # weight of L(x + delta) (beta of Miyato et al. for fgm)
    c.weight_div = -1.0  # weight of D(p(x), p(x + delta)) (lambda of R3F/SMART/VAT, beta of TRADES)
    c.begin_step = 0  # adversary off before this step (clean training only)
    c.fgsm = mlc.ConfigDict()
    c.fgsm.random_start = False  # FGSM-RS: start at U(-eps, eps), step 1.25 eps, clip
    c.freeat = mlc.ConfigDict()
    c.freeat.replays = 3  # m: replays (optimizer steps) per batch
    c.freeat.carry = True  # keep delta from one batch to the next (the paper); False: from 0
    c.vat = mlc.ConfigDict()
    c.vat.xi = 0.1  # power-iteration probe radius
    c.smart = mlc.ConfigDict()
    c.smart.weight_breg = 1.0  # mu: weight of the Bregman proximal term
    c.smart.ema_early = 0.99  # teacher EMA decay before ema_switch_step
    c.smart.ema_late = 0.999  # teacher EMA decay from ema_switch_step on
    c.smart.ema_switch_step = -1  # -1: after 10% of train.num_steps, as in the paper
    c.random = mlc.ConfigDict()
    c.random.detach = True  # R3F's noisy pass on detached embeddings (fairseq); False: not
    c.r4f = mlc.ConfigDict()
    c.r4f.head = "classifier"  # parameter subtree of the classification head (kernel [D, C])
    c.neftune = mlc.ConfigDict()
    c.neftune.alpha = 5.0  # noise U(-1, 1) * alpha / sqrt(L_i * d) (Jain et al. 2023: 5)
    c.cat = mlc.ConfigDict()  # Xhonneux et al. 2024 (sophie-xhonneux/Continuous-AdvTrain)
    c.cat.loss = "ul"  # ul (C-AdvUL: toward + away + utility) | ipo (C-AdvIPO)
    c.cat.steps = 10  # signed-gradient attack steps on the prompt embeddings
    c.cat.step_size = 1e-4  # attack step (absolute, per coordinate: a signed step)
    c.cat.epsilon = 0.05  # per-token L2 radius, times the mean L2 norm of the embedding rows
    c.cat.away = "negative_cross_entropy"  # away term: negative_cross_entropy | log_1_minus_p
    c.cat.weight_toward = 0.5
    c.cat.weight_away = 0.5
    c.cat.weight_utility = 1.0
    c.cat.toward_cutoff = 0.5  # toward CE below this stops pulling (0.001 slope)
    c.cat.away_cutoff = -5.0  # away term (-CE) below this stops pushing
    c.cat.weight_ipo = 1.0  # ipo: weight of the IPO term
    c.cat.ipo_beta = 0.25  # ipo: beta
    c.lat = mlc.ConfigDict()  # Sheshadri et al. 2024 (aengusl/latent-adversarial-training)
    c.lat.targeted = True  # harmful-target attack + toward/away losses; False: Casper et al.
    c.lat.steps = 16  # adversary AdamW steps per batch
    c.lat.step_size = 1e-3  # adversary learning rate (Llama-3-8B setting; Llama-2: 5e-2)
    c.lat.weight_decay = 0.01  # adversary AdamW weight decay (torch's default)
    c.lat.grad_clip = 1.0  # adversary gradient clipping (global norm)
    c.lat.epsilon = 6.0  # per-token L2 bound of each stream's perturbation (absolute)
    c.lat.adv_toward = 0.5  # adversary: CE of the harmful target
    c.lat.adv_away = 0.5  # adversary: unlikelihood of the safe reply
    c.lat.def_toward = 0.5  # model: CE of the safe reply under attack
    c.lat.def_away = 0.5  # model: unlikelihood of the harmful target under attack
    c.lat.def_sft = 0.0  # model: CE on utility rows, clean (Llama-2 setting: 1.5)
    c.lat.def_kl = 0.1  # model: KL to the start-of-training model on utility rows
    c.lat.defense_steps = 4  # model updates per attack (model_iterations_per_step)
    c.adaptive = mlc.ConfigDict()
    c.adaptive.base = "pgd"  # attack and loss of each example at its radius: pgd | fgm | freelb
    c.adaptive.rule = "one"  # one: one attack per step | iaat: Balaji et al.'s extra check
    c.adaptive.gamma = 0.1  # radius change per visit
    c.adaptive.smoothing = 0.1  # b in eps_i <- b * new + (1 - b) * eps_i
    c.adaptive.eps_min = 0.0  # radii are clipped to [eps_min, eps_max]
    c.adaptive.eps_max = 4.0
    c.adaptive.warmup_steps = 0  # steps at adv.epsilon for all before radii adapt
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
    # Gradient accumulation: the batch runs as this many microbatches (every pass of the
    # method on each, activations of one microbatch at a time), one optimizer update.
    c.microbatches = 1
    c.log_every = 50  # steps between metric lines (the only host syncs)
    c.eval_every = 0  # steps between evaluations; 0 = only at the end
    c.progress_bar = True  # tqdm bar on a terminal; plain lines otherwise
    c.num_devices = 0  # devices of the mesh; 0 = all devices of all processes
    # Start from pre-trained parameters (fine-tuning): a run workdir (its best checkpoint),
    # RUN/checkpoints/STEP, or an `llama-adv import-hf --out` dir. Matching parameters are
    # copied, new ones (a task head) initialised; RUN/init_report.json lists both.
    c.init_from = ""
    return c


def mesh_defaults() -> mlc.ConfigDict:
    """Sizes of the device mesh's axes (product = train.num_devices; one may be -1 for the
    remaining devices). The batch is split over data x fsdp; parameters, optimizer and
    method state over fsdp (d_model) and tensor (heads, MLP, vocabulary)."""
    c = mlc.ConfigDict()
    c.data = -1  # data parallelism: every device holds all parameters
    c.fsdp = 1  # fully sharded data parallelism (ZeRO-3): parameters split along d_model
    c.tensor = 1  # tensor parallelism: heads, MLP width and vocabulary split
    return c


def eval_defaults() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.batch_size = 128  # global evaluation batch size
    c.split = "validation"  # split used for periodic and final evaluation
    c.max_examples = 0  # 0 = the whole split
    c.bleu = True  # seq2seq (encoder_decoder): also corpus BLEU of greedy decodes (sacrebleu)
    c.attack = mlc.ConfigDict()
    c.attack.method = "pgd"  # embedding attack at evaluation: pgd | fgm | none
    c.attack.epsilon = 1.0  # radius, in radius_unit
    # absolute | embedding_rms (epsilon and step_size times the RMS L2 norm of the
    # embedding rows, as adv.radius_unit)
    c.attack.radius_unit = "absolute"
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
    # named attack suite: default | embedding | discrete | noise | advset | generation
    c.suite = "default"
    c.epsilons = (0.0, 0.25, 0.5, 1.0, 2.0)  # L2 radii of the embedding-attack curve
    c.linf_epsilons = (0.0, 0.005, 0.01, 0.02, 0.05)  # L-inf radii (per coordinate)
    c.limit = 0  # examples to attack; 0 = the whole evaluation split
    c.split = ""  # split to attack; "" = eval.split
    c.batch_size = 100  # examples per batch for every attack
    c.seed = 0  # root of the attacks' random streams (PGD starts, char edits, noise)
    c.embedding_attacks = ("pgd_l2", "pgd_linf", "fgm_l2", "fgm_linf")  # method_norm
    c.scope = "example"  # embedding-attack ball: example (whole sequence) | token
    # absolute | embedding_rms: radii (and pgd_step_size) times the RMS L2 norm of the
    # embedding rows, as adv.radius_unit
    c.radius_unit = "absolute"
    c.pgd_steps = 10  # PGD ascent steps
    c.pgd_step_size = 0.0  # 0 = 2.5 * epsilon / pgd_steps (Madry et al.)
    c.bleu = True  # seq2seq: BLEU of greedy decodes at each radius (encoder stream attacked)
    c.discrete_attacks = ("hotflip", "deepwordbug")  # token substitution, character edits
    c.sub_budget = 0.2  # hotflip: max fraction of a text's tokens changed (at least 1)
    c.sub_neighbors = 20  # hotflip: candidates per token, nearest in the embedding table
    c.sub_candidates = 8  # hotflip: best first-order swaps evaluated per greedy step
    c.char_budget = 4  # deepwordbug: max Levenshtein distance between original and attack
    c.noise = ("delete", "duplicate", "swap")  # random word-noise baselines
    c.noise_rates = (0.1, 0.2)  # per-word probability of each noise operation
    c.adv_set = ""  # AdvGLUE-format .json or text<TAB>label .tsv file; "" = none
    c.adv_task = "sst2"  # task key inside an AdvGLUE JSON file
    c.num_saved_examples = 20  # rows of examples.jsonl per attack
    # suite=generation (chat and lm runs): attacks on the harmful behaviours of the split
    c.generation = mlc.ConfigDict()
    c.generation.attacks = ("gcg", "embedding")
    # AdvBench-style goal,target CSV of behaviours; "" = the split's harmful rows (chat runs)
    c.generation.behaviours = ""
    c.generation.gcg_steps = 250  # nanoGCG defaults: 250 steps, width 512, top-k 256
    c.generation.gcg_search_width = 512
    c.generation.gcg_topk = 256
    c.generation.gcg_batch_size = 0  # candidates per forward; 0 = all at once
    c.generation.embedding_steps = 100  # Schwinn et al.: 100 signed steps of 0.001
    c.generation.embedding_step_size = 0.001
    c.generation.embedding_perturb = "suffix"  # suffix | prompt | both
    c.generation.max_new_tokens = 32  # greedy generation judged (llm-attacks' demo)
    c.generation.behaviour_batch = 8  # behaviours attacked together
    return c


SECTIONS = {
    "model": model_defaults,
    "task": task_defaults,
    "data": data_defaults,
    "adv": adv_defaults,
    "optim": optim_defaults,
    "train": train_defaults,
    "mesh": mesh_defaults,
    "eval": eval_defaults,
    "checkpoint": checkpoint_defaults,
    "robustness": robustness_defaults,
}


def get_default_config() -> mlc.ConfigDict:
    """Returns the full default config, locked (unknown keys are errors)."""
    config = mlc.ConfigDict({name: make() for name, make in SECTIONS.items()})
    config.lock()
    return config


def shrink_for_tests(config: mlc.ConfigDict) -> mlc.ConfigDict:
    """The ``tiny`` variant shared by the real-data configs: a 1-layer, 32-wide model,
    4 steps of 8 examples, 64 evaluation examples, one-step evaluation attack. Each config
    then cuts its own data (splits, lengths). Returns ``config``, changed in place."""
    config.model.d_model, config.model.num_layers, config.model.d_ff = 32, 1, 64
    config.train.num_steps, config.train.log_every, config.train.eval_every = 4, 2, 0
    config.train.batch_size, config.eval.batch_size, config.eval.max_examples = 8, 32, 64
    config.optim.warmup_steps = 1
    config.eval.attack.steps = 1
    config.checkpoint.every_steps = 4
    return config
