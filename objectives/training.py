"""Fine-tuning a trial's student: the phase order, in-memory inputs, and early failure.

Order (``qat`` and ``mixed``): narrower student (width) → pruning (unstructured and 2:4) →
clustering (sparsity-preserving when pruned) → ``qat`` only: n-bit QAT keeping masks and clusters.
Every phase is distilled from the float base model, which is never changed: a trial starts from a
fresh copy (TF-MOT wrappers share layer objects with the model they wrap). Data without labels is
distilled only (hard-label weight 0): the float model's outputs are the sole targets.

Nothing of litesweep's runs in Python per batch (issue 17: a trial as fast as a bare ``fit``; TF-MOT's own
``UpdatePruningStep`` still does, as in any pruning loop): the NaN check is in the loss,
masks and centroids are kept by the optimizer after each update, and the accuracy floor calls the model
eagerly once, after the first epoch, instead of tracing ``predict`` for every trial's new model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from litesweep.objectives.compat import keras, tf

import numpy as np

from litesweep.objectives.data import Dataset
from litesweep.objectives.errors import HopelessTrial
from litesweep.objectives.metrics import are_probabilities
from litesweep.objectives.models import fresh_copy
from litesweep.objectives.policy import Policy
from litesweep.objectives.settings import FineTuneSettings
from litesweep.objectives.techniques import cluster, distill, prune, quantize, shrink

#: The name ``check_numerics`` reports when the fine-tuning loss is NaN or inf (``FloatingPointError``).
NAN_CHECK = "litesweep fine-tuning loss"
EVAL_CHUNK = 512


def checked_loss(loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """``loss`` failing inside the training step when a sample's loss is NaN or inf (no Python per batch)."""

    def checked(packed: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        return tf.debugging.check_numerics(loss(packed, outputs), NAN_CHECK)

    return checked


class ProjectedAdam(keras.optimizers.Adam):
    """Adam that runs ``projections`` (keep pruning zeros, snap to centroids) after every update, in the train step.

    The same as calling them from a callback after each batch, without a Python call and eager ops per batch.
    """

    def __init__(self, learning_rate: float, projections: Sequence[Callable[[], None]] = ()) -> None:
        super().__init__(learning_rate)
        self._projections = list(projections)

    def apply_gradients(self, grads_and_vars: Any, name: str | None = None, skip_gradients_aggregation: bool = False,
                        **kwargs: Any) -> tf.Variable:
        iteration = super().apply_gradients(grads_and_vars, name=name, skip_gradients_aggregation=skip_gradients_aggregation,
                                            **kwargs)
        for project in self._projections:
            project()
        return iteration


class EarlyFloor(keras.callbacks.Callback):
    """Raise ``HopelessTrial`` after the first epoch when validation accuracy is below the floor.

    The model is called eagerly on the validation arrays (no ``predict``: that traces a function per trial).
    """

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, floor: float) -> None:
        super().__init__()
        self._x, self._y, self._floor = x_val, y_val, floor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch != 0:
            return
        correct = 0
        for start in range(0, len(self._x), EVAL_CHUNK):
            outputs = self.model(self._x[start:start + EVAL_CHUNK], training=False)
            correct += int(np.sum(np.argmax(np.asarray(outputs), axis=1) == self._y[start:start + EVAL_CHUNK]))
        acc = correct / len(self._x)
        if acc < self._floor:
            raise HopelessTrial(acc, self._floor)


class FineTuner:
    """Fine-tunes fresh copies of the base model by a policy; built once per process.

    Fine-tuning inputs and distillation targets are built once, not per trial (``load_dataset``
    shuffled the training split, so its head is a random subset).

    Args:
        base_model: the trained float model (the teacher); never modified.
        data: the dataset (train for fine-tuning, validation for the early floor).
        settings: epochs, batch size, learning rate, floor.
    """

    def __init__(self, base_model: keras.Model, data: Dataset, settings: FineTuneSettings) -> None:
        self.base_model = base_model
        self.data = data
        self.settings = settings
        self._x = data.x_train[: settings.max_train_samples]
        teacher_outputs = base_model.predict(self._x, batch_size=512, verbose=0)  # logits, or probabilities (softmax)
        self._classes = int(teacher_outputs.shape[-1])
        # Without labels the float model's own top-1 stands in for them: it is the floor's yardstick, and the
        # hard-label loss is weighted 0 (``run``), so fine-tuning distils only.
        hard = data.y_train[: settings.max_train_samples] if data.labelled else np.argmax(teacher_outputs, axis=1)
        targets = distill.pack_targets(hard, teacher_outputs, self._classes)
        self._probabilities = are_probabilities(teacher_outputs)  # a softmax output: distilled on its log
        # In-memory tensors, converted once, that every fit takes as arrays (``fit`` reshuffles them each epoch).
        self._inputs, self._targets = tf.constant(self._x), tf.constant(targets)
        self._first_phase_done = False
        predicted = np.argmax(base_model.predict(data.x_val, batch_size=512, verbose=0), axis=1)
        self._y_val = data.y_val if data.labelled else predicted
        self._base_val_accuracy = float(np.mean(predicted == self._y_val))

    def _fit(self, model: keras.Model, loss: Callable, epochs: int, callbacks: list,
             projections: Sequence[Callable[[], None]] = ()) -> None:
        """``fit`` on the in-memory tensors; ``projections`` run after every update (``ProjectedAdam``).

        Raises:
            HopelessTrial: the first fit of a trial ends its first epoch below the floor.
            FloatingPointError: the loss became NaN or inf (checked in the training step).
        """
        ft = self.settings
        if ft.min_relative_accuracy > 0 and not self._first_phase_done:
            callbacks = [*callbacks, EarlyFloor(self.data.x_val, self._y_val, ft.min_relative_accuracy * self._base_val_accuracy)]
        self._first_phase_done = True
        model.compile(optimizer=ProjectedAdam(ft.learning_rate, projections), loss=checked_loss(loss))
        try:
            model.fit(self._inputs, self._targets, batch_size=ft.batch_size, epochs=epochs, shuffle=True,
                      callbacks=callbacks, verbose=0)
        except tf.errors.InvalidArgumentError as exc:
            if NAN_CHECK not in str(exc):
                raise
            raise FloatingPointError(f"fine-tuning loss became NaN or inf ({self.settings.batch_size}-sample batch, "
                                     f"learning rate {self.settings.learning_rate})") from None

    def run(self, policy: Policy, timings: dict[str, float]) -> tuple[keras.Model, keras.Model]:
        """Apply the training part of ``policy`` (checked by the caller) to a fresh copy of the base model.

        Returns:
            The model to convert (QAT-wrapped for ``qat`` with quantized layers) and its float
            structure (for shapes and costs).

        Raises:
            HopelessTrial: validation accuracy after the first fine-tuning epoch is below the floor.
        """
        ft = self.settings
        self._first_phase_done = False
        with timed(timings, "prepare"):
            model = fresh_copy(self.base_model)
            weight = policy.distill.weight if self.data.labelled else 1.0  # no labels: soft targets only
            loss = distill.distillation_loss(self._classes, policy.distill.temperature, weight,
                                             probabilities=self._probabilities)
        sparse, structured = policy.sparse_layers, policy.structured_layers
        clusters = policy.clustered_layers
        bits = policy.quantized_layers if policy.method == "qat" else {}
        with timed(timings, "finetune"):
            if policy.widths:
                model = shrink.shrink(model, policy.widths)
            if sparse or structured or policy.widths:  # a narrower student recovers here too
                steps = math.ceil(len(self._x) / ft.batch_size) * ft.prune_epochs
                pruned = prune.wrap_for_pruning(model, sparse, end_step=steps, structured=structured)
                self._fit(pruned, loss, ft.prune_epochs, prune.pruning_callbacks() if (sparse or structured) else [])
                model = prune.strip(pruned)
            masked = [*sparse, *structured]
            masks = prune.kernel_masks(model, masked)
            if clusters:
                clustered = cluster.wrap_for_clustering(model, clusters, preserve_sparsity=[n for n in clusters if n in masks])
                self._fit(clustered, loss, ft.cluster_epochs, [])
                model = cluster.strip(clustered)
            centres = cluster.centroids(model, list(clusters))
            float_model = model
            if bits:
                qat = quantize.wrap_for_qat(model, bits)
                projections: list[Callable[[], None]] = []
                # QAT trains every layer, float ones too: keep all clusters and zeros, not only quantized layers'.
                if centres:
                    projections.append(cluster.KeepClusters(quantize.kernel_variables(qat, list(centres)), centres).apply)
                if masks:
                    projections.append(prune.KeepMasks(quantize.kernel_variables(qat, list(masks)), masks).apply)
                self._fit(qat, loss, ft.qat_epochs, [], projections)
                model = qat
        return model, float_model


@contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[phase]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
