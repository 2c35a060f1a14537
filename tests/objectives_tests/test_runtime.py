"""What LiteRT's default interpreter (XNNPACK) runs: checked on real converted files, not mocks."""

from __future__ import annotations

from litesweep.objectives.compat import litert

import numpy as np
import pytest

from litesweep.objectives import convert, tflite_file
from litesweep.objectives.policy import LayerPolicy, Policy
from litesweep.objectives.runtime import MAX_ERROR_CHARS, default_runtime_error


@pytest.fixture(scope="module")
def pruned_int8(digits_bench) -> tuple[bytes, bytes]:
    """fc1 pruned 50% then int8 QAT (the trial's own path), converted sparse-encoded and dense."""
    model, _, kernels = digits_bench.compress(Policy({"fc1": LayerPolicy(bits=8, sparsity=0.5)}))
    assert float(np.mean(kernels["fc1"] == 0)) >= 0.45  # the zeros survived QAT
    return convert.to_tflite(model, quantized=True, sparse=True), convert.to_tflite(model, quantized=True, sparse=False)


def test_a_sparse_encoded_int8_dense_layer_is_refused_and_the_dense_file_runs(pruned_int8) -> None:
    sparse, dense = pruned_int8
    sparse_tensors = [e for e in tflite_file.tensors(sparse) if e.is_sparse]
    assert [e.type for e in sparse_tensors] == ["INT8"]
    assert "fc1" in sparse_tensors[0].name
    assert not any(e.is_sparse for e in tflite_file.tensors(dense))

    error = default_runtime_error(sparse)
    assert error is not None
    assert "FULLY_CONNECTED" in error and "XNNPack" in error and "failed to prepare" in error
    assert "\n" not in error and len(error) <= MAX_ERROR_CHARS

    assert default_runtime_error(dense) is None
    # The same check without litesweep's helper: the default interpreter, as a user opens the file.
    interpreter = litert.Interpreter(model_content=dense)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interpreter.invoke()
    assert np.all(np.isfinite(interpreter.get_tensor(out["index"])))


def test_a_plain_float_file_runs(digits_bench) -> None:
    assert not any(e.is_sparse for e in tflite_file.tensors(digits_bench.reference.tflite))
    assert default_runtime_error(digits_bench.reference.tflite) is None


def test_a_file_the_runtime_cannot_read_gives_a_one_line_message() -> None:
    error = default_runtime_error(b"not a flatbuffer" * 64)
    assert error is not None
    assert "\n" not in error and 0 < len(error) <= MAX_ERROR_CHARS
