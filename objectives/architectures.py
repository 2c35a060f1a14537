"""The built-in CNNs (the ``model`` group): plain, MobileNet-style (``separable``), ResNet-style (``residual``).

Layer names are stable (``conv1``, ``res2a``, ``fc1``, ``logits``): policies, reports and caches use them.
"""

from __future__ import annotations

from litesweep.objectives.compat import keras

from litesweep.objectives.settings import CnnSpec


def build_cnn(spec: CnnSpec, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Build (untrained) the CNN ``spec`` describes; layer names are stable (``conv1``, ``fc1``, ``logits``)."""
    inputs = keras.Input(shape=input_shape, name="image")
    if spec.residual:
        h = _residual_trunk(spec, inputs)
    else:
        h = inputs
        for i, filters in enumerate(spec.conv_filters, start=1):
            if spec.separable and i > 1:
                stride = 2 if min(h.shape[1], h.shape[2]) >= 2 else 1
                h = _conv(spec, h, None, 3, f"dw{i}", strides=stride)
                h = _conv(spec, h, int(filters), 1, f"pw{i}")
                continue
            h = _conv(spec, h, int(filters), spec.kernel_size, f"conv{i}")
            if not spec.separable and min(h.shape[1], h.shape[2]) >= 2:
                h = keras.layers.MaxPooling2D(name=f"pool{i}")(h)
    pooled = spec.separable or spec.residual
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h) if pooled else keras.layers.Flatten(name="flatten")(h)
    for i, units in enumerate(spec.dense_units, start=1):
        h = keras.layers.Dense(int(units), activation="relu", name=f"fc{i}")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="base_cnn")


def _conv(spec: CnnSpec, h: keras.KerasTensor, filters: int | None, kernel: int, name: str, strides: int = 1,
          relu: bool = True) -> keras.KerasTensor:
    """A 'same' convolution (depthwise when ``filters`` is None), then ReLU; with BatchNormalization between them."""
    activation = "relu" if relu and not spec.batch_norm else None
    common = {"strides": strides, "padding": "same", "activation": activation, "use_bias": not spec.batch_norm, "name": name}
    layer = (keras.layers.DepthwiseConv2D(kernel, **common) if filters is None
             else keras.layers.Conv2D(filters, kernel, **common))
    h = layer(h)
    if spec.batch_norm:
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
        if relu:
            h = keras.layers.ReLU(name=f"{name}_relu")(h)
    return h


def _residual_trunk(spec: CnnSpec, inputs: keras.KerasTensor) -> keras.KerasTensor:
    """ResNet-v1 stages (the MLPerf Tiny ResNet-8 with ``conv_filters = [16, 32, 64]``)."""
    h = _conv(spec, inputs, int(spec.conv_filters[0]), spec.kernel_size, "conv1")
    for stage, filters in enumerate(spec.conv_filters, start=1):
        stride = 1 if stage == 1 else 2
        y = _conv(spec, h, int(filters), spec.kernel_size, f"res{stage}a", strides=stride)
        y = _conv(spec, y, int(filters), spec.kernel_size, f"res{stage}b", relu=False)
        if stride != 1 or h.shape[-1] != filters:
            h = keras.layers.Conv2D(int(filters), 1, strides=stride, name=f"res{stage}_shortcut")(h)
        h = keras.layers.Add(name=f"res{stage}_add")([h, y])
        h = keras.layers.ReLU(name=f"res{stage}_relu")(h)
    return h
