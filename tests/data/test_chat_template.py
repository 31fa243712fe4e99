"""Chat templates render exactly as transformers' ``apply_chat_template``, ids included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llama_adv.data.chat import encode_chat
from llama_adv.data.chat_template import BuiltinChatFormat, HFChatTemplate, chat_format
from llama_adv.data.tokenizers import HFTokenizer, WordTokenizer
from llama_adv.errors import UserError

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)
# Exercises the environment: namespace, loop controls, {% generation %}, tojson (no HTML
# escaping, no ASCII escaping), whitespace control.
FEATURES = (
    "{% set ns = namespace(n=0) %}\n"
    "{% for m in messages %}\n"
    "    {% set ns.n = ns.n + 1 %}\n"
    "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
    "    {% generation %}[{{ m.role }}#{{ ns.n }}] {{ m.content | tojson }}{% endgeneration %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
SPECIALS = [
    "<pad>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "<|user|>", "<|assistant|>", "<|system|>", "</s>",
]  # fmt: skip
CONVERSATIONS = [
    [{"role": "user", "content": "hello world"}],
    [
        {"role": "user", "content": "Sort: river apple"},
        {"role": "assistant", "content": "apple river"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "how are you? <b>&é"},
        {"role": "assistant", "content": "I am fine, thank you."},
        {"role": "user", "content": "  and now?  "},
    ],
]


def write_tokenizer(folder: Path, template: str, eos: str) -> Path:
    """A byte-level BPE ``tokenizer.json`` (newline runs kept whole, as LLaMA-3's) and a
    ``tokenizer_config.json`` carrying ``template``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s*[\r\n]+|\s+(?!\S)|\s+| ?[^\s]+"), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = "hello world, how are you? I am fine, thank you.\n\nSort: river apple. Be brief."
    tok.train_from_iterator([text] * 10, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": eos, "special": True, "__type": "AddedToken"},
        "pad_token": "<pad>",
        "chat_template": template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder / "tokenizer.json"


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize(
    "template,eos", [(LLAMA3, "<|eot_id|>"), (ZEPHYR, "</s>"), (FEATURES, "</s>")]
)
def test_rendering_equals_transformers(tmp_path, template, eos):
    transformers = pytest.importorskip("transformers")
    path = write_tokenizer(tmp_path, template, eos)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = chat_format(HFTokenizer(path))
    assert isinstance(ours, HFChatTemplate)
    for messages in CONVERSATIONS:
        for generation_prompt in (False, True):
            expected = reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
            assert ours.render(messages, generation_prompt) == expected


@pytest.mark.parametrize("template,eos", [(LLAMA3, "<|eot_id|>"), (ZEPHYR, "</s>")])
def test_chat_ids_equal_transformers(tmp_path, template, eos):
    transformers = pytest.importorskip("transformers")
    path = write_tokenizer(tmp_path, template, eos)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    pairs = [("hello world", "I am fine"), ("Sort: river apple", "apple river"),
             ("how are you?", "fine, thank you.")]  # fmt: skip
    arrays = encode_chat(HFTokenizer(path), [p for p, _ in pairs], [r for _, r in pairs],
                         max_length=96)  # fmt: skip
    for row, (prompt, response) in enumerate(pairs):
        user = [{"role": "user", "content": prompt}]
        chat = user + [{"role": "assistant", "content": response}]
        prompt_ids = _ids(reference.apply_chat_template(user, add_generation_prompt=True))
        full_ids = _ids(reference.apply_chat_template(chat))
        n = int((arrays["targets"][row] != 0).sum())
        seq = [int(arrays["inputs"][row, 0])] + arrays["targets"][row, :n].tolist()
        assert seq == full_ids
        p = int(arrays["prompt_mask"][row].sum())
        assert arrays["inputs"][row, :p].tolist() == prompt_ids
        # the loss counts exactly the tokens after the prompt (the reply, end-of-turn too)
        weight = arrays["target_weight"][row]
        assert weight.sum() == len(full_ids) - len(prompt_ids)
        assert np.all(weight[: p - 1] == 0) and np.all(weight[p - 1 : n] == 1)


def test_chat_template_file_and_named_templates(tmp_path):
    path = write_tokenizer(tmp_path, ZEPHYR, "</s>")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "x"},
                               {"name": "default", "template": LLAMA3}]  # fmt: skip
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert chat_format(HFTokenizer(path)).source == LLAMA3
    (tmp_path / "chat_template.jinja").write_text(FEATURES)  # takes precedence
    assert chat_format(HFTokenizer(path)).source == FEATURES


def test_builtin_format_without_template(tmp_path):
    path = write_tokenizer(tmp_path, "", "</s>")
    assert isinstance(chat_format(HFTokenizer(path)), BuiltinChatFormat)
    tok = WordTokenizer(["User:", "Assistant:", "hi", "there"])
    a = encode_chat(tok, ["hi"], ["there"], max_length=8)
    # <bos> User: hi Assistant: | there <eos>
    assert a["inputs"][0, :5].tolist() == [1, 4, 6, 5, 7]
    assert a["prompt_mask"][0].tolist() == [True] * 4 + [False] * 4
    assert a["target_weight"][0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert a["targets"][0, 3:5].tolist() == [7, 2]  # the reply, then EOS


def test_raise_exception_and_bad_templates_are_user_errors():
    template = HFChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}"
        "{% endif %}{{ messages[0]['content'] }}",
        {},
    )
    with pytest.raises(UserError, match="first must be user"):
        template.render([{"role": "assistant", "content": "x"}], False)
    with pytest.raises(UserError, match="does not parse"):
        HFChatTemplate("{% for %}", {})
    not_prefix = HFChatTemplate(
        "{% if add_generation_prompt %}A:{% endif %}{{ messages[-1].content }}", {}
    )
    with pytest.raises(UserError, match="does not start with the rendered prompt"):
        not_prefix.response("q", "r")


def test_import_hf_keeps_the_chat_template_beside_the_tokenizer(tmp_path):
    """``import-hf`` copies ``tokenizer_config.json`` with ``tokenizer.json``, so a run on
    ``data.tokenizer=hf:IMPORTED/tokenizer.json`` renders the checkpoint's template."""
    from llama_adv.config import get_default_config
    from llama_adv.models.hf_import import save_imported

    write_tokenizer(tmp_path / "hf", LLAMA3, "<|eot_id|>")
    out = save_imported(tmp_path / "imported", get_default_config().model, {}, tmp_path / "hf")
    assert (out / "tokenizer_config.json").is_file()
    tokenizer = HFTokenizer(out / "tokenizer.json")
    assert chat_format(tokenizer).source == LLAMA3
    # a reply ends at the template's end of turn, not at the tokenizer's end of text
    from llama_adv.data.chat import stop_id

    assert stop_id(tokenizer) == tokenizer.encode("<|eot_id|>")[0] != tokenizer.eos_id
