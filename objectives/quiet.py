"""The console switch (``verbose``) and the one filter for what native libraries print on their own.

``verbose`` travels in the environment (``LITESWEEP_VERBOSE``) so that every process of a sweep (workers,
trial processes) follows the setting of the command that started it. Off (the default), litesweep keeps the
noise of the libraries it calls out of the console: Python warnings are filtered by message where they are
raised (``litesweep.search.console``), TensorFlow's C++ logs by ``TF_CPP_MIN_LOG_LEVEL`` (``compat``), and the
few lines native code writes straight to the process's stderr, past every logging setting, by
``native_noise_filtered`` around the one call that prints them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

VERBOSE_ENV = "LITESWEEP_VERBOSE"

#: Lines native code prints that no setting turns off, each matched from its start:
NATIVE_NOISE = re.compile("|".join((
    # absl's notice before TensorFlow's logging is set up: printed by each library carrying its own absl copy
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # the CUDA runtime probe, logged by a static initializer of libtensorflow_framework.so as it loads (that is,
    # before TF_CPP_MIN_LOG_LEVEL is read), and the driver probe when the devices are first listed (an ERROR)
    r"[IWE]\d{4} .*(cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics\.cc)",
    r"[IWE]\d{4} .*oneDNN custom operations are on",
    # the MLIR quantizer (TF's lite converter, calibrated conversions) writes this to llvm::dbgs(), which is
    # stderr in release builds: it has no log level and no flag
    r"fully_quantize: \d+, inference_type: ",
    # LiteRT, once per process, when the interpreter first applies its default delegate
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
)))


def verbose() -> bool:
    """Whether this process (and the command that started it) shows every library's own output."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def set_verbose(on: bool) -> None:
    """Set ``verbose`` for this process and every process it starts."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Run the block with file descriptor 2 (stderr) passed through a filter that drops ``NATIVE_NOISE`` lines.

    Only around a single native call that prints on its own (a library's load, a calibrated conversion): a
    thread forwards every other line to the real stderr as it comes, so a real error shows (even if the
    call then aborts the process). stdout is left alone. With ``verbose`` on, nothing is filtered.
    """
    if verbose():
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    console = os.dup(2)
    forward = threading.Thread(target=_forward, args=(read_end, console), name="litesweep-native-stderr", daemon=True)
    forward.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(console, 2)  # the pipe's last write end closes: the thread reads to its end and stops
        forward.join(timeout=10)
        if not forward.is_alive():  # else a child process still holds the pipe: the thread keeps forwarding
            os.close(console)


def _forward(read_end: int, console: int) -> None:
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not NATIVE_NOISE.match(line.decode(errors="replace")):
                os.write(console, line)
