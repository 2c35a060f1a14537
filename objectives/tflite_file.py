"""Read what a ``.tflite`` really holds (tensor types, constant weights) from its flatbuffer.

The interpreter reports INT4 weights as int8, so the file itself is the only honest source for bit widths.
"""

from __future__ import annotations

import dataclasses

from litesweep.objectives.compat import tflite_schema as schema

_TYPE_NAMES = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of the main subgraph."""

    name: str
    type: str
    shape: tuple[int, ...]
    is_constant: bool
    is_sparse: bool


def tensors(tflite: bytes) -> list[TensorEntry]:
    """All tensors of subgraph 0, with their stored element type (``INT4``, ``INT8``, ``FLOAT32`` ...)."""
    model = schema.Model.GetRootAsModel(tflite, 0)
    graph = model.Subgraphs(0)
    entries = []
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        has_data = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        entries.append(TensorEntry(tensor.Name().decode(), _TYPE_NAMES[tensor.Type()], shape, has_data,
                                   tensor.Sparsity() is not None))
    return entries


def weight_types(tflite: bytes, layer_names: list[str]) -> dict[str, str]:
    """Stored type of each layer's kernel: the constant tensor of rank >= 2 whose name mentions the layer.

    Float kernels that the converter feeds through ``DEQUANTIZE`` (float16) or ``DENSIFY`` (sparse)
    appear under the same name; the narrowest stored type wins.
    """
    order = ["INT2", "INT4", "INT8", "FLOAT16", "INT16", "FLOAT32"]
    found: dict[str, str] = {}
    for entry in tensors(tflite):
        if not entry.is_constant or len(entry.shape) < 2:
            continue
        for layer in layer_names:
            if f"/{layer}/" in entry.name or f"/quant_{layer}/" in entry.name:
                rank = order.index(entry.type) if entry.type in order else len(order)
                best = found.get(layer)
                if best is None or rank < order.index(best):
                    found[layer] = entry.type
    return found


def op_names(tflite: bytes) -> list[str]:
    """The builtin operator of every op of subgraph 0, in execution order (``CONV_2D``, ``ADD`` ...)."""
    model = schema.Model.GetRootAsModel(tflite, 0)
    graph = model.Subgraphs(0)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    return [names[model.OperatorCodes(graph.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(graph.OperatorsLength())]
