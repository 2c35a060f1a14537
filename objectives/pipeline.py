"""Policy + base model + data → compressed ``.tflite`` → metrics. The whole of what one trial computes.

A ``Workbench`` holds what every trial shares and is built once per process: the base model, the data,
the teacher's logits and the float reference. ``Workbench.run(policy)`` never changes the base model.

A training trial (``qat`` and ``mixed``) is fine-tuned by ``objectives.training``; then ``qat``
converts its QAT model, ``mixed`` converts it in float and applies post-training recipes. ``ptq``
trials skip training and apply post-training recipes to the float file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives import convert, costs, inventory, measure, runtime, tflite_file
from litesweep.objectives.data import Dataset, check_data_fits
from litesweep.objectives.errors import ConfigError, RuntimeRefused
from litesweep.objectives.inventory import LayerInfo, compressible_layers
from litesweep.objectives.measure import ConfirmedLatency, Key, Measurement
from litesweep.objectives.metrics import ACCURACY, Metrics, Scorer
from litesweep.objectives.policy import Policy, recipe_name
from litesweep.objectives.settings import FineTuneSettings, LatencyProtocol
from litesweep.objectives.techniques import prune, quantize, recipes
from litesweep.objectives.training import FineTuner, timed

__all__ = ["FineTuneSettings", "LatencyBackend", "Reference", "TrialOutput", "Workbench"]

#: A latency backend other than the local interpreter: ``.tflite`` bytes → (milliseconds, label).
LatencyBackend = Callable[[bytes], tuple[float, str]]


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float32 base model converted as is: what every trial is compared with (``test``: its test figures)."""

    tflite: bytes
    measurement: Measurement
    test: dict[str, float]

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
        encoding: ``sparse`` when pruned kernels are stored sparse-encoded, else ``dense``.
    """

    tflite: bytes
    measurement: Measurement
    achieved_sparsity: dict[str, float]
    weight_types: dict[str, str]
    timings: dict[str, float]
    fallback: list[str] = dataclasses.field(default_factory=list)
    filters: dict[str, int] = dataclasses.field(default_factory=dict)
    encoding: str = "dense"

    @property
    def metrics(self) -> Metrics:
        return self.measurement.metrics


class Workbench:
    """Shared inputs of every trial, built once per process.

    Args:
        base_model: the trained float model; never modified.
        data: the dataset: train for fine-tuning; validation for every score the search selects by (trials,
            presets, the float reference); test only for the figures reported beside them (``measure_test``).
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
        self.output_layer = inventory.output_layer(base_model)
        self._tuner = FineTuner(base_model, data, finetune)
        ref_tflite = convert.to_tflite(base_model, quantized=False, sparse=False)
        # Every file is compared with the float reference's outputs (agreement, kl_divergence), split by split.
        self.reference_outputs, _ = measure.predict(ref_tflite, data.x_val)
        self.reference_test_outputs, _ = measure.predict(ref_tflite, data.x_test)
        ref_acc = self._score_reference(data.y_val, self.reference_outputs)
        self._reference_test_score = self._score_reference(data.y_test, self.reference_test_outputs)
        measured = self.measure(ref_tflite, ref_acc, len(ref_tflite))
        self._base_kernels = self._kernels(base_model)
        base_costs = costs.model_costs(base_model, self._base_kernels, {}, "qat")
        self.reference = Reference(ref_tflite, self._with_costs(measured, base_costs), self.measure_test(ref_tflite))

    def _score_reference(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        n_outputs = int(self.base_model.output_shape[-1])
        if self.scorer.k is not None and self.scorer.k > n_outputs:
            raise ConfigError(f"objective.k = {self.scorer.k} is more than the model's {n_outputs} outputs; accepted: 1..{n_outputs}")
        try:
            return self.scorer.score(labels, outputs, outputs)
        except Exception as exc:
            text = " ".join(str(exc).split())[:200]
            raise ConfigError(f"objective.metric = '{self.scorer.name}' failed on the float model's outputs "
                              f"({type(exc).__name__}: {text}); "
                              "accepted: a function f(labels, outputs) -> float, labels (n,) integers, outputs (n, classes)") from exc

    @property
    def calibration(self) -> np.ndarray:
        """Training images used to calibrate static post-training recipes and presets."""
        return self.data.x_train[: self.finetune.calibration_samples]

    # --- measuring --------------------------------------------------------------------------

    def measure(self, tflite: bytes, reference_accuracy: float | None = None, reference_size: int | None = None) -> Measurement:
        """Measure any ``.tflite`` on the validation split with the fixed protocol, against the float reference."""
        result = measure.measure(
            tflite, self.data.x_val, self.data.y_val,
            reference_accuracy=self.reference.accuracy if reference_accuracy is None else reference_accuracy,
            reference_size_bytes=self.reference.size_bytes if reference_size is None else reference_size,
            protocol=self.protocol, scorer=self.scorer, reference_outputs=self.reference_outputs,
        )
        if self.latency_backend is None:
            return result
        latency, label = self.latency_backend(tflite)
        return dataclasses.replace(result, metrics=dataclasses.replace(result.metrics, latency_ms=latency),
                                   delegate=f"{result.delegate}; latency: {label}")

    def measure_test(self, tflite: bytes) -> dict[str, float]:
        """The file's figures on the test split (``TEST_METRIC_NAMES``): for reporting, never for selecting."""
        return measure.measure_test(tflite, self.data.x_test, self.data.y_test, reference_score=self._reference_test_score,
                                    scorer=self.scorer, reference_outputs=self.reference_test_outputs)

    def time_once(self, tflite: bytes) -> float:
        """One local latency figure of a file by the fixed protocol."""
        return measure.latency_ms(tflite, self.data.x_val[0], self.protocol)[0]

    def confirm_latency(self, files: Mapping[Key, bytes], seed: int = 0) -> dict[Key, ConfirmedLatency]:
        """Time ``files`` side by side in ``protocol.confirm_rounds`` shuffled rounds (``measure.confirm_latency``).

        With a latency backend (a device) nothing is confirmed: its readings are cached by file, so rounds
        could not differ, and the local interpreter would time another machine than the one searched for.
        """
        if self.latency_backend is not None:
            return {}
        return measure.confirm_latency(files, self.time_once, self.protocol.confirm_rounds, seed)

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

    def narrowable(self) -> list[str]:
        """Layers whose width the search may lower: width-taking layers but the output, when the graph lets them narrow."""
        from litesweep.objectives.techniques import shrink

        candidates = [i.name for i in self.layers if "width" in i.techniques and i.name != self.output_layer]
        return shrink.narrowable(self.base_model, candidates)

    def ptq_recipes(self) -> dict[str, set[str]]:
        """Post-training recipes (``policy.recipe_name`` words) that each compressible layer's op accepts.

        Asked of ai-edge-quantizer's own checker, so a space can be narrowed before any trial runs.
        """
        from litesweep.objectives.techniques import ptq

        ops = ptq.kernel_ops(self.reference.tflite, [info.name for info in self.layers])
        supported: dict[str, set[str]] = {}
        for layer, layer_ops in ops.items():
            names = [{recipe_name(*recipes.recipe_fields(r)) for r in ptq.supported_recipes(op.op)} for op in layer_ops]
            supported[layer] = set.intersection(*names) if names else {"float"}
        return supported

    def preset(self, name: str) -> tuple[bytes, Measurement]:
        """Convert the base model with a converter preset (``objectives.presets.PRESETS``) and measure it."""
        from litesweep.objectives import presets

        tflite = presets.convert_preset(self.base_model, name, self.calibration)
        layer = presets.PRESET_LAYER_POLICY[name]
        policies = {} if layer is None else {info.name: layer for info in self.layers}
        stored = tflite_file.weight_types(tflite, [info.name for info in self.layers])
        model_costs = costs.model_costs(self.base_model, self._base_kernels, policies, "ptq", stored)
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
                refused = runtime.default_runtime_error(tflite)
                if sparse and refused is not None:
                    # XNNPACK refuses some sparse-encoded int8 kernels; the same weights stored dense run everywhere.
                    tflite = convert.to_tflite(model, quantized=bool(bits), sparse=False)
                    refused = runtime.default_runtime_error(tflite)
            else:
                from litesweep.objectives.techniques import ptq

                float_tflite = (self.reference.tflite if not policy.needs_training
                                else convert.to_tflite(model, quantized=False, sparse=False))
                layer_recipes = {name: recipes.ptq_recipe(layer) for name, layer in policy.layers.items()}
                result = ptq.quantize_tflite(float_tflite, layer_recipes, self.calibration)
                tflite, fallback = result.tflite, list(result.fallback)
                refused = runtime.default_runtime_error(tflite)
            if refused is not None:
                raise RuntimeRefused(refused)
        with timed(timings, "evaluate"):
            measurement = self.measure(tflite)
            types = tflite_file.weight_types(tflite, [info.name for info in self.layers])
            model_costs = costs.model_costs(float_model, kernels, policy.layers, policy.method, types)
            measurement = self._with_costs(measurement, model_costs)
        achieved = {name: prune.achieved_sparsity(kernels[name]) for name, layer in policy.layers.items() if layer.pruned}
        filters = {info.name: int(kernels[info.name].shape[-1]) for info in self.layers}
        encoding = "sparse" if any(t.is_sparse for t in tflite_file.tensors(tflite)) else "dense"
        return TrialOutput(tflite, measurement, achieved, types, timings, fallback, filters, encoding)
