"""Weight clustering (weight sharing) per layer with TF-MOT, and keeping clusters through later training.

TF-MOT's cluster-preserving QAT schemes are 8-bit only. For n-bit QAT litesweep snaps each clustered
kernel back to its centroids after every batch (``KeepClusters``); fake quantization then maps k
distinct floats to at most k distinct integers, so the file keeps the clusters at any bit width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from litesweep.objectives.compat import keras, tf, tfmot

import numpy as np

from litesweep.objectives.inventory import kernel_of, require

_clustering = tfmot.clustering.keras


def wrap_for_clustering(model: keras.Model, clusters: Mapping[str, int], preserve_sparsity: Sequence[str] = ()) -> keras.Model:
    """Wrap each layer in ``clusters`` in ``cluster_weights`` with k-means++ initialised centroids.

    Layers in ``preserve_sparsity`` keep their zeros (sparsity-preserving clustering, for PCQAT).
    """
    require(model, "cluster", [name for name, k in clusters.items() if k])

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        k = clusters.get(layer.name, 0)
        if not k:
            return layer
        return _clustering.cluster_weights(
            layer, number_of_clusters=feasible_clusters(kernel_of(layer).numpy(), int(k)),
            cluster_centroids_init=_clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=layer.name in preserve_sparsity,
        )

    return keras.models.clone_model(model, clone_function=wrap)


def feasible_clusters(kernel: np.ndarray, k: int) -> int:
    """``k``, lowered until TF-MOT's k-means++ initialisation can place every centroid.

    TF-MOT keeps one centroid at zero and splits the other ``k - 1`` between negative and positive
    weights in proportion to their counts; each side needs at least as many weights as centroids.
    The result never exceeds ``k``, so "at most k distinct values" still holds.
    """
    negative, positive = int(np.sum(kernel < 0)), int(np.sum(kernel > 0))
    for candidate in range(k, 1, -1):
        n_neg = int(np.round((candidate - 1) * negative / max(negative + positive, 1)))
        if n_neg <= negative and candidate - 1 - n_neg <= positive:
            return candidate
    return 2


def strip(model: keras.Model) -> keras.Model:
    """Remove clustering wrappers; kernels keep only their centroid values."""
    return _clustering.strip_clustering(model)


def centroids(model: keras.Model, layer_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The distinct values of each clustered kernel (its centroids, plus 0 when sparsity was kept)."""
    return {name: np.unique(kernel_of(model.get_layer(name)).numpy()) for name in layer_names}


def distinct_values(kernel: np.ndarray) -> int:
    """Number of distinct weight values."""
    return int(np.unique(kernel).size)


class KeepClusters(keras.callbacks.Callback):
    """Snap clustered kernels to their nearest centroid after every batch (and at the end of training)."""

    def __init__(self, variables: Mapping[str, tf.Variable], centres: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self._pairs = [(variables[name], tf.constant(np.sort(centres[name]).astype("float32"))) for name in centres]

    def apply(self) -> None:
        """Replace every weight by its nearest centroid now."""
        for variable, centres in self._pairs:
            flat = tf.reshape(variable, [-1, 1])
            nearest = tf.argmin(tf.abs(flat - centres[None, :]), axis=1)
            variable.assign(tf.reshape(tf.gather(centres, nearest), variable.shape))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.apply()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.apply()
