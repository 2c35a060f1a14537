"""Exceptions raised by litesweep. Every message is one line naming the bad value and what is accepted."""

from __future__ import annotations


class LitesweepError(Exception):
    """Base class of every error litesweep raises on purpose (reported as one line, exit code 2)."""


class ConfigError(LitesweepError, ValueError):
    """A configuration value is invalid; raised before any store is opened or any model is trained."""


class DataError(LitesweepError, ValueError):
    """The data cannot be used with the model (shape, labels, empty split)."""


class ModelError(LitesweepError, ValueError):
    """The base model cannot be loaded, built or compressed."""


class HopelessTrial(Exception):
    """A trial stopped early: its validation accuracy after the first fine-tuning epoch is below the floor.

    Not a ``LitesweepError``: the search records it as a pruned trial and goes on.
    """

    def __init__(self, val_accuracy: float, floor: float) -> None:
        super().__init__(f"validation accuracy {val_accuracy:.4f} after the first fine-tuning epoch is below the floor {floor:.4f}")
        self.val_accuracy = val_accuracy
        self.floor = floor

    def __reduce__(self) -> tuple:  # sent back from a trial's child process (search/isolation.py)
        return type(self), (self.val_accuracy, self.floor)


class RuntimeRefused(Exception):
    """LiteRT's default interpreter refuses a trial's file (even stored dense): the trial is infeasible.

    Not a ``LitesweepError``: the search records it as a pruned, infeasible trial, with the runtime's message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"LiteRT's default interpreter refuses the file: {message}")
        self.runtime_message = message

    def __reduce__(self) -> tuple:
        return type(self), (self.runtime_message,)
