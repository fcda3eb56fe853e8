"""microrepro: TensorFlow/Keras reproductions of microscopy detection and counting papers.

The repository keeps ``common/``, ``datasets/`` and ``reproductions/`` at its root (see
CONVENTIONS.md); setup.cfg installs them as ``microrepro.common``, ``microrepro.datasets`` and
``microrepro.reproductions``.

TensorFlow's start-up chatter: TensorFlow 2.21 logs through Abseil, whose messages written before
``absl::InitializeLog()`` go to stderr whatever ``TF_CPP_MIN_LOG_LEVEL`` says (the
``I0000 ... oneDNN custom operations are on``, ``cudart_stub ... Could not find cuda drivers`` and,
on a machine without an NVIDIA device, ``E0000 ... failed call to cuInit`` lines). While TensorFlow
is first imported (and probes for GPUs) the process's stderr is caught at the file-descriptor level
and replayed without those lines; everything else (real warnings and errors) is replayed as written.
``TF_CPP_MIN_LOG_LEVEL=0`` turns the filter off.
"""

import os as _os
import sys as _sys

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the progress a user reads;
# warnings and errors still show. Set before any submodule imports TensorFlow.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def _is_startup_noise(line: str, gpu_device_present: bool) -> bool:
    """True for TensorFlow's pre-InitializeLog INFO lines and, without a GPU device, its cuInit error."""
    import re

    if line.startswith("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"):
        return True
    if re.match(r"I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ ", line):  # an Abseil INFO line (hidden at level >= 1)
        return True
    if not gpu_device_present and re.match(r"E\d{4} .*(cuInit|cuda_platform|cuda_executor|cuda_diagnostics)", line):
        return True
    return False


class _QuietTensorFlowImport:
    """A ``sys.meta_path`` finder that filters TensorFlow's start-up lines out of fd 2 (see module doc)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        import importlib.util

        if self in _sys.meta_path:
            _sys.meta_path.remove(self)  # once: the real finders find TensorFlow
        spec = importlib.util.find_spec("tensorflow")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _filtered_stderr():
                exec_module(module)
                try:  # the CUDA probe prints its cuInit error here rather than at the first model
                    module.config.list_physical_devices("GPU")
                except Exception:  # noqa: BLE001 - a probe only; TensorFlow reports real problems later
                    pass

        spec.loader.exec_module = quiet_exec_module
        return spec


class _filtered_stderr:
    """Context manager: fd 2 goes to a temporary file, replayed without start-up noise on exit."""

    def __enter__(self):
        import tempfile

        self.saved = None
        try:
            _sys.stderr.flush()
            self.saved = _os.dup(2)
            self.buffer = tempfile.TemporaryFile()
            _os.dup2(self.buffer.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2: leave stderr alone
            if self.saved is not None:
                _os.close(self.saved)
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        try:
            _sys.stderr.flush()
        except (OSError, ValueError):
            pass
        _os.dup2(self.saved, 2)
        _os.close(self.saved)
        self.buffer.seek(0)
        text = self.buffer.read().decode("utf-8", errors="replace")
        self.buffer.close()
        gpu = any(name.startswith("nvidia") for name in _safe_listdir("/dev"))
        kept = [line for line in text.splitlines(keepends=True) if not _is_startup_noise(line, gpu)]
        if kept:
            _sys.stderr.write("".join(kept))
            _sys.stderr.flush()
        return False


def _safe_listdir(folder: str) -> list:
    try:
        return _os.listdir(folder)
    except OSError:
        return []


def _install_quiet_import() -> None:
    try:
        level = int(_os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    if level >= 1 and "tensorflow" not in _sys.modules:
        _sys.meta_path.insert(0, _QuietTensorFlowImport())


_install_quiet_import()
