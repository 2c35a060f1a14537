"""Policy + base model + data → compressed ``.tflite`` → metrics. The whole of what one trial computes.

A ``Workbench`` holds what every trial shares and is built once per process: the base model, the data,
the teacher's logits and the float reference. ``Workbench.run(policy)`` never changes the base model.

Order of a training trial (``qat`` and ``mixed``): narrower student (width) → pruning (unstructured
and 2:4) → clustering (sparsity-preserving when pruned) → ``qat``: n-bit QAT keeping masks and clusters,
or ``mixed``: float conversion then post-training recipes. Every fine-tuning phase is distilled from
the float base model. ``ptq`` trials skip training and apply post-training recipes to the float file.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from litesweep.objectives import convert, costs, measure, tflite_file
from litesweep.objectives.compat import keras, tf
from litesweep.objectives.data import Dataset
from litesweep.objectives.errors import ConfigError, DataError, HopelessTrial
from litesweep.objectives.inventory import LayerInfo, compressible_layers
from litesweep.objectives.metrics import ACCURACY, Metrics, Scorer
from litesweep.objectives.models import fresh_copy
from litesweep.objectives.policy import FLOAT16_BITS, FLOAT_BITS, LayerPolicy, Policy, recipe_name
from litesweep.objectives.techniques import cluster, distill, prune, quantize, shrink

#: A latency backend other than the local interpreter: ``.tflite`` bytes → (milliseconds, label).
LatencyBackend = Callable[[bytes], tuple[float, str]]


@dataclasses.dataclass(frozen=True)
class FineTuneSettings:
    """How a trial fine-tunes; every phase is distilled from the base model.

    Attributes:
        prune_epochs: epochs of the pruning phase (also recovers a narrower student).
        cluster_epochs: epochs of the clustering phase.
        qat_epochs: epochs of quantization-aware training.
        batch_size: fine-tuning batch size.
        learning_rate: Adam learning rate of every phase.
        min_val_accuracy: a trial whose validation accuracy after its first fine-tuning epoch is below
            this floor stops there (recorded as pruned); 0 disables the check.
        calibration_samples: training images used to calibrate static post-training recipes.
        max_train_samples: fine-tune on this many training samples (a fixed random subset; ``None``:
            all). The fidelity knob for large datasets: trials cost less, the base model keeps all data.
    """

    prune_epochs: int = 2
    cluster_epochs: int = 1
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_val_accuracy: float = 0.0
    calibration_samples: int = 128
    max_train_samples: int | None = None

    def validate(self) -> None:
        """Raise ``ConfigError`` on a non-positive setting."""
        for name in ("prune_epochs", "cluster_epochs", "qat_epochs", "batch_size", "calibration_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"finetune.{name} = {getattr(self, name)!r} is not accepted; accepted: an integer >= 1")
        if self.max_train_samples is not None and int(self.max_train_samples) < self.batch_size:
            raise ConfigError(f"finetune.max_train_samples = {self.max_train_samples!r} is below finetune.batch_size; "
                              "accepted: at least one batch, or null for all")
        if not self.learning_rate > 0:
            raise ConfigError(f"finetune.learning_rate = {self.learning_rate!r} is not accepted; accepted: a number > 0")
        if not 0.0 <= self.min_val_accuracy <= 1.0:
            raise ConfigError(f"finetune.min_val_accuracy = {self.min_val_accuracy!r} is out of range; accepted: 0.0 to 1.0")


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
    measurement: measure.Measurement
    achieved_sparsity: dict[str, float]
    weight_types: dict[str, str]
    timings: dict[str, float]
    fallback: list[str] = dataclasses.field(default_factory=list)
    filters: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def metrics(self) -> Metrics:  # noqa: D102
        return self.measurement.metrics


class _FailOnNaN(keras.callbacks.Callback):
    """Fail the trial (not just stop training, as TerminateOnNaN does) when the loss becomes NaN or inf."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:  # noqa: D102
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss became {loss} at batch {batch}")


class _EarlyFloor(keras.callbacks.Callback):
    """Raise ``HopelessTrial`` after the first epoch when validation accuracy is below the floor."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, floor: float) -> None:
        super().__init__()
        self._x, self._y, self._floor = x_val, y_val, floor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: D102
        if epoch != 0:
            return
        acc = float(np.mean(np.argmax(self.model.predict(self._x, batch_size=512, verbose=0), axis=1) == self._y))
        if acc < self._floor:
            raise HopelessTrial(acc, self._floor)


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
        protocol: measure.LatencyProtocol = measure.LatencyProtocol(),
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
            raise ConfigError("the model has no layer any technique supports; accepted: Conv2D, DepthwiseConv2D, Dense")
        self.output_layer = base_model.layers[-1].name
        # Fine-tuning inputs and distillation targets are built once per process, not per trial
        # (load_dataset shuffled the training split, so its head is a random subset).
        self._x_finetune = data.x_train[: finetune.max_train_samples]
        teacher_logits = base_model.predict(self._x_finetune, batch_size=512, verbose=0)
        self._targets = distill.pack_targets(data.y_train[: finetune.max_train_samples], teacher_logits, data.num_classes)
        # One in-memory input pipeline for every fit of every trial: reshuffled each epoch, prefetching.
        self._batches = (tf.data.Dataset.from_tensor_slices((self._x_finetune, self._targets))
                         .shuffle(len(self._x_finetune), seed=0, reshuffle_each_iteration=True)
                         .batch(finetune.batch_size).prefetch(tf.data.AUTOTUNE))
        self._first_phase_done = False
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
        except Exception as exc:  # noqa: BLE001 - a user function can raise anything; say so before any trial
            text = " ".join(str(exc).split())[:200]
            raise ConfigError(f"objective.metric = '{self.scorer.name}' failed on the float model's test outputs ({type(exc).__name__}: {text}); "
                              "accepted: a function f(labels, outputs) -> float, labels (n,) integers, outputs (n, classes)") from exc

    @property
    def calibration(self) -> np.ndarray:
        """Training images used to calibrate static post-training recipes and presets."""
        return self.data.x_train[: self.finetune.calibration_samples]

    # --- measuring --------------------------------------------------------------------------

    def measure(self, tflite: bytes, reference_accuracy: float | None = None, reference_size: int | None = None) -> measure.Measurement:
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
    def _with_costs(measurement: measure.Measurement, model_costs: costs.Costs) -> measure.Measurement:
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
            needs = {"quantize": layer.bits < 32, "prune": layer.pruned, "cluster": bool(layer.clusters), "width": layer.width < 1.0}
            for technique, wanted in needs.items():
                if wanted and technique not in known[name].techniques:
                    raise ConfigError(f"layer '{name}' ({known[name].kind}) does not support technique '{technique}'")
            if layer.width < 1.0 and name == self.output_layer:
                raise ConfigError(f"width of layer '{name}' = {layer.width}: the output layer keeps all its units; accepted: 1.0")

    # --- compressing ------------------------------------------------------------------------

    def _fit(self, model: keras.Model, loss: object, epochs: int, callbacks: list) -> None:
        ft = self.finetune
        if ft.min_val_accuracy > 0 and not self._first_phase_done:
            callbacks = [*callbacks, _EarlyFloor(self.data.x_val, self.data.y_val, ft.min_val_accuracy)]
        self._first_phase_done = True
        callbacks = [*callbacks, _FailOnNaN()]
        model.compile(optimizer=keras.optimizers.Adam(ft.learning_rate), loss=loss)
        model.fit(self._batches, epochs=epochs, callbacks=callbacks, verbose=0)

    def compress(self, policy: Policy, timings: dict[str, float] | None = None) -> tuple[keras.Model, keras.Model, dict[str, np.ndarray]]:
        """Apply the training part of ``policy`` to a fresh copy of the base model.

        Returns:
            The model to convert (QAT-wrapped for ``qat`` with quantized layers), its float structure
            (for shapes and costs), and the final float kernel of every compressible layer.

        Raises:
            HopelessTrial: validation accuracy after the first fine-tuning epoch is below the floor.
        """
        timings = {} if timings is None else timings
        self.check(policy)
        data, ft = self.data, self.finetune
        self._first_phase_done = False
        if not policy.needs_training:
            # Post-training recipes work on the float .tflite: the Keras model is only read, never copied.
            return self.base_model, self.base_model, self._base_kernels
        with _timed(timings, "prepare"):
            model = fresh_copy(self.base_model)
            loss = distill.distillation_loss(data.num_classes, policy.distill.temperature, policy.distill.weight)
        sparse, structured = policy.sparse_layers, policy.structured_layers
        clusters = policy.clustered_layers
        bits = policy.quantized_layers if policy.method == "qat" else {}
        with _timed(timings, "finetune"):
            if policy.widths:
                model = shrink.shrink(model, policy.widths)
            if sparse or structured or policy.widths:  # a narrower student recovers here too
                steps = math.ceil(len(self._x_finetune) / ft.batch_size) * ft.prune_epochs
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
                callbacks: list = []
                # QAT trains every layer, float ones too: keep all clusters and zeros, not only quantized layers'.
                if centres:
                    callbacks.append(cluster.KeepClusters(quantize.kernel_variables(qat, list(centres)), centres))
                if masks:
                    callbacks.append(prune.KeepMasks(quantize.kernel_variables(qat, list(masks)), masks))
                self._fit(qat, loss, ft.qat_epochs, callbacks)
                model = qat
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

    def preset(self, name: str) -> tuple[bytes, measure.Measurement]:
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
        with _timed(timings, "convert"):
            if policy.method == "qat":
                bits = list(policy.quantized_layers.values())
                sparse = bool(policy.sparse_layers or policy.structured_layers) and convert.sparse_encoding_allowed(bits)
                tflite = convert.to_tflite(model, quantized=bool(bits), sparse=sparse)
            else:
                from litesweep.objectives.techniques import ptq

                float_tflite = self.reference.tflite if not policy.needs_training else convert.to_tflite(model, quantized=False, sparse=False)
                recipes = {name: _ptq_recipe(layer) for name, layer in policy.layers.items()}
                result = ptq.quantize_tflite(float_tflite, recipes, self.calibration)
                tflite, fallback = result.tflite, list(result.fallback)
        with _timed(timings, "evaluate"):
            measurement = self.measure(tflite)
            model_costs = costs.model_costs(float_model, kernels, policy.layers, policy.method)
            measurement = self._with_costs(measurement, model_costs)
            types = tflite_file.weight_types(tflite, [info.name for info in self.layers])
        achieved = {name: prune.achieved_sparsity(kernels[name]) for name, layer in policy.layers.items() if layer.pruned}
        filters = {info.name: int(kernels[info.name].shape[-1]) for info in self.layers}
        return TrialOutput(tflite, measurement, achieved, types, timings, fallback, filters)


def _recipe_fields(recipe) -> tuple[int, str, int]:  # noqa: ANN001 - ptq.PtqLayerRecipe
    if recipe.mode == "float":
        return FLOAT_BITS, "dynamic", 8
    if recipe.mode == "fp16":
        return FLOAT16_BITS, "dynamic", 8
    return recipe.bits, recipe.mode, recipe.act_bits


def _ptq_recipe(layer: LayerPolicy):  # noqa: ANN202 - ptq.PtqLayerRecipe, imported lazily
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
            raise DataError(f"{split} labels span [{labels.min()}, {labels.max()}] but the model has {outputs} outputs; accepted: 0..{outputs - 1}")


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
