"""Policy + base model + data → compressed ``.tflite`` → metrics. The whole of what one trial computes.

A ``Workbench`` holds what every trial shares and is built once per process: the base model, the data,
the teacher's logits and the float reference. ``Workbench.run(policy)`` never changes the base model.

A training trial (``qat`` and ``mixed``) is fine-tuned by ``objectives.training``; then ``qat``
converts its QAT model, ``mixed`` converts it in float and applies post-training recipes. ``ptq``
trials skip training and apply post-training recipes to the float file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives import convert, costs, inventory, measure, tflite_file
from litesweep.objectives.data import Dataset
from litesweep.objectives.errors import ConfigError, DataError
from litesweep.objectives.inventory import LayerInfo, compressible_layers
from litesweep.objectives.measure import Measurement
from litesweep.objectives.metrics import ACCURACY, Metrics, Scorer
from litesweep.objectives.policy import FLOAT16_BITS, FLOAT_BITS, LayerPolicy, Policy, recipe_name
from litesweep.objectives.settings import FineTuneSettings, LatencyProtocol
from litesweep.objectives.techniques import prune, quantize
from litesweep.objectives.training import FineTuner, timed

if TYPE_CHECKING:  # ptq loads ai-edge-quantizer: imported where a post-training trial needs it
    from litesweep.objectives.techniques.ptq import PtqLayerRecipe

__all__ = ["FineTuneSettings", "LatencyBackend", "Reference", "TrialOutput", "Workbench", "check_data_fits"]

#: A latency backend other than the local interpreter: ``.tflite`` bytes → (milliseconds, label).
LatencyBackend = Callable[[bytes], tuple[float, str]]


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float32 base model converted as is: what every trial is compared with."""

    tflite: bytes
    measurement: Measurement

    @property
    def accuracy(self) -> float:
        return self.measurement.metrics.accuracy

    @property
    def size_bytes(self) -> int:
        return self.measurement.metrics.size_bytes


@dataclasses.dataclass(frozen=True)
class TrialOutput:
    """A trial's ``.tflite`` and what was measured on it and on the way to it.

    Attributes:
        tflite: the file.
        measurement: metrics and the delegate that measured them.
        achieved_sparsity: share of zeros per pruned layer, in the final kernels.
        weight_types: the stored type of each compressible layer's kernel, read from the file.
        timings: seconds per phase (prepare, finetune, convert, evaluate).
        fallback: layers a post-training recipe asked to quantize but that stayed float in the file.
        filters: output channels/units per compressible layer in the student.
    """

    tflite: bytes
    measurement: Measurement
    achieved_sparsity: dict[str, float]
    weight_types: dict[str, str]
    timings: dict[str, float]
    fallback: list[str] = dataclasses.field(default_factory=list)
    filters: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def metrics(self) -> Metrics:
        return self.measurement.metrics


class Workbench:
    """Shared inputs of every trial, built once per process.

    Args:
        base_model: the trained float model; never modified.
        data: the dataset (train for fine-tuning, validation for the early floor, test for the ``.tflite``).
        finetune: fine-tuning settings.
        protocol: the local latency protocol.
        latency_backend: measure latency elsewhere (e.g. on a device) instead of the local interpreter.
        scorer: what the ``accuracy`` metric scores (``objective.metric``); the float reference, presets
            and trials are all scored with it.

    Raises:
        ConfigError: the model has nothing to compress, or the scorer does not fit it (``k`` above the
            number of outputs, a user function that fails or returns no finite number on the reference).
        DataError: the data does not fit the model.
    """

    def __init__(
        self,
        base_model: keras.Model,
        data: Dataset,
        finetune: FineTuneSettings = FineTuneSettings(),
        protocol: LatencyProtocol = LatencyProtocol(),
        latency_backend: LatencyBackend | None = None,
        scorer: Scorer = ACCURACY,
    ) -> None:
        finetune.validate()
        check_data_fits(base_model, data)
        self.base_model = base_model
        self.data = data
        self.finetune = finetune
        self.protocol = protocol
        self.latency_backend = latency_backend
        self.scorer = scorer
        self.layers: list[LayerInfo] = compressible_layers(base_model)
        if not self.layers:
            raise ConfigError(f"the model has no layer any technique supports; accepted: {', '.join(inventory.supported_kinds())}")
        self.output_layer = base_model.layers[-1].name
        self._tuner = FineTuner(base_model, data, finetune)
        ref_tflite = convert.to_tflite(base_model, quantized=False, sparse=False)
        # Every file is compared with the float reference's outputs (agreement, kl_divergence).
        self.reference_outputs, _ = measure.predict(ref_tflite, data.x_test)
        ref_acc = self._score_reference()
        measured = self.measure(ref_tflite, ref_acc, len(ref_tflite))
        self._base_kernels = self._kernels(base_model)
        base_costs = costs.model_costs(base_model, self._base_kernels, {}, "qat")
        self.reference = Reference(ref_tflite, self._with_costs(measured, base_costs))

    def _score_reference(self) -> float:
        outputs = int(self.base_model.output_shape[-1])
        if self.scorer.k is not None and self.scorer.k > outputs:
            raise ConfigError(f"objective.k = {self.scorer.k} is more than the model's {outputs} outputs; accepted: 1..{outputs}")
        try:
            return self.scorer.score(self.data.y_test, self.reference_outputs, self.reference_outputs)
        except Exception as exc:
            text = " ".join(str(exc).split())[:200]
            raise ConfigError(f"objective.metric = '{self.scorer.name}' failed on the float model's test outputs "
                              f"({type(exc).__name__}: {text}); "
                              "accepted: a function f(labels, outputs) -> float, labels (n,) integers, outputs (n, classes)") from exc

    @property
    def calibration(self) -> np.ndarray:
        """Training images used to calibrate static post-training recipes and presets."""
        return self.data.x_train[: self.finetune.calibration_samples]

    # --- measuring --------------------------------------------------------------------------

    def measure(self, tflite: bytes, reference_accuracy: float | None = None, reference_size: int | None = None) -> Measurement:
        """Measure any ``.tflite`` on the test split with the fixed protocol, against the float reference."""
        result = measure.measure(
            tflite, self.data.x_test, self.data.y_test,
            reference_accuracy=self.reference.accuracy if reference_accuracy is None else reference_accuracy,
            reference_size_bytes=self.reference.size_bytes if reference_size is None else reference_size,
            protocol=self.protocol, scorer=self.scorer, reference_outputs=self.reference_outputs,
        )
        if self.latency_backend is None:
            return result
        latency, label = self.latency_backend(tflite)
        return dataclasses.replace(result, metrics=dataclasses.replace(result.metrics, latency_ms=latency),
                                   delegate=f"{result.delegate}; latency: {label}")

    @staticmethod
    def _with_costs(measurement: Measurement, model_costs: costs.Costs) -> Measurement:
        metrics = dataclasses.replace(measurement.metrics, ideal_bytes=model_costs.ideal_bytes,
                                      macs=model_costs.macs, bitops=model_costs.bitops)
        return dataclasses.replace(measurement, metrics=metrics)

    # --- checking ---------------------------------------------------------------------------

    def check(self, policy: Policy) -> None:
        """Raise ``ConfigError`` if the policy names a layer the model lacks or a technique it cannot take."""
        policy.validate()
        known = {info.name: info for info in self.layers}
        for name, layer in policy.layers.items():
            if name not in known:
                raise ConfigError(f"policy layer '{name}' is not a compressible layer of the model; accepted: {sorted(known)}")
            for technique in layer.techniques:
                if technique not in known[name].techniques:
                    raise inventory.unsupported(name, known[name].kind, technique)
            if layer.width < 1.0 and name == self.output_layer:
                raise ConfigError(f"width of layer '{name}' = {layer.width}: the output layer keeps all its units; accepted: 1.0")

    # --- compressing ------------------------------------------------------------------------

    def compress(self, policy: Policy, timings: dict[str, float] | None = None) -> tuple[keras.Model, keras.Model, dict[str, np.ndarray]]:
        """Apply the training part of ``policy`` to a fresh copy of the base model (``objectives.training``).

        Returns:
            The model to convert (QAT-wrapped for ``qat`` with quantized layers), its float structure
            (for shapes and costs), and the final float kernel of every compressible layer.

        Raises:
            HopelessTrial: validation accuracy after the first fine-tuning epoch is below the floor.
        """
        timings = {} if timings is None else timings
        self.check(policy)
        if not policy.needs_training:
            # Post-training recipes work on the float .tflite: the Keras model is only read, never copied.
            return self.base_model, self.base_model, self._base_kernels
        model, float_model = self._tuner.run(policy, timings)
        return model, float_model, self._kernels(model)

    def ptq_recipes(self) -> dict[str, set[str]]:
        """Post-training recipes (``policy.recipe_name`` words) that each compressible layer's op accepts.

        Asked of ai-edge-quantizer's own checker, so a space can be narrowed before any trial runs.
        """
        from litesweep.objectives.techniques import ptq

        ops = ptq.kernel_ops(self.reference.tflite, [info.name for info in self.layers])
        supported: dict[str, set[str]] = {}
        for layer, layer_ops in ops.items():
            names = [{recipe_name(*_recipe_fields(r)) for r in ptq.supported_recipes(op.op)} for op in layer_ops]
            supported[layer] = set.intersection(*names) if names else {"float"}
        return supported

    def preset(self, name: str) -> tuple[bytes, Measurement]:
        """Convert the base model with a converter preset (``objectives.presets.PRESETS``) and measure it."""
        from litesweep.objectives import presets

        tflite = presets.convert_preset(self.base_model, name, self.calibration)
        layer = {"float32": None, "float16": LayerPolicy(bits=FLOAT16_BITS), "dynamic_int8": LayerPolicy(bits=8),
                 "full_int8": LayerPolicy(bits=8, ptq_mode="static"),
                 "int16x8": LayerPolicy(bits=8, act_bits=16, ptq_mode="static")}[name]
        policies = {} if layer is None else {info.name: layer for info in self.layers}
        model_costs = costs.model_costs(self.base_model, self._kernels(self.base_model), policies, "ptq")
        return tflite, self._with_costs(self.measure(tflite), model_costs)

    def _kernels(self, model: keras.Model) -> dict[str, np.ndarray]:
        return {name: v.numpy() for name, v in quantize.kernel_variables(model, [i.name for i in self.layers]).items()}

    def run(self, policy: Policy) -> TrialOutput:
        """Compress, convert and measure: the whole trial."""
        timings: dict[str, float] = {}
        model, float_model, kernels = self.compress(policy, timings)
        fallback: list[str] = []
        with timed(timings, "convert"):
            if policy.method == "qat":
                bits = list(policy.quantized_layers.values())
                sparse = bool(policy.sparse_layers or policy.structured_layers) and convert.sparse_encoding_allowed(bits)
                tflite = convert.to_tflite(model, quantized=bool(bits), sparse=sparse)
            else:
                from litesweep.objectives.techniques import ptq

                float_tflite = (self.reference.tflite if not policy.needs_training
                                else convert.to_tflite(model, quantized=False, sparse=False))
                recipes = {name: _ptq_recipe(layer) for name, layer in policy.layers.items()}
                result = ptq.quantize_tflite(float_tflite, recipes, self.calibration)
                tflite, fallback = result.tflite, list(result.fallback)
        with timed(timings, "evaluate"):
            measurement = self.measure(tflite)
            model_costs = costs.model_costs(float_model, kernels, policy.layers, policy.method)
            measurement = self._with_costs(measurement, model_costs)
            types = tflite_file.weight_types(tflite, [info.name for info in self.layers])
        achieved = {name: prune.achieved_sparsity(kernels[name]) for name, layer in policy.layers.items() if layer.pruned}
        filters = {info.name: int(kernels[info.name].shape[-1]) for info in self.layers}
        return TrialOutput(tflite, measurement, achieved, types, timings, fallback, filters)


def _recipe_fields(recipe: PtqLayerRecipe) -> tuple[int, str, int]:
    if recipe.mode == "float":
        return FLOAT_BITS, "dynamic", 8
    if recipe.mode == "fp16":
        return FLOAT16_BITS, "dynamic", 8
    return recipe.bits, recipe.mode, recipe.act_bits


def _ptq_recipe(layer: LayerPolicy) -> PtqLayerRecipe:
    from litesweep.objectives.techniques import ptq

    if layer.bits == FLOAT_BITS:
        return ptq.PtqLayerRecipe(mode="float")
    if layer.bits == FLOAT16_BITS:
        return ptq.PtqLayerRecipe(mode="fp16")
    return ptq.PtqLayerRecipe(mode=layer.ptq_mode, bits=layer.bits, act_bits=layer.act_bits)


def check_data_fits(model: keras.Model, data: Dataset) -> None:
    """Raise ``DataError`` if the data's sample shape or labels do not fit the model."""
    expected = tuple(model.input_shape[1:])
    if tuple(data.input_shape) != expected:
        raise DataError(f"data samples have shape {data.input_shape} but the model expects {expected}; "
                        f"accepted: data whose samples are {expected}, or a model whose input is {tuple(data.input_shape)}")
    outputs = int(model.output_shape[-1])
    for split, labels in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= outputs):
            raise DataError(f"{split} labels span [{labels.min()}, {labels.max()}] but the model has {outputs} outputs; "
                            f"accepted: 0..{outputs - 1}")
