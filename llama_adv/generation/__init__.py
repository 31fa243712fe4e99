"""Text generation with a trained run: ``llama-adv generate`` (:func:`run_generate`),
prompts and their formatting (:mod:`llama_adv.generation.prompts`)."""

__all__ = ["Sampling", "run_generate"]


def __getattr__(name: str):
    if name in __all__:
        from llama_adv.generation import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
