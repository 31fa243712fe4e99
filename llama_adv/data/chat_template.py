"""Chat formats: how a (prompt, response) pair becomes text, and where the prompt ends.

A :class:`ChatFormat` renders one user message as the *prompt* text (everything the model
sees before it answers, generation header included) and the assistant's reply as the
*response* text (what follows, end-of-turn marker included).

- :class:`HFChatTemplate`: the Jinja ``chat_template`` of a Hugging Face tokenizer,
  rendered as ``transformers``' ``apply_chat_template(..., tokenize=False)`` renders it (a
  sandboxed Jinja environment with ``trim_blocks`` and ``lstrip_blocks``, the
  ``loopcontrols`` extension, a no-op ``{% generation %}`` block, ``raise_exception``,
  ``strftime_now``, a ``tojson`` filter that does not escape HTML, and the tokenizer's
  special tokens ``bos_token``, ``eos_token``, ... as variables). The prompt is the
  rendering of ``[user]`` with ``add_generation_prompt=True``; the response is the rest of
  the rendering of ``[user, assistant]``, which must start with the prompt.
- :class:`BuiltinChatFormat` (any other tokenizer, or an HF one without a template):
  prompt ``"User: {prompt}\\nAssistant:"``, response ``" {response}"``; the encoder puts
  BOS before the prompt and EOS after the response.

The template is read from ``chat_template.jinja`` beside the ``tokenizer.json``, else from
the ``chat_template`` field of ``tokenizer_config.json`` there (a list of named templates:
the one named ``default``), the order ``transformers`` uses.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError

# Named special tokens transformers passes to every template (``special_tokens_map``).
SPECIAL_TOKEN_FIELDS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
BUILTIN_PROMPT = "User: {prompt}\nAssistant:"
BUILTIN_RESPONSE = " {response}"


class ChatFormat:
    """Turns a (prompt, response) pair into prompt text and response text.

    Attributes:
      adds_specials: whether the encoder adds BOS before the prompt and EOS after the
        response (the built-in format); a template renders its own markers instead.
    """

    adds_specials: bool = False

    def prompt(self, prompt: str) -> str:
        """The text the model reads before it answers ``prompt``."""
        raise NotImplementedError

    def response(self, prompt: str, response: str) -> str:
        """The text that follows :meth:`prompt` when the reply is ``response``."""
        raise NotImplementedError


class BuiltinChatFormat(ChatFormat):
    """``User: {prompt}\\nAssistant:`` then `` {response}``; BOS/EOS added by the encoder."""

    adds_specials = True

    def prompt(self, prompt: str) -> str:
        return BUILTIN_PROMPT.format(prompt=prompt)

    def response(self, prompt: str, response: str) -> str:
        return BUILTIN_RESPONSE.format(response=response)


def _token_text(value: Any) -> str | None:
    """A special token of ``tokenizer_config.json``: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _environment():
    """The sandboxed Jinja environment chat templates are rendered in (the facts of
    transformers' ``_cached_compile_jinja_template``; our own code)."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise UserError(
            "Rendering a Hugging Face chat template needs jinja2>=3.1.6; pip install jinja2."
        ) from None

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: renders its body (transformers uses
        the tag to mark assistant tokens; plain rendering ignores it)."""

        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """``namespace(...)`` without underscore attributes (no reach into internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates may not set underscore attributes ({name!r})"
                )

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes <, >, & for HTML; chat templates want the plain JSON.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = Namespace
    return env


@dataclasses.dataclass
class HFChatTemplate(ChatFormat):
    """A Hugging Face Jinja chat template and the special tokens it may read.

    Attributes:
      source: ``template`` as text; ``special_tokens``: ``{"bos_token": "<s>", ...}``;
      where: the file it came from (for error messages).
    """

    source: str
    special_tokens: dict[str, str]
    where: str = "chat template"

    def __post_init__(self):
        try:
            self._template = _environment().from_string(self.source)
        except UserError:
            raise
        except Exception as e:  # a jinja2 TemplateSyntaxError
            raise UserError(f"{self.where}: the chat template does not parse ({e}).") from None

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """``apply_chat_template(messages, tokenize=False, add_generation_prompt=...)``."""
        try:
            return self._template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except Exception as e:  # raise_exception() in the template, or a render error
            raise UserError(f"{self.where}: rendering the chat template failed: {e}") from None

    def prompt(self, prompt: str) -> str:
        return self.render([{"role": "user", "content": prompt}], add_generation_prompt=True)

    def response(self, prompt: str, response: str) -> str:
        head = self.prompt(prompt)
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        full = self.render(messages, add_generation_prompt=False)
        if not full.startswith(head):
            raise UserError(
                f"{self.where}: the rendered conversation does not start with the rendered "
                "prompt (add_generation_prompt=True), so the prompt/response boundary is "
                "undefined; use a template whose generation prompt is a prefix of the "
                "assistant turn, or a tokenizer without one (the built-in format)."
            )
        return full[len(head) :]


def load_hf_template(folder: Path) -> HFChatTemplate | None:
    """The chat template of the tokenizer in ``folder``, or None when it has none."""
    config_path = folder / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text("utf-8"))
        except ValueError as e:
            raise UserError(f"{config_path} is not valid JSON ({e}).") from None
    jinja_path = folder / "chat_template.jinja"
    where = str(jinja_path)
    if jinja_path.exists():
        source: Any = jinja_path.read_text("utf-8")
    else:
        source, where = config.get("chat_template"), str(config_path)
        if isinstance(source, list):  # [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
    if not isinstance(source, str) or not source:
        return None
    tokens = {k: t for k in SPECIAL_TOKEN_FIELDS if (t := _token_text(config.get(k))) is not None}
    return HFChatTemplate(source, tokens, where)


def chat_format(tokenizer: Any) -> ChatFormat:
    """The chat format of ``tokenizer``: its Hugging Face template when it is an
    :class:`~llama_adv.data.tokenizers.HFTokenizer` with one, else the built-in format."""
    path = getattr(tokenizer, "path", None)
    if path is not None:
        template = load_hf_template(Path(path).parent)
        if template is not None:
            return template
    return BuiltinChatFormat()
