"""Evaluating a trained run after training: ``llama-adv evaluate`` (:func:`evaluate_run`)
on any split of its dataset or on a user file (:mod:`llama_adv.evaluation.files`)."""

__all__ = ["evaluate_run"]


def __getattr__(name: str):
    if name == "evaluate_run":
        from llama_adv.evaluation.run import evaluate_run

        return evaluate_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
