"""The MLflow pyfunc flavour of a picked model: it runs the ``.tflite`` with the LiteRT interpreter.

``mlflow models serve -m models:/<name>@<alias>`` serves it; the input is a batch of samples
(``{"inputs": [[...]]}``), the output the model's float outputs (logits).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np


class TfliteModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model around one ``.tflite`` artifact (key ``tflite``)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:  # noqa: D102
        self._tflite = Path(context.artifacts["tflite"]).read_bytes()

    # Left unannotated on purpose: MLflow infers a signature from type hints, the logged one is explicit.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201, D102
        from litesweep.objectives.runtime import predict

        x = np.asarray(model_input, dtype=np.float32)
        outputs, _ = predict(self._tflite, x)
        return outputs
