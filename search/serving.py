"""The MLflow pyfunc flavour of a picked model: it runs the ``.tflite`` with the LiteRT interpreter.

``mlflow models serve -m models:/<name>@<alias>`` serves it; the input is a batch of samples
(``{"inputs": [[...]]}``), the output the model's float outputs (logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np


class TfliteModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model around one ``.tflite`` artifact (key ``tflite``)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:  # noqa: D102
        self._tflite = Path(context.artifacts["tflite"]).read_bytes()

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:  # noqa: D102
        from objectives.runtime import predict

        x = np.asarray(model_input, dtype=np.float32)
        outputs, _ = predict(self._tflite, x)
        return outputs
