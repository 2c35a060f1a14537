"""Running a ``.tflite`` with the LiteRT interpreter: the only code a served model needs.

Imports ``ai_edge_litert`` (through ``compat``, which loads nothing else for it) and NumPy only, no
TensorFlow, so a registered model starts fast.
The interpreter first tries LiteRT's default delegate (XNNPACK on CPU); if the runtime refuses the
model, it falls back to the built-in kernels and says which one ran.
"""

from __future__ import annotations

from litesweep.objectives.compat import litert

import numpy as np

from litesweep.objectives.quiet import native_noise_filtered

DELEGATE_DEFAULT = "xnnpack"
DELEGATE_BUILTIN = "builtin"
_RESOLVERS = {
    DELEGATE_DEFAULT: litert.OpResolverType.AUTO,
    DELEGATE_BUILTIN: litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}
EVAL_BATCH = 256
_delegate_announced = False  # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" at a process's first allocation
#: Longest error text ``default_runtime_error`` returns.
MAX_ERROR_CHARS = 300


def _allocate(interpreter: litert.Interpreter) -> None:
    """``allocate_tensors``; the first time in this process, with LiteRT's once-per-process INFO line filtered."""
    global _delegate_announced
    if _delegate_announced:
        interpreter.allocate_tensors()
        return
    with native_noise_filtered():
        interpreter.allocate_tensors()
    _delegate_announced = True


def _interpreter(tflite: bytes, delegate: str, threads: int, batch: int | None) -> litert.Interpreter:
    interpreter = litert.Interpreter(model_content=tflite, num_threads=threads,
                                     experimental_op_resolver_type=_RESOLVERS[delegate])
    if batch is not None:
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    _allocate(interpreter)
    return interpreter


def open_interpreter(tflite: bytes, threads: int = 1, batch: int | None = None) -> tuple[litert.Interpreter, str]:
    """An allocated interpreter, with the default delegate when the runtime accepts the model.

    Returns:
        The interpreter and the delegate name (``xnnpack`` or ``builtin``).
    """
    try:
        return _interpreter(tflite, DELEGATE_DEFAULT, threads, batch), DELEGATE_DEFAULT
    except RuntimeError:
        return _interpreter(tflite, DELEGATE_BUILTIN, threads, batch), DELEGATE_BUILTIN


def default_runtime_error(tflite: bytes) -> str | None:
    """Why LiteRT's default interpreter refuses the file, or ``None`` when it runs.

    Opens the file as a user would (``Interpreter(model_content=...)``, default settings, so XNNPACK
    applies), allocates, and invokes once on zero inputs.

    Returns:
        ``None`` when it runs, else the runtime's error text on one line (at most ``MAX_ERROR_CHARS``).
    """
    try:
        interpreter = litert.Interpreter(model_content=tflite)
        _allocate(interpreter)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
    return None


def to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float samples → the model's input type (quantized with the input's scale when it is integer)."""
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """The model's output → float (dequantized when it is integer)."""
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        return (y.astype("float32") - zero) * scale
    return y.astype("float32")


def input_shape(tflite: bytes) -> tuple[int, ...]:
    """Shape of one input sample (without the batch axis)."""
    interpreter = litert.Interpreter(model_content=tflite)
    return tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])


def predict(tflite: bytes, x: np.ndarray, threads: int = 1) -> tuple[np.ndarray, str]:
    """Run the ``.tflite`` on ``x`` in fixed-size batches; returns float outputs and the delegate used."""
    batch = min(EVAL_BATCH, len(x))
    interpreter, delegate = open_interpreter(tflite, threads=threads, batch=batch)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:  # pad the last chunk: one fixed batch size keeps results independent of the split
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        interpreter.set_tensor(inp["index"], to_input(chunk, inp))
        interpreter.invoke()
        outputs.append(from_output(interpreter.get_tensor(out["index"]), out)[:n])
    return np.concatenate(outputs), delegate
