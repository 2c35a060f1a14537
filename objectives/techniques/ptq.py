"""Per-layer post-training quantization of a float ``.tflite`` with ai-edge-quantizer (no training).

Each layer gets its own recipe: ``float`` (left alone), ``fp16`` (float16 weights), ``weight_only``
(int weights dequantized to float before the op), ``dynamic`` (int weights, activations quantized on
the fly by the kernel) or ``static`` (int8 weights and int8/int16 activations, from calibration data).

The library selects ops by a regex over each op's output tensor names. A layer's name is not a usable
regex: the classifier's output tensor is ``StatefulPartitionedCall:0`` (no layer name in it) and
``conv1`` is a prefix of ``conv10``. So each layer is found by its kernel tensor
(``base_cnn/logits/MatMul``) and its op gets an anchored, escaped regex of that op's exact scope.
What the file ends up holding is then read back from the flatbuffer, never assumed from the recipe.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Mapping

from litesweep.objectives.compat import aeq
from litesweep.objectives.compat import aeq_flatbuffer as fb
from litesweep.objectives.compat import aeq_qtyping as qtyping
from litesweep.objectives.compat import aeq_recipes as recipe_manager

import numpy as np

from litesweep.objectives import tflite_file
from litesweep.objectives.errors import ConfigError, DataError, ModelError
from litesweep.objectives.policy import ACTIVATION_BITS, PTQ_MODES

#: Every recipe mode the quantizer applies: the integer ``PTQ_MODES`` a layer may choose, plus ``float``
#: (left alone) and ``fp16``, the recipes that bit widths 32 and 16 map to.
RECIPE_MODES: tuple[str, ...] = ("float", "fp16", *PTQ_MODES)
#: Weight bit widths per integer mode. 2-bit weight-only is refused by the library's recipe checker;
#: 2 bits only exist as dynamic (``dynamic_wi2c_afp32``). Static weights are int8 here.
WEIGHT_BITS: dict[str, tuple[int, ...]] = {"weight_only": (4, 8), "dynamic": (2, 4, 8), "static": (8,)}
#: The TFLite ops that hold a Conv2D / DepthwiseConv2D / Dense kernel (the library's op-name strings).
KERNEL_OPS = (
    qtyping.TFLOperationName.FULLY_CONNECTED.value,
    qtyping.TFLOperationName.CONV_2D.value,
    qtyping.TFLOperationName.DEPTHWISE_CONV_2D.value,
)
#: Combinations the library accepts but LiteRT computes wrongly (ai-edge-litert 2.3): an INT2 CONV_2D
#: filter is stored correctly (values and scales match the float kernel) yet the conv returns garbage,
#: near 0 or inf/NaN, in XNNPACK, the builtin and the reference kernels alike; INT2 FULLY_CONNECTED is
#: right. Re-check on a newer LiteRT (test_ptq has a test that fails once this is fixed).
RUNTIME_BROKEN: dict[tuple[str, str, int], str] = {
    ("CONV_2D", "dynamic", 2): "LiteRT 2.3 computes wrong CONV_2D outputs from INT2 filters",
}
#: The library merges successive calibration batches by a 0.95 moving average (the first batch would
#: dominate), so the whole sample runs as one batch; this caps the memory that batch takes.
MAX_CALIBRATION_SAMPLES = 1024
_CALIBRATION_THREADS = 1


@dataclasses.dataclass(frozen=True)
class PtqLayerRecipe:
    """How one layer is quantized after training.

    Attributes:
        mode: one of ``RECIPE_MODES``; ``float`` leaves the layer alone.
        bits: weight bits: 4 or 8 for ``weight_only``, 2, 4 or 8 for ``dynamic`` (2 on Dense layers
            only, see ``RUNTIME_BROKEN``), 8 for ``static``. Ignored by ``float`` and ``fp16``.
        act_bits: activation bits for ``static`` (8 or 16); other modes keep float activations.
    """

    mode: str
    bits: int = 8
    act_bits: int = 8

    def validate(self, layer: str) -> None:
        """Raise ``ConfigError`` for a combination no op accepts (op-specific refusals surface in ``quantize_tflite``)."""
        if self.mode not in RECIPE_MODES:
            raise ConfigError(f"layer '{layer}': ptq mode = {self.mode!r} is not supported; accepted: {list(RECIPE_MODES)}")
        if self.mode in WEIGHT_BITS and self.bits not in WEIGHT_BITS[self.mode]:
            hint = ""
            if self.mode == "weight_only" and self.bits == 2:
                hint = " (ai-edge-quantizer's recipe checker refuses 2-bit weight-only; 2 bits work as mode 'dynamic')"
            raise ConfigError(f"layer '{layer}': {self.mode} bits = {self.bits!r} is not supported; "
                              f"accepted: {list(WEIGHT_BITS[self.mode])}{hint}")
        if self.mode == "static" and self.act_bits not in ACTIVATION_BITS:
            raise ConfigError(f"layer '{layer}': static act_bits = {self.act_bits!r} is not supported; accepted: {list(ACTIVATION_BITS)}")
        if self.mode != "static" and self.act_bits != 8:
            raise ConfigError(f"layer '{layer}': act_bits = {self.act_bits!r} only applies to mode 'static'; "
                              f"accepted for {self.mode!r}: 8 (the default, activations stay float)")

    def describe(self) -> str:
        """Short label, e.g. ``dynamic 4-bit`` or ``static w8/a16``."""
        if self.mode in ("float", "fp16"):
            return self.mode
        if self.mode == "static":
            return f"static w{self.bits}/a{self.act_bits}"
        return f"{self.mode} {self.bits}-bit"


@dataclasses.dataclass(frozen=True)
class PtqResult:
    """The quantized file and what it really holds.

    Attributes:
        tflite: the quantized ``.tflite``.
        quantized: every layer of the recipes -> the stored type of its kernel (``INT2``, ``INT4``,
            ``INT8``, ``FLOAT16``, ``FLOAT32``), read from the file.
        fallback: layers whose recipe asked for quantization but whose kernel is still FLOAT32 in the file.
    """

    tflite: bytes
    quantized: dict[str, str]
    fallback: list[str]


@dataclasses.dataclass(frozen=True)
class KernelOp:
    """One op of the float file that holds a layer's kernel.

    Attributes:
        layer: the Keras layer name.
        op: the library's op name (``FULLY_CONNECTED``, ``CONV_2D``, ``DEPTHWISE_CONV_2D``).
        kernel: the kernel tensor's name.
        regex: the op's scope (output tensor names as the library joins them), escaped and anchored.
    """

    layer: str
    op: str
    kernel: str
    regex: str


def kernel_ops(float_tflite: bytes, layers: list[str]) -> dict[str, list[KernelOp]]:
    """The kernel op(s) of each layer in the main subgraph, found by the kernel tensor's name.

    A layer matches a kernel named ``.../<layer>/...`` (the rule ``tflite_file.weight_types`` reads
    the result with), so ``conv1`` never matches ``base_cnn/conv10/Conv2D``.

    Raises:
        ConfigError: a layer has no kernel op, or one kernel names two of the layers.
    """
    return _kernel_ops(fb.read_model(float_tflite), layers)


def _kernel_ops(model: qtyping.ModelT, layers: list[str]) -> dict[str, list[KernelOp]]:
    graph = model.subgraphs[0]
    found: dict[str, list[KernelOp]] = {layer: [] for layer in layers}
    kernels = []
    for op in graph.operators:
        op_name = fb.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        if op_name is None or op_name.value not in KERNEL_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        kernel = fb.get_tensor_name(graph.tensors[op.inputs[1]])
        kernels.append(kernel)
        owners = [layer for layer in layers if f"/{layer}/" in kernel]
        if len(owners) > 1:
            raise ConfigError(f"kernel tensor '{kernel}' matches layers {owners}; accepted: one layer per kernel")
        if owners:
            # The library's own scope string, so the regex matches exactly what it will compare.
            scope = fb.get_op_scope(op, graph.tensors)
            found[owners[0]].append(KernelOp(owners[0], op_name.value, kernel, f"^{re.escape(scope)}$"))
    for layer, ops in found.items():
        if not ops:
            raise ConfigError(f"layer '{layer}' has no {'/'.join(KERNEL_OPS)} op in the .tflite; "
                              f"accepted: layers named in these kernel tensors: {kernels}")
    return found


def _add_config(target: aeq.Quantizer | recipe_manager.RecipeManager, regex: str, op: str, recipe: PtqLayerRecipe) -> None:
    """Add one per-op config; ``Quantizer`` and ``RecipeManager`` share these methods (and the checks)."""
    op_name = qtyping.TFLOperationName(op)
    # Channelwise throughout: blockwise 2-bit weights fail in the XNNPACK delegate ("unsupported datatype (INT2)").
    channelwise = qtyping.QuantGranularity.CHANNELWISE
    if recipe.mode == "fp16":
        target.add_weight_only_config(regex, op_name, 16, algorithm_key=aeq.AlgorithmName.FLOAT_CASTING)
    elif recipe.mode == "weight_only":
        target.add_weight_only_config(regex, op_name, int(recipe.bits), granularity=channelwise)
    elif recipe.mode == "dynamic":
        target.add_dynamic_config(regex, op_name, int(recipe.bits), granularity=channelwise)
    elif recipe.mode == "static":
        target.add_static_config(regex, op_name, activation_num_bits=int(recipe.act_bits),
                                 weight_num_bits=int(recipe.bits), weight_granularity=channelwise)


def _candidates() -> list[PtqLayerRecipe]:
    recipes = [PtqLayerRecipe("fp16")]
    recipes += [PtqLayerRecipe(mode, bits) for mode in ("weight_only", "dynamic") for bits in WEIGHT_BITS[mode]]
    recipes += [PtqLayerRecipe("static", bits, act) for bits in WEIGHT_BITS["static"] for act in ACTIVATION_BITS]
    return recipes


@functools.cache
def supported_recipes(op: str) -> tuple[PtqLayerRecipe, ...]:
    """The recipes ``quantize_tflite`` takes for ``op``: ``float``, plus those the library's own checker
    accepts for it, minus ``RUNTIME_BROKEN``. Lets a search space be checked before any trial.

    Raises:
        ConfigError: ``op`` is not one of ``KERNEL_OPS``.
    """
    if op not in KERNEL_OPS:
        raise ConfigError(f"op = {op!r} holds no layer kernel; accepted: {list(KERNEL_OPS)}")
    accepted = [PtqLayerRecipe("float")]
    for recipe in _candidates():
        if (op, recipe.mode, recipe.bits) in RUNTIME_BROKEN:
            continue
        try:
            _add_config(recipe_manager.RecipeManager(), ".*", op, recipe)
        except ValueError:
            continue
        accepted.append(recipe)
    return tuple(accepted)


def _add_or_refuse(quantizer: aeq.Quantizer, op: KernelOp, recipe: PtqLayerRecipe) -> None:
    """Add the layer's op config, or raise ``ConfigError`` if the library or the runtime cannot take it."""
    reason = RUNTIME_BROKEN.get((op.op, recipe.mode, recipe.bits))
    if reason is None:
        try:
            _add_config(quantizer, op.regex, op.op, recipe)
            return
        except ValueError:  # the library's recipe checker has no such config for this op
            reason = "ai-edge-quantizer's recipe checker refuses it"
    accepted = [r.describe() for r in supported_recipes(op.op)]
    raise ConfigError(f"layer '{op.layer}' ({op.op}): {recipe.describe()} is refused ({reason}); accepted for {op.op}: {accepted}")


def _calibrate(quantizer: aeq.Quantizer, model: qtyping.ModelT, calibration: np.ndarray) -> dict:
    """Min/max ranges of every tensor over the calibration sample, run as one batch."""
    if len(model.signatureDefs) != 1 or len(model.signatureDefs[0].inputs) != 1:
        raise ModelError("static quantization needs a .tflite with exactly one signature of one input; "
                         f"this one has {len(model.signatureDefs)} signature(s)")
    signature = model.signatureDefs[0]
    input_tensor = model.subgraphs[signature.subgraphIndex].tensors[signature.inputs[0].tensorIndex]
    expected = tuple(int(d) for d in input_tensor.shape[1:])
    x = np.asarray(calibration, dtype=np.float32)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise DataError(f"calibration samples have shape {tuple(x.shape[1:])}; accepted: a batch of inputs of shape {expected}")
    if not 1 <= len(x) <= MAX_CALIBRATION_SAMPLES:
        raise DataError(f"calibration has {len(x)} samples; accepted: 1 to {MAX_CALIBRATION_SAMPLES} (e.g. 128 training inputs)")
    key, name = signature.signatureKey.decode(), signature.inputs[0].name.decode()
    return quantizer.calibrate({key: [{name: x}]}, num_threads=_CALIBRATION_THREADS)


def quantize_tflite(
    float_tflite: bytes,
    recipes: Mapping[str, PtqLayerRecipe],
    calibration: np.ndarray | None = None,
) -> PtqResult:
    """Quantize each layer of a float ``.tflite`` by its recipe; other layers and ops stay as they are.

    Args:
        float_tflite: a float32 ``.tflite`` converted from a Keras model (kernels named ``.../<layer>/...``).
        recipes: layer name -> recipe.
        calibration: a batch of model inputs (at most ``MAX_CALIBRATION_SAMPLES``); required when a
            recipe is ``static``, ignored otherwise.

    Returns:
        The quantized file, the stored kernel type of every layer in ``recipes``, and the layers that
        asked for quantization but stayed FLOAT32.

    Raises:
        ConfigError: an invalid recipe, a layer the file lacks, a recipe the library (or LiteRT, see
            ``RUNTIME_BROKEN``) cannot take for the layer's op, or ``static`` without calibration data.
        DataError: calibration inputs of the wrong shape or count.
        ModelError: ``static`` on a file without exactly one single-input signature.
    """
    for layer, recipe in recipes.items():
        recipe.validate(layer)
    model = fb.read_model(float_tflite)
    ops = _kernel_ops(model, list(recipes))
    wanted = {layer: recipe for layer, recipe in recipes.items() if recipe.mode != "float"}
    static = [layer for layer, recipe in wanted.items() if recipe.mode == "static"]
    if static and calibration is None:
        raise ConfigError(f"layers {static} use mode 'static', which needs calibration data; "
                          "accepted: calibration = a batch of sample inputs (e.g. 128 training inputs)")
    tflite = bytes(float_tflite)
    if wanted:
        quantizer = aeq.Quantizer(tflite)
        for layer, recipe in wanted.items():
            for op in ops[layer]:
                _add_or_refuse(quantizer, op, recipe)
        with warnings.catch_warnings():
            # Calibration and the library's check of its ranges keep every intermediate tensor on
            # purpose; the interpreter's debug-only warning about that is noise here.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            qsvs = None
            if quantizer.need_calibration:  # only static recipes need it, and those were refused above without data
                assert calibration is not None
                qsvs = _calibrate(quantizer, model, calibration)
            tflite = bytes(quantizer.quantize(qsvs, enable_progress_report=False).quantized_model)
    stored = tflite_file.weight_types(tflite, list(recipes))
    missing = [layer for layer in recipes if layer not in stored]
    if missing:  # kernel_ops found them by the same naming rule, so the library renamed or dropped them
        raise ModelError(f"kernels of layers {missing} are not in the quantized .tflite")
    quantized = {layer: stored[layer] for layer in recipes}
    fallback = [layer for layer in wanted if quantized[layer] == "FLOAT32"]
    return PtqResult(tflite, quantized, fallback)
