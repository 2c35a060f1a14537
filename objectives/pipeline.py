"""Policy + base model + data → compressed ``.tflite`` → metrics. The whole of what one trial computes.

A ``Workbench`` holds what every trial shares and is built once per process: the base model, the data,
the teacher's logits and the float reference. ``Workbench.run(policy)`` never changes the base model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from objectives import convert, measure, tflite_file
from objectives.compat import keras
from objectives.data import Dataset
from objectives.errors import ConfigError, DataError
from objectives.inventory import LayerInfo, compressible_layers
from objectives.models import fresh_copy
from objectives.policy import Policy
from objectives.techniques import distill, prune, quantize


@dataclasses.dataclass(frozen=True)
class FineTuneSettings:
    """How a trial fine-tunes: pruning epochs, then QAT epochs, both distilled from the base model."""

    prune_epochs: int = 2
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4

    def validate(self) -> None:
        """Raise ``ConfigError`` on a non-positive setting."""
        for name in ("prune_epochs", "qat_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"finetune.{name} = {getattr(self, name)!r} must be an integer >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"finetune.learning_rate = {self.learning_rate!r} must be > 0")


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float32 base model converted as is: what every trial is compared with."""

    tflite: bytes
    measurement: measure.Measurement

    @property
    def accuracy(self) -> float:  # noqa: D102
        return self.measurement.metrics.accuracy

    @property
    def size_bytes(self) -> int:  # noqa: D102
        return self.measurement.metrics.size_bytes


@dataclasses.dataclass(frozen=True)
class TrialOutput:
    """A trial's ``.tflite`` and what was measured on it and on the way to it."""

    tflite: bytes
    measurement: measure.Measurement
    achieved_sparsity: dict[str, float]
    weight_types: dict[str, str]
    timings: dict[str, float]

    @property
    def metrics(self) -> measure.Metrics:  # noqa: D102
        return self.measurement.metrics


class Workbench:
    """Shared inputs of every trial, built once per process.

    Args:
        base_model: the trained float model; never modified.
        data: the dataset (train for fine-tuning, test for measuring the ``.tflite``).
        finetune: fine-tuning settings.
        protocol: the latency protocol.
    """

    def __init__(
        self,
        base_model: keras.Model,
        data: Dataset,
        finetune: FineTuneSettings = FineTuneSettings(),
        protocol: measure.LatencyProtocol = measure.LatencyProtocol(),
    ) -> None:
        finetune.validate()
        check_data_fits(base_model, data)
        self.base_model = base_model
        self.data = data
        self.finetune = finetune
        self.protocol = protocol
        self.layers: list[LayerInfo] = compressible_layers(base_model)
        if not self.layers:
            raise ConfigError("the model has no layer any technique supports; accepted: Conv2D, DepthwiseConv2D, Dense")
        self._teacher_train = base_model.predict(data.x_train, batch_size=512, verbose=0)
        ref_tflite = convert.to_tflite(base_model, quantized=False, sparse=False)
        ref_acc, _ = measure.accuracy(ref_tflite, data.x_test, data.y_test)
        self.reference = Reference(ref_tflite, self.measure(ref_tflite, ref_acc, len(ref_tflite)))

    def measure(self, tflite: bytes, reference_accuracy: float | None = None, reference_size: int | None = None) -> measure.Measurement:
        """Measure any ``.tflite`` on the test split with the fixed protocol, against the float reference."""
        return measure.measure(
            tflite, self.data.x_test, self.data.y_test,
            reference_accuracy=self.reference.accuracy if reference_accuracy is None else reference_accuracy,
            reference_size_bytes=self.reference.size_bytes if reference_size is None else reference_size,
            protocol=self.protocol,
        )

    def check(self, policy: Policy) -> None:
        """Raise ``ConfigError`` if the policy names a layer the model lacks or a technique it cannot take."""
        policy.validate()
        known = {info.name: info for info in self.layers}
        for name, layer in policy.layers.items():
            if name not in known:
                raise ConfigError(f"policy layer '{name}' is not a compressible layer of the model; accepted: {sorted(known)}")
            if layer.bits < 32 and "quantize" not in known[name].techniques:
                raise ConfigError(f"layer '{name}' ({known[name].kind}) cannot be quantized")
            if layer.sparsity > 0 and "prune" not in known[name].techniques:
                raise ConfigError(f"layer '{name}' ({known[name].kind}) cannot be pruned")

    def compress(self, policy: Policy, timings: dict[str, float] | None = None) -> tuple[keras.Model, dict[str, float]]:
        """Apply ``policy`` to a fresh copy of the base model: prune, then QAT, both with distillation.

        Returns:
            The model to convert (QAT-wrapped when any layer is quantized) and the achieved sparsity per pruned layer.
        """
        timings = {} if timings is None else timings
        self.check(policy)
        data, ft = self.data, self.finetune
        with _timed(timings, "prepare"):
            model = fresh_copy(self.base_model)
            targets = distill.pack_targets(data.y_train, self._teacher_train, data.num_classes)
            loss = distill.distillation_loss(data.num_classes, policy.distill.temperature, policy.distill.weight)
        sparse, bits = policy.sparse_layers, policy.quantized_layers
        masks: dict[str, np.ndarray] = {}
        with _timed(timings, "finetune"):
            if sparse:
                steps = math.ceil(len(data.x_train) / ft.batch_size) * ft.prune_epochs
                pruned = prune.wrap_for_pruning(model, sparse, end_step=steps)
                pruned.compile(optimizer=keras.optimizers.Adam(ft.learning_rate), loss=loss)
                pruned.fit(data.x_train, targets, epochs=ft.prune_epochs, batch_size=ft.batch_size,
                           callbacks=prune.pruning_callbacks(), verbose=0)
                model = prune.strip(pruned)
                masks = prune.kernel_masks(model, list(sparse))
            if bits:
                qat = quantize.wrap_for_qat(model, bits)
                callbacks = []
                if masks:
                    variables = quantize.kernel_variables(qat, [n for n in masks if n in bits])
                    keep = prune.KeepMasks(variables, {n: masks[n] for n in variables})
                    callbacks.append(keep)
                qat.compile(optimizer=keras.optimizers.Adam(ft.learning_rate), loss=loss)
                qat.fit(data.x_train, targets, epochs=ft.qat_epochs, batch_size=ft.batch_size, callbacks=callbacks, verbose=0)
                model = qat
        achieved = {name: prune.achieved_sparsity(self._kernel(model, name)) for name in sparse}
        return model, achieved

    @staticmethod
    def _kernel(model: keras.Model, name: str) -> np.ndarray:
        try:
            return model.get_layer(name).kernel.numpy()
        except ValueError:  # inside a QAT wrapper
            return quantize.kernel_variables(model, [name])[name].numpy()

    def run(self, policy: Policy) -> TrialOutput:
        """Compress, convert and measure: the whole trial."""
        timings: dict[str, float] = {}
        model, achieved = self.compress(policy, timings)
        with _timed(timings, "convert"):
            bits = list(policy.quantized_layers.values())
            sparse = bool(policy.sparse_layers) and convert.sparse_encoding_allowed(bits)
            tflite = convert.to_tflite(model, quantized=bool(bits), sparse=sparse)
        with _timed(timings, "evaluate"):
            measurement = self.measure(tflite)
            types = tflite_file.weight_types(tflite, [info.name for info in self.layers])
        return TrialOutput(tflite, measurement, achieved, types, timings)


def check_data_fits(model: keras.Model, data: Dataset) -> None:
    """Raise ``DataError`` if the data's sample shape or labels do not fit the model."""
    expected = tuple(model.input_shape[1:])
    if tuple(data.input_shape) != expected:
        raise DataError(f"data samples have shape {data.input_shape} but the model expects {expected}")
    outputs = int(model.output_shape[-1])
    for split, labels in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= outputs):
            raise DataError(f"{split} labels span [{labels.min()}, {labels.max()}] but the model has {outputs} outputs; accepted: 0..{outputs - 1}")


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
