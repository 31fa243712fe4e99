"""Train layer: state, the one train step, the mesh, the loop, checkpoints, writers."""

from llama_adv.train.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
