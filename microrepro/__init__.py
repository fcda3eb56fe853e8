"""microrepro: TensorFlow/Keras reproductions of microscopy detection and counting papers.

The repository keeps ``common/``, ``datasets/`` and ``reproductions/`` at its root (see
CONVENTIONS.md); setup.cfg installs them as ``microrepro.common``, ``microrepro.datasets`` and
``microrepro.reproductions``.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the progress a user reads;
# warnings and errors still show. Set before any submodule imports TensorFlow.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
