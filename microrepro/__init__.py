"""microrepro: TensorFlow/Keras reproductions of microscopy detection and counting papers.

The repository keeps ``common/``, ``datasets/`` and ``reproductions/`` at its root (see
CONVENTIONS.md); setup.cfg installs them as ``microrepro.common``, ``microrepro.datasets`` and
``microrepro.reproductions``.
"""

__version__ = "0.1.0"
