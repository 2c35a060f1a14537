"""A user's custom layer, imported by dotted path through ``model.custom_objects`` as a user's own module would be."""

from __future__ import annotations

from litesweep.objectives.compat import keras


@keras.saving.register_keras_serializable(package="user_layers")
class Scale(keras.layers.Layer):
    """A learned per-channel scale: a custom layer with a weight, which no technique supports."""

    def build(self, input_shape) -> None:
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale
