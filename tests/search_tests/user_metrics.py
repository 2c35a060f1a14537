"""A user's metric, given as ``objective.metric={_target_: tests.search_tests.user_metrics.macro_recall}``.

NumPy only, as a user's metric module would be (resolving it imports no TensorFlow).
"""

from __future__ import annotations

import numpy as np


def macro_recall(labels: np.ndarray, outputs: np.ndarray, classes: int = 10) -> float:
    """Mean over classes of the share of each class's samples predicted as that class."""
    predicted = np.argmax(outputs, axis=1)
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in range(classes) if np.any(labels == c)]))
