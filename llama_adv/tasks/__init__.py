"""Tasks layer: per-task losses, divergences, predictions and metrics."""

from llama_adv.registry import Registry
from llama_adv.tasks.base import DIVERGENCES, Task, divergence
from llama_adv.tasks.chat import ChatTask
from llama_adv.tasks.classification import ClassificationTask
from llama_adv.tasks.sequence import LanguageModelingTask, Seq2SeqTask

TASKS: Registry = Registry("task")
TASKS.register("classification")(ClassificationTask)
TASKS.register("lm")(LanguageModelingTask)
TASKS.register("seq2seq")(Seq2SeqTask)
TASKS.register("chat")(ChatTask)


def build_task(name: str) -> Task:
    """Returns the task registered under ``name`` (config field ``task.name``)."""
    return TASKS.get(name, field="task.name")()


__all__ = ["DIVERGENCES", "TASKS", "Task", "build_task", "divergence"]
