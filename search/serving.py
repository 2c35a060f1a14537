"""The MLflow pyfunc flavour of a picked model: it runs the ``.tflite`` with the LiteRT interpreter.

``mlflow models serve -m models:/<name>@<alias>`` serves it; the input is a batch of samples
(``{"inputs": [[...]]}``), the output the model's float outputs (logits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlflow.pyfunc import PythonModel, PythonModelContext


class TfliteModel(PythonModel):
    """A pyfunc model around one ``.tflite`` artifact (key ``tflite``)."""

    def load_context(self, context: PythonModelContext) -> None:
        self._tflite = Path(context.artifacts["tflite"]).read_bytes()

    # Left unannotated on purpose: MLflow infers a signature from type hints, the logged one is explicit.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201 - MLflow reads hints
        from litesweep.objectives.runtime import predict

        x = np.asarray(model_input, dtype=np.float32)
        outputs, _ = predict(self._tflite, x)
        return outputs
