"""LoRA (``model.lora``): merging as PEFT does, training only the adapters, export to PEFT.

Our merge ``W + (alpha / r) * A @ B`` (``x @ W`` layout) is checked against PEFT's
``merge_and_unload`` of the same factors on tiny ``transformers`` models imported with our
importer; a few real train steps change only the adapters and the head, and resume exactly;
``export-hf`` of a LoRA LM run loads in ``transformers`` + ``peft`` (and ``--merged`` alone)
with our logits.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_helpers import padded

from llama_adv.cli import main
from llama_adv.config import load_config
from llama_adv.errors import UserError
from llama_adv.models import build_model
from llama_adv.models.hf_export import _flat, _unstacked, peft_adapter
from llama_adv.models.hf_import import import_hf
from llama_adv.models.lora import Lora
from llama_adv.robustness.loading import load_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = f"{REPO / 'configs' / 'quickstart.py'}:tiny"
TOLERANCE = 1e-4
MODEL = ("model.d_model=32", "model.num_layers=2", "model.num_heads=4", "model.d_ff=48")
# Short runs: no attack at evaluation, a small eval split.
RUN = ("train.progress_bar=False", "eval.attack.method=none", "data.num_eval=16",
       "eval.batch_size=16", "checkpoint.best_metric=")  # fmt: skip
ALL_TARGETS = "model.lora.targets=('q', 'k', 'v', 'o', 'gate', 'up', 'down')"


def _hf_model(arch: str, path: Path) -> Path:
    """A randomly initialised tiny ``LlamaForCausalLM`` (GQA) or T5 v1.1 saved to ``path``."""
    torch.manual_seed(0)
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=23, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.T5Config(
            vocab_size=23, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_decoder_layers=1,
            num_heads=4, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
        )  # fmt: skip
        model = transformers.T5ForConditionalGeneration(config)
    model.save_pretrained(path)
    return path


def _with_random_b(adapters, seed: int = 1):
    """``adapters`` with every ``B`` drawn at random (fresh ones are zero: no update)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape) if path[-1].key == "b" else x
           for (path, x), k in zip(leaves, keys, strict=True)]  # fmt: skip
    return jax.tree.unflatten(tree, new)


def _write_adapter(folder: Path, config: dict, tensors: dict) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_merge_equals_peft_merge_and_unload(arch, tmp_path):
    base = _hf_model(arch, tmp_path / "base")
    section, params, _ = import_hf(base, arch)
    model = build_model(section, head="lm", vocab_size=section.vocab_size, num_classes=0)
    # o (two input dims) and down (a dense kernel) besides q and v (head-split outputs).
    lora = Lora(rank=4, alpha=16.0, targets=("q", "v", "o", "down"))
    adapters = _with_random_b(lora.init(jax.random.key(0), params))
    ours = lora.combine(params, {"lora": adapters})

    config, tensors = peft_adapter(model, lora, adapters, str(base))
    auto = {"llama": transformers.AutoModelForCausalLM, "t5": transformers.AutoModelForSeq2SeqLM}
    adapter = _write_adapter(tmp_path / "adapter", config, tensors)
    merged = peft.PeftModel.from_pretrained(auto[arch].from_pretrained(base), adapter)
    merged.merge_and_unload().save_pretrained(tmp_path / "merged")
    theirs = import_hf(tmp_path / "merged", arch)[1]

    ours, theirs, base_flat = _flat(ours), _flat(theirs), _flat(params)
    assert ours.keys() == theirs.keys()
    changed = set()
    for path, value in ours.items():
        np.testing.assert_allclose(value, theirs[path], atol=1e-6, err_msg=path)
        if not np.array_equal(value, base_flat[path]):
            changed.add(path.split("/")[-2])
    assert changed == {"query", "value", "out", "down"}  # every target, nothing else


def _config(*overrides: str):
    return load_config(QUICKSTART, (*RUN, *overrides))


def train_losses(workdir: Path) -> dict[int, float]:
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses


# A LoRA classification run of 4 steps, a loss logged at each, a checkpoint every 2.
TRAINED = ("model.lora.rank=4", "train.num_steps=4", "train.log_every=1",
           "checkpoint.every_steps=2")  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from llama_adv.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("lora") / "whole"
    train_and_evaluate(_config(*TRAINED), workdir)
    return workdir


def test_training_changes_only_the_adapters_and_the_head(trained):
    from llama_adv.models.base import count_params
    from llama_adv.train.loop import init_params

    run = load_run(trained)
    assert run.step == 4
    # The base model as the run's seed initialises it, independently of LoRA.
    fresh = _flat(jax.device_get(init_params(run.exp, run.config, run.mesh)))
    merged = _flat(jax.device_get(run.params))
    assert merged.keys() == fresh.keys()
    for path, value in merged.items():
        module = path.split("/")[-2]
        if path.startswith("classifier/"):
            assert not np.array_equal(value, fresh[path]), path  # the head trains
        elif module in ("query", "value") and path.endswith("/kernel"):
            assert not np.array_equal(value, fresh[path]), path
        else:
            np.testing.assert_array_equal(value, fresh[path], err_msg=path)

    # The train state (and so the checkpoint) holds the adapters and the head only.
    assert set(run.trainable) == {"lora", "classifier"}
    adapters = _flat(run.trainable["lora"])
    assert {p.split("/")[-3] for p in adapters} == {"query", "value"}
    assert {p.split("/")[-1] for p in adapters} == {"a", "b"}
    assert all(np.any(np.asarray(v) != 0) for v in adapters.values())  # B has moved off 0
    d, r, layers = run.config.model.d_model, 4, run.config.model.num_layers
    assert count_params(run.trainable["lora"]) == layers * 2 * (d * r + r * d)
    checkpoint = trained / "checkpoints" / "4"
    on_disk = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    assert on_disk < 4 * count_params(run.frozen)  # less than the float32 base alone


def test_resumed_lora_run_matches_uninterrupted(trained, tmp_path, monkeypatch):
    from llama_adv.data.pipeline import TrainStream
    from llama_adv.train import train_and_evaluate

    config = _config(*TRAINED)
    original = TrainStream.batch

    def crash_at_3(self, position):
        if position == 3:
            raise RuntimeError("simulated crash")
        return original(self, position)

    monkeypatch.setattr(TrainStream, "batch", crash_at_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(TrainStream, "batch", original)
    checkpoints = {p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()}
    assert "2" in checkpoints and "4" not in checkpoints
    train_and_evaluate(config, tmp_path / "resumed")  # steps 3 and 4 on a re-created base

    whole, resumed = train_losses(trained), train_losses(tmp_path / "resumed")
    assert sorted(whole) == [1, 2, 3, 4]
    assert whole == resumed  # exact, every step


def _lora_run(workdir: Path, *overrides: str) -> Path:
    """A LoRA run's workdir without training: ``config.json`` and a step-2 checkpoint whose
    adapters (``A`` and ``B``) have noise added, so that they change the model."""
    from llama_adv.config import to_json
    from llama_adv.train.checkpoint import Checkpointer
    from llama_adv.train.loop import create_state
    from llama_adv.train.mesh import make_mesh
    from llama_adv.train.optimizer import make_optimizer, make_schedule
    from llama_adv.train.setup import build_experiment

    config = _config(*MODEL, "model.lora.rank=4", *overrides)
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(to_json(config) + "\n")
    exp = build_experiment(config)
    optimizer = make_optimizer(config.optim, make_schedule(config.optim, config.train.num_steps))
    state = create_state(exp, config, optimizer, make_mesh())
    params = {**state.params, "lora": _with_random_b(state.params["lora"], seed=2)}
    ckpt = Checkpointer(workdir / "checkpoints", keep=1)
    try:
        ckpt.save(state.replace(step=jnp.asarray(2, jnp.int32), params=params),
                  {"data_position": 2})  # fmt: skip
    finally:
        ckpt.close()
    return workdir


def _export(workdir: Path, out: Path, *flags: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export-hf", "--workdir", str(workdir), "--out", str(out), *flags]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A LoRA decoder LM on every projection: GQA, untied head, scanned layers."""
    return _lora_run(
        tmp_path_factory.mktemp("runs") / "lm",
        "data.name=synthetic_lm", "task.name=lm", "model.num_kv_heads=2",
        "model.tie_embeddings=False", "model.scan_layers=True", ALL_TARGETS,
    )  # fmt: skip


def test_lm_export_loads_in_peft_and_merged_alone(lm_run, tmp_path):
    out, merged_out = tmp_path / "hf", tmp_path / "merged"
    printed = _export(lm_run, out)
    assert "frozen base" in printed and "LoRA adapter (r=4 on down_proj" in printed
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # fmt: skip
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.0)
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj",
                                        "q_proj", "up_proj", "v_proj"]  # fmt: skip
    assert config["base_model_name_or_path"] == str(out.resolve())
    assert "LoRA merged" in _export(lm_run, merged_out, "--merged")
    assert not (merged_out / "adapter").exists()

    run = load_run(lm_run)
    tokens = np.asarray(padded(np.random.default_rng(0), [9, 5, 1], 9))
    mask = tokens != 0
    ours = np.asarray(run.exp.model.apply(jax.device_get(run.params), {"inputs": tokens})["logits"])
    batch = {"input_ids": torch.tensor(tokens, dtype=torch.long),
             "attention_mask": torch.tensor(mask, dtype=torch.long)}  # fmt: skip

    def logits(model) -> np.ndarray:
        with torch.no_grad():
            return model.eval()(**batch).logits.numpy()

    base = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert np.max(np.abs(logits(base) - ours)[mask]) > 1e-2  # unmerged: the adapters matter
    adapted = peft.PeftModel.from_pretrained(base, out / "adapter")
    assert np.max(np.abs(logits(adapted) - ours)[mask]) <= TOLERANCE
    alone = transformers.AutoModelForCausalLM.from_pretrained(merged_out)
    assert np.max(np.abs(logits(alone) - ours)[mask]) <= TOLERANCE


def test_classification_lora_run_needs_merged(tmp_path, capsys):
    run = _lora_run(tmp_path / "cls")  # the quickstart: a decoder classifier
    out = tmp_path / "hf"
    assert main(["export-hf", "--workdir", str(run), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "task head (classifier)" in error and "--merged" in error
    assert not out.exists()
    assert "LlamaForSequenceClassification (LoRA merged" in _export(run, out, "--merged")
    assert not (out / "adapter").exists()


def test_bad_targets_name_the_field():
    section = {"rank": 4, "alpha": 8.0, "targets": ("q", "qq"), "dropout": 0.0,
               "base_dtype": "float32"}  # fmt: skip
    with pytest.raises(UserError, match=r"model\.lora\.targets=\('q', 'qq'\) is invalid"):
        Lora.from_config(section)
    with pytest.raises(UserError, match=r"model\.lora\.targets=\(\) is invalid"):
        Lora.from_config({**section, "targets": ()})
    # A model without MLP kernels (here: a decoder's tree with them removed) has no gate.
    model = build_model(load_config(QUICKSTART).model, head="lm", vocab_size=23, num_classes=0)
    params = model.init(jax.random.key(0), {"inputs": jnp.ones((1, 4), jnp.int32)})
    params = _unstacked({k: {n: m for n, m in v.items() if n != "mlp"} if k.startswith("block")
                         else v for k, v in params.items()})  # fmt: skip
    with pytest.raises(UserError, match=r"model\.lora\.targets=\('gate',\) match no kernel"):
        Lora(rank=4, alpha=8.0, targets=("gate",)).init(jax.random.key(0), params)
