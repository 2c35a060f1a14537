"""The settings ``objectives/`` is built from: data source, base model, fine-tuning, latency protocol.

Each class is both the domain object and the schema of its config group (``data``, ``model``,
``finetune``, ``latency``): ``search/config.py`` registers these very classes with Hydra, and the
search gets them back with ``OmegaConf.to_object(cfg.<group>)``. So a setting, its default and its
range check are written once, here. Plain dataclasses, no TensorFlow: ``validate`` runs on a
command line before anything heavy is imported.

OmegaConf constraints shape them: fields are ``tuple``/``int | None``-typed values OmegaConf knows,
and fields that a config group needs first (``name``, ``backend``) are keyword-only so that the
positional order of the constructors stays as it was.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import check_choice

#: Values of ``data.source`` (``objectives.sources.SOURCES`` has one reader for each).
DATA_SOURCES: tuple[str, ...] = ("mnist5k", "digits", "npz", "folder", "tfds", "keras")
COLOR_MODES: tuple[str, ...] = ("grayscale", "rgb")
#: Values of ``data.dataset`` with ``data.source = keras``.
KERAS_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
LATENCY_BACKENDS: tuple[str, ...] = ("local", "command")
#: Fewer timed invocations than this give a median too noisy to rank trials by.
MIN_LATENCY_RUNS = 50
#: Fewer interleaved rounds than this give a spread (lowest to highest round median) too narrow to trust.
MIN_CONFIRM_ROUNDS = 5


def _tuple(values: object) -> object:
    """Lists (from OmegaConf or YAML) as tuples, so every instance compares, hashes and caches alike."""
    return tuple(values) if isinstance(values, list | tuple) else values


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset comes from, how its images are preprocessed and how it is split (the ``data`` group).

    Attributes:
        source: one of ``DATA_SOURCES``.
        name: the name shown in reports (``None``: the dataset or source name).
        path: the user's file or folder (npz, folder, tfds ``data_dir``, keras local files).
        dataset: the TFDS or Keras dataset name.
        image_size: ``(height, width)`` folder images are resized to.
        color_mode: folder images: ``grayscale`` or ``rgb``.
        rescale: pixel multiplier; ``None``: 1/255 for 8-bit images, others as they are.
        mean: per channel, subtracted after ``rescale``.
        std: per channel, divided after the mean.
        val_fraction: share of samples for validation, what every trial is scored and selected on (of the
            training split when the source has one).
        test_fraction: share held out for the figures reported for the front (pooled sources only).
        seed: split seed; the same seed always gives the same split.
        limit: keep only this many samples (after shuffling, spread over the splits), for quick tests.
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)
    source: str
    path: str | None = None
    dataset: str | None = None
    image_size: tuple[int, ...] | None = None
    color_mode: str = "rgb"
    rescale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        for field in ("image_size", "mean", "std"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first setting that cannot work (files are checked when read)."""
        check_choice(self.source, DATA_SOURCES, "data.source")
        if self.source in ("npz", "folder") and not self.path:
            example = "npz" if self.source == "npz" else "d"
            raise ConfigError(f"data.source = {self.source!r} needs data.path; accepted: the path of the user's {self.source} "
                              f"(e.g. data.path=/data/mine.{example})")
        if self.source in ("tfds", "keras") and not self.dataset:
            raise ConfigError(f"data.source = {self.source!r} needs data.dataset; "
                              "accepted: a dataset name (e.g. data.dataset=fashion_mnist)")
        if self.source == "keras" and self.dataset not in KERAS_DATASETS:
            raise ConfigError(f"data.dataset = {self.dataset!r} is not a Keras dataset litesweep reads; accepted: {list(KERAS_DATASETS)}")
        if self.source == "folder" and (not self.image_size or len(self.image_size) != 2):
            shown = None if self.image_size is None else list(self.image_size)  # as the config wrote it
            raise ConfigError(f"data.image_size = {shown!r} is not accepted for a folder; accepted: [height, width]")
        check_choice(self.color_mode, COLOR_MODES, "data.color_mode")
        for what, value in (("data.val_fraction", self.val_fraction), ("data.test_fraction", self.test_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0 < fraction < 1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction = {self.val_fraction + self.test_fraction!r} "
                              "leaves no training data; accepted: sum < 1")


@dataclasses.dataclass(frozen=True)
class CnnSpec:
    """The base model (the ``model`` group): a small CNN ending in logits, trained once and cached, or ``path``.

    Plain: Conv-Pool blocks, Flatten, Dense layers. ``separable`` (MobileNet-style): a Conv stem, then
    depthwise 3x3 + pointwise 1x1 blocks that halve the resolution, global average pooling, Dense layers.
    ``residual`` (ResNet-style): a Conv stem with ``conv_filters[0]``, then one residual block of two 3x3
    convolutions per entry (stride 2 after the first, with a 1x1 projection shortcut), global average
    pooling, Dense layers. ``batch_norm`` puts Conv-BatchNormalization-ReLU where ReLU convolutions were.
    Outputs are logits.

    Attributes:
        name: the name shown in reports.
        augment: train the base model on randomly shifted (1/8 of a side) and horizontally flipped images.
        reduce_lr_patience: halve the base model's learning rate after this many epochs without a better
            validation loss (0: constant).
        path: a trained model (``.keras``, ``.h5``, SavedModel directory) used instead of the built CNN;
            the CNN fields are then unused.
        trust_code: allow Lambda layers (arbitrary code) in ``path``.
        custom_objects: modules or classes to import before loading ``path`` (its custom layers).
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)
    conv_filters: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    dense_units: tuple[int, ...] = (64,)
    max_epochs: int = 30
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    separable: bool = False
    residual: bool = False
    batch_norm: bool = False
    augment: bool = False
    reduce_lr_patience: int = 0
    path: str | None = None
    trust_code: bool = False
    custom_objects: tuple[str, ...] = ()

    #: Fields that say where a model comes from, not how the CNN is built and trained (not in its cache key).
    NOT_ARCHITECTURE = ("name", "path", "trust_code", "custom_objects")
    #: Options added after models were first cached: left out of the cache key at their default, so
    #: models cached before they existed keep their keys.
    LATER_OPTIONS = ("separable", "residual", "batch_norm", "augment", "reduce_lr_patience")

    def __post_init__(self) -> None:
        for field in ("conv_filters", "dense_units", "custom_objects"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))

    def validate(self) -> None:
        """Raise ``ConfigError`` on a non-positive size or a ``path`` that does not exist."""
        for what, values in (("model.conv_filters", self.conv_filters), ("model.dense_units", self.dense_units)):
            if any(int(v) <= 0 for v in values):
                raise ConfigError(f"{what} = {list(values)} is not accepted; accepted: a list of positive integers")
        for what, value in (("model.kernel_size", self.kernel_size), ("model.max_epochs", self.max_epochs),
                            ("model.batch_size", self.batch_size)):
            if int(value) <= 0:
                raise ConfigError(f"{what} = {value!r} is not accepted; accepted: a positive integer")
        if self.separable and self.residual:
            raise ConfigError("model.separable = true and model.residual = true together are not accepted; accepted: at most one of them")
        if int(self.reduce_lr_patience) < 0:
            raise ConfigError(f"model.reduce_lr_patience = {self.reduce_lr_patience!r} is not accepted; accepted: an integer >= 0")
        if self.path and not Path(self.path).exists():
            raise ConfigError(f"model.path = '{self.path}' does not exist; accepted: a .keras or .h5 file or a SavedModel directory")


@dataclasses.dataclass(frozen=True)
class FineTuneSettings:
    """How a trial fine-tunes (the ``finetune`` group); every phase is distilled from the base model.

    Attributes:
        prune_epochs: epochs of the pruning phase (also recovers a narrower student).
        cluster_epochs: epochs of the clustering phase.
        qat_epochs: epochs of quantization-aware training.
        batch_size: fine-tuning batch size.
        learning_rate: Adam learning rate of every phase.
        min_relative_accuracy: a trial whose validation accuracy after its first fine-tuning epoch is below
            this share of the float base model's stops there (recorded as pruned); 0 disables the check.
            Relative, so the floor fits a 60% CIFAR-10 model as well as a 98% MNIST one.
        calibration_samples: training images used to calibrate static post-training recipes.
        max_train_samples: fine-tune on this many training samples (a fixed random subset; ``None``:
            all). The fidelity knob for large datasets: trials cost less, the base model keeps all data.
        onednn: TensorFlow's oneDNN kernels (``False`` sets ``TF_ENABLE_ONEDNN_OPTS=0`` before TensorFlow loads:
            the known cure for its native allocator crashes while fine-tuning some models).
    """

    prune_epochs: int = 2
    cluster_epochs: int = 1
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_relative_accuracy: float = 0.0
    calibration_samples: int = 128
    max_train_samples: int | None = None
    onednn: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` on a non-positive setting."""
        for name in ("prune_epochs", "cluster_epochs", "qat_epochs", "batch_size", "calibration_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"finetune.{name} = {getattr(self, name)!r} is not accepted; accepted: an integer >= 1")
        if self.max_train_samples is not None and int(self.max_train_samples) < self.batch_size:
            raise ConfigError(f"finetune.max_train_samples = {self.max_train_samples!r} is below finetune.batch_size; "
                              "accepted: at least one batch, or null for all")
        if not self.learning_rate > 0:
            raise ConfigError(f"finetune.learning_rate = {self.learning_rate!r} is not accepted; accepted: a number > 0")
        if not 0.0 <= self.min_relative_accuracy <= 1.0:
            raise ConfigError(f"finetune.min_relative_accuracy = {self.min_relative_accuracy!r} is out of range; accepted: 0.0 to 1.0")


@dataclasses.dataclass(frozen=True)
class LatencyProtocol:
    """How latency is measured (the ``latency`` group): locally, or by a command that runs the model on a device.

    Locally: single-sample invocations on ``threads`` threads, median after ``warmup``; ``min_runs``
    invocations are always made, more until ``max_runs`` or ``max_seconds``. The ``command`` backend
    reads the time a device prints (``objectives.latency_command.CommandLatency``).

    Attributes:
        backend: one of ``LATENCY_BACKENDS``.
        command: the device command template (``{model}``, ``{threads}``), for ``backend = command``.
        pattern: regular expression whose first group is the time the command prints.
        unit: unit of that time (``us`` or ``ms``).
        timeout_s: seconds before the command is killed.
        cache_dir: where device readings are cached (``None``: no cache).
        confirm_rounds: at the end of a run, front trials and presets are timed again side by side, in
            this many rounds (each times every file once, in a shuffled order).
    """

    backend: str = dataclasses.field(default="local", kw_only=True)
    threads: int = 1
    warmup: int = 10
    min_runs: int = 50
    max_runs: int = 500
    max_seconds: float = 1.0
    command: str | None = None
    pattern: str | None = None
    unit: str = "us"
    timeout_s: float = 300.0
    cache_dir: str | None = None
    confirm_rounds: int = 7

    def describe(self) -> dict[str, str | int | float]:
        """The protocol as ``latency.*`` params (logged on every trial run and compared on resume)."""
        if self.backend == "command":  # the device's own tool decides how it times: what it prints is the figure
            described: dict[str, str | int | float] = {"backend": self.backend, "threads": self.threads, "command": str(self.command),
                                                       "pattern": str(self.pattern), "unit": self.unit, "statistic": "as printed"}
        else:
            described = {"backend": self.backend, "threads": self.threads, "warmup": self.warmup, "min_runs": self.min_runs,
                         "max_runs": self.max_runs, "max_seconds": self.max_seconds, "statistic": "median", "batch_size": 1}
        return {f"latency.{k}": v for k, v in described.items()}

    def validate(self) -> None:
        """Raise ``ConfigError`` on an unknown backend, a command backend without its command, or too few runs."""
        check_choice(self.backend, LATENCY_BACKENDS, "latency.backend")
        if self.backend == "command" and (not self.command or not self.pattern):
            raise ConfigError("latency.backend = 'command' needs latency.command and latency.pattern; accepted: a shell command "
                              "with {model} and a regular expression whose first group is the time (as in conf/latency/command.yaml)")
        if self.min_runs < MIN_LATENCY_RUNS:
            raise ConfigError(f"latency.min_runs = {self.min_runs!r} is too few; accepted: >= {MIN_LATENCY_RUNS}")
        if isinstance(self.confirm_rounds, bool) or self.confirm_rounds < MIN_CONFIRM_ROUNDS:
            raise ConfigError(f"latency.confirm_rounds = {self.confirm_rounds!r} is too few; accepted: an integer >= {MIN_CONFIRM_ROUNDS}")
