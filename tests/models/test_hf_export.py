"""``llama-adv export-hf``: our runs as Hugging Face checkpoints (the importer's inverse).

Tiny runs (checkpoints of initialised params plus noise) are exported, loaded with
``transformers`` (torch, CPU, float32) and their logits compared with ours on the real
positions of a padded batch;
importing an export gives back the exact params; bad input exits 2 and writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_helpers import init, make, padded

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.models.hf_export import _flat, _unstacked, export_hf, export_model
from llama_adv.models.hf_import import import_hf
from llama_adv.robustness.loading import load_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4
MODEL = ("model.d_model=32", "model.num_layers=2", "model.num_heads=4", "model.d_ff=48")
RUN = ("train.progress_bar=False", "train.log_every=2", "eval.attack.method=none",
       "data.num_eval=16", "eval.batch_size=16", "checkpoint.best_metric=")  # fmt: skip


def _run(workdir: Path, *overrides: str, steps: tuple[int, ...] = (2,)) -> Path:
    """A run's workdir without training (compiling a train step would take most of the
    test's time): ``config.json`` and, per step, a checkpoint of freshly initialised
    params with noise added (so that norm scales and biases are not all ones or zeros).
    ``steps=()`` writes no checkpoint."""
    from llama_adv.config import load_config, to_json
    from llama_adv.train.checkpoint import Checkpointer
    from llama_adv.train.loop import create_state
    from llama_adv.train.mesh import make_mesh
    from llama_adv.train.optimizer import make_optimizer, make_schedule
    from llama_adv.train.setup import build_experiment

    config = load_config(f"{REPO / 'configs' / 'quickstart.py'}:tiny", (*MODEL, *RUN, *overrides))
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(to_json(config) + "\n")
    if not steps:
        return workdir
    exp = build_experiment(config)
    optimizer = make_optimizer(config.optim, make_schedule(config.optim, config.train.num_steps))
    state = create_state(exp, config, optimizer, make_mesh())
    ckpt = Checkpointer(workdir / "checkpoints", keep=len(steps))
    try:
        for step in steps:
            leaves, tree = jax.tree.flatten(state.params)
            keys = jax.random.split(jax.random.key(step), len(leaves))
            noisy = [x + 0.1 * jax.random.normal(k, x.shape)
                     for x, k in zip(leaves, keys, strict=True)]  # fmt: skip
            params = jax.tree.unflatten(tree, noisy)
            ckpt.save(state.replace(step=jnp.asarray(step, jnp.int32), params=params),
                      {"data_position": step})  # fmt: skip
    finally:
        ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A decoder LM (GQA, untied head), checkpoints at steps 2 and 4."""
    return _run(
        tmp_path_factory.mktemp("runs") / "lm",
        "data.name=synthetic_lm", "task.name=lm", "model.num_kv_heads=2",
        "model.tie_embeddings=False", steps=(2, 4),
    )  # fmt: skip


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory) -> Path:
    """An encoder-decoder (scanned layers, tied head) on synthetic_reverse."""
    return _run(
        tmp_path_factory.mktemp("runs") / "seq2seq",
        "model.name=encoder_decoder", "data.name=synthetic_reverse", "task.name=seq2seq",
        "data.max_length=8", "data.target_max_length=8", "model.scan_layers=True",
        "model.relative_buckets=8", "model.relative_max_distance=16",
    )  # fmt: skip


@pytest.fixture(scope="module")
def lm_export(lm_run, tmp_path_factory):
    """``llama-adv export-hf`` of ``lm_run``: ``(out, printed lines)``."""
    out, printed = tmp_path_factory.mktemp("export") / "hf", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export-hf", "--workdir", str(lm_run), "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def seq2seq_export(seq2seq_run, tmp_path_factory) -> Path:
    return export_hf(seq2seq_run, tmp_path_factory.mktemp("export") / "hf")


@functools.cache
def _restored(workdir: Path):
    """The run's model and its exported (best, else latest) params, on the host: applied
    unjitted on one device rather than replicated on the tests' four."""
    run = load_run(workdir)
    return run.exp.model, jax.device_get(run.params)


def _torch(x: np.ndarray):
    return torch.tensor(np.asarray(x), dtype=torch.long)


def _max_diff(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(ours) - ref)[mask]))


def test_decoder_lm_run_matches_llama_for_causal_lm(lm_run, lm_export):
    out, printed = lm_export
    assert "step 4 as LlamaForCausalLM" in printed  # no best tracked: the latest
    assert "tokenizer not copied: data.tokenizer=byte" in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

    model, params = _restored(lm_run)
    tokens = np.asarray(padded(np.random.default_rng(0), [9, 5, 1], 9))
    mask = tokens != 0
    ours = model.apply(params, {"inputs": tokens})["logits"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        ref = hf(input_ids=_torch(tokens), attention_mask=_torch(mask)).logits.numpy()
    assert _max_diff(ours, ref, mask) <= TOLERANCE


def test_encoder_decoder_run_matches_t5(seq2seq_run, seq2seq_export):
    model, params = _restored(seq2seq_run)
    rng = np.random.default_rng(1)
    # Longer than relative_max_distance: the logarithmic buckets count too.
    encoder = np.array(padded(rng, [20, 6, 3], 20))
    decoder = np.array(padded(rng, [18, 4, 2], 18))
    decoder[:, 0] = 1  # our BOS starts the decoder
    batch = {"encoder_inputs": encoder, "decoder_inputs": decoder}
    ours = model.apply(params, batch)["logits"]
    hf = transformers.T5ForConditionalGeneration.from_pretrained(seq2seq_export).eval()
    with torch.no_grad():
        ref = hf(
            input_ids=_torch(encoder), attention_mask=_torch(encoder != 0),
            decoder_input_ids=_torch(decoder),
        ).logits.numpy()  # fmt: skip
    assert _max_diff(ours, ref, decoder != 0) <= TOLERANCE


def _assert_same(imported, params) -> None:
    ours = {k: np.asarray(v) for k, v in _flat(_unstacked(jax.device_get(params))).items()}
    theirs = {k: np.asarray(v) for k, v in _flat(imported).items()}
    assert sorted(theirs) == sorted(ours)
    for name, value in ours.items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)


def test_import_of_an_exported_run_gives_its_params(lm_run, lm_export, seq2seq_run,
                                                    seq2seq_export):  # fmt: skip
    _assert_same(import_hf(lm_export[0], "llama")[1], _restored(lm_run)[1])
    _assert_same(import_hf(seq2seq_export, "t5")[1], _restored(seq2seq_run)[1])


@pytest.mark.parametrize(
    "name,fields",
    [("decoder", {"tie_embeddings": True, "scan_layers": True}),
     ("decoder", {"num_kv_heads": 1, "head_dim": 16, "rope_theta": 500.0}),
     ("encoder_decoder", {"tie_embeddings": False, "num_decoder_layers": 3})],
)  # fmt: skip
def test_import_of_export_is_exact_for_model_variants(tmp_path, name, fields):
    model = make(name, **fields)
    tokens = padded(np.random.default_rng(0), [4, 2], 4)
    batch = {"inputs": tokens}
    if name == "encoder_decoder":
        batch = {"encoder_inputs": tokens, "decoder_inputs": tokens}
    params = init(model, batch)
    out = export_model(model, params, tmp_path / "hf")
    _, imported, _ = import_hf(out, "llama" if name == "decoder" else "t5")
    _assert_same(imported, params)


def test_decoder_classifier_with_zero_bias_is_llama_for_sequence_classification(tmp_path):
    model = make("decoder", head="classification", num_classes=3)
    tokens = np.asarray(padded(np.random.default_rng(2), [7, 3, 1], 7))
    params = init(model, {"inputs": tokens})
    params["classifier"]["kernel"] = jax.random.normal(jax.random.key(1), (32, 3))
    out = export_model(model, params, tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    with torch.no_grad():
        ref = hf(input_ids=_torch(tokens), attention_mask=_torch(tokens != 0)).logits.numpy()
    ours = np.asarray(model.apply(params, {"inputs": tokens})["logits"])
    assert float(np.max(np.abs(ours - ref))) <= TOLERANCE

    params["classifier"]["bias"] = params["classifier"]["bias"].at[1].set(0.5)
    with pytest.raises(UserError, match="score layer has no bias"):
        export_model(model, params, tmp_path / "biased")
    assert not (tmp_path / "biased").exists()


def test_refused_trees_write_nothing(tmp_path):
    model = make("encoder_decoder", head="classification", num_classes=2)
    params = init(model, {"inputs": padded(np.random.default_rng(0), [3], 3)})
    with pytest.raises(UserError, match="mean pooling"):
        export_model(model, params, tmp_path / "mean")
    decoder = make("decoder")
    params = init(decoder, {"inputs": padded(np.random.default_rng(0), [3], 3)})
    params["block_0"]["attention"]["query"]["lora_a"] = np.zeros((32, 2), np.float32)
    with pytest.raises(UserError, match=r"unexpected block_0/attention/query/lora_a.*LoRA"):
        export_model(decoder, params, tmp_path / "lora")
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_file_is_copied(tmp_path):
    model = make("decoder")
    params = init(model, {"inputs": padded(np.random.default_rng(0), [3], 3)})
    (tmp_path / "tokenizer.json").write_text('{"model": {}}')
    out = export_model(model, params, tmp_path / "hf", tokenizer_file=tmp_path / "tokenizer.json")
    assert (out / "tokenizer.json").read_text() == '{"model": {}}'


# -- bad input through the CLI: exit 2, one line, nothing written --------------------------


def _fails(capsys, *argv: str) -> str:
    assert main(["export-hf", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llama-adv: error: "), captured.err
    return lines[0]


def test_workdir_without_checkpoint(tmp_path, capsys):
    _run(tmp_path / "run", steps=())
    line = _fails(capsys, "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "out"))
    assert "holds no checkpoint; train the run first" in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.json"]
    line = _fails(capsys, "--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "out"))
    assert "holds no config.json" in line


def test_non_empty_out_needs_overwrite(lm_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _fails(capsys, "--workdir", str(lm_run), "--out", str(out))
    assert "exists and is not empty; pass --overwrite" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())

    argv = ["export-hf", "--workdir", str(lm_run), "--out", str(out), "--overwrite", "--step", "2"]
    assert main(argv) == 0
    assert "step 2 as LlamaForCausalLM" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_bad_step_and_out_over_the_run(lm_run, tmp_path, capsys):
    line = _fails(capsys, "--workdir", str(lm_run), "--out", str(tmp_path / "out"), "--step", "3")
    assert "has no step 3; it has 2, 4" in line
    line = _fails(capsys, "--workdir", str(lm_run), "--out", str(lm_run), "--overwrite")
    assert "would replace the run" in line
    assert not (tmp_path / "out").exists()


def test_run_with_no_hf_layout(tmp_path, capsys):
    """The quickstart classifier on the encoder-decoder: mean pooling has no HF class."""
    workdir = _run(tmp_path / "run", "model.name=encoder_decoder", "model.relative_buckets=8",
                   "model.relative_max_distance=16")  # fmt: skip
    capsys.readouterr()  # the set-up's own output
    line = _fails(capsys, "--workdir", str(workdir), "--out", str(tmp_path / "out"))
    assert "mean pooling" in line and "classifier_pooling=label_words" in line
    assert not (tmp_path / "out").exists()
