"""Seeded synthetic generators with exact ground truth, previews and summary statistics.

Every generator module has a ``<Name>Config`` dataclass and
``generate(n, seed, config=None) -> list[Sample]``; image ``i`` depends only on ``(seed, i)``.

- ``simcep``: SIMCEP-like grey fluorescence cells (fcn_segmentation);
- ``neurons``: CTb-stained neurons, yellow on dark, with confusers (cell_counting);
- ``spines``: dendrites with labelled spine heads (spines);
- ``he``: H&E fields at x40 with mitotic figures and look-alikes, two scanners (mitos_rcnn,
  dwt_mitosis).
"""

from microrepro.datasets.synthetic import he_fields, neurons, preview, simcep, spines
from microrepro.datasets.synthetic.preview import stats

# ``preview`` is the module (``preview.preview(...)``, ``preview.preview_with_real(...)``).

GENERATORS = {
    "simcep": simcep.generate,
    "neurons": neurons.generate,
    "spines": spines.generate,
    "he": he_fields.generate,
}
CONFIGS = {
    "simcep": simcep.SimcepConfig,
    "neurons": neurons.NeuronsConfig,
    "spines": spines.SpinesConfig,
    "he": he_fields.HEConfig,
}

__all__ = ["CONFIGS", "GENERATORS", "stats", "preview", "he_fields", "neurons", "simcep", "spines"]
