"""Macenko stain normalisation: exact recovery on hand-built two-stain images, recovery of the
synthetic scanners' true stain vectors, and agreement after normalising one scanner to another."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.common.imageio import read_image
from microrepro.datasets import stain
from microrepro.datasets.synthetic import he_fields

# Macenko's reference vectors: eosin keeps enough red OD for pure-eosin pixels to pass the
# beta threshold. (With Ruifrok's eosin, [0.07, 0.99, 0.11], they mostly do not, and the
# estimate is a slight H/E mixture: see the test below.)
H_VEC = stain.REFERENCE_STAIN_MATRIX[0]
E_VEC = stain.REFERENCE_STAIN_MATRIX[1]
RUIFROK_H = np.array([0.65, 0.70, 0.29])
RUIFROK_E = np.array([0.07, 0.99, 0.11])


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _two_stain_image(h_vec, e_vec, size=64, seed=0, Io=240.0):
    """Noise-free Beer-Lambert mixtures of two stains, including pure-H and pure-E pixels."""
    rng = np.random.default_rng(seed)
    conc = rng.uniform(0.0, 1.2, (size * size, 2))
    conc[: size * 4, 1] = 0.0  # some pure haematoxylin
    conc[size * 4 : size * 8, 0] = 0.0  # some pure eosin
    od = conc @ np.stack([_unit(h_vec), _unit(e_vec)])
    rgb = Io * np.exp(-od) - 1.0  # optical_density adds 1 back
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3)


@pytest.fixture(scope="module")
def scanner_pair():
    config = he_fields.HEConfig(image_size=(384, 384), mitoses_per_mm2=200.0)
    aperio = he_fields.generate(1, 4, config)[0]
    hamamatsu = he_fields.generate(1, 4, he_fields.HEConfig(image_size=(384, 384), scanner="hamamatsu",
                                                            mitoses_per_mm2=200.0))[0]
    return aperio, hamamatsu


def test_optical_density_exact():
    image = np.array([[[239, 239, 239], [0, 119, 59]]], np.uint8)
    od = stain.optical_density(image, Io=240)
    np.testing.assert_allclose(od[0], [0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(od[1], [np.log(240.0), np.log(2.0), np.log(4.0)], rtol=1e-12)


def test_recovers_known_stain_vectors_with_h_first():
    image = _two_stain_image(H_VEC, E_VEC)
    est = stain.macenko_stain_matrix(image)
    assert est.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(est, axis=1), 1.0)
    assert (est >= 0).all()
    cos = (est * np.stack([_unit(H_VEC), _unit(E_VEC)])).sum(1)
    assert cos.min() > 0.999
    assert est[0, 0] > est[1, 0]  # haematoxylin absorbs red, eosin hardly


def test_ruifrok_vectors_are_recovered_approximately():
    est = stain.macenko_stain_matrix(_two_stain_image(RUIFROK_H, RUIFROK_E))
    cos = (est * np.stack([_unit(RUIFROK_H), _unit(RUIFROK_E)])).sum(1)
    assert cos[0] > 0.999 and cos[1] > 0.99


def test_estimates_the_generators_true_vectors(scanner_pair):
    for sample in scanner_pair:
        est = stain.macenko_stain_matrix(sample.image)
        true = np.asarray(sample.meta["stain_matrix"])
        cos = (est * true).sum(1)
        assert cos.min() > 0.98, (sample.meta["scanner"], cos)


def test_normalising_one_scanner_to_the_other_aligns_their_stains(scanner_pair):
    aperio, hamamatsu = scanner_pair
    target = stain.macenko_stain_matrix(aperio.image)
    before = (stain.macenko_stain_matrix(hamamatsu.image) * target).sum(1)
    assert before.min() < 0.99  # the scanners differ

    matrix, max_conc = stain.fit_target(aperio.image)
    out = stain.macenko_normalize(hamamatsu.image, matrix, max_conc)
    assert out.shape == hamamatsu.image.shape and out.dtype == np.uint8
    after = (stain.macenko_stain_matrix(out) * target).sum(1)
    assert after.min() > 0.99
    # The normaliser class does the same thing.
    np.testing.assert_array_equal(stain.MacenkoNormalizer().fit(aperio.image).transform(hamamatsu.image), out)


def test_normalising_an_image_to_itself_changes_little():
    image = _two_stain_image(H_VEC, E_VEC, seed=1)
    matrix, max_conc = stain.fit_target(image)
    out = stain.macenko_normalize(image, matrix, max_conc)
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 1.5


def test_fit_target_max_concentrations_are_99th_percentiles():
    image = _two_stain_image(H_VEC, E_VEC, seed=2)
    matrix, max_conc = stain.fit_target(image)
    conc = stain.stain_concentrations(image, matrix)
    np.testing.assert_allclose(max_conc, np.percentile(conc, 99, axis=0))
    assert max_conc.shape == (2,) and (max_conc > 0.8).all()


def test_unfitted_normalizer_uses_the_macenko_reference():
    norm = stain.MacenkoNormalizer()
    assert not norm.fitted
    np.testing.assert_array_equal(norm.stain_matrix, stain.REFERENCE_STAIN_MATRIX)
    image = _two_stain_image(H_VEC, E_VEC, seed=3)
    out = norm.transform(image)
    est = stain.macenko_stain_matrix(out)
    assert (est * _unit(stain.REFERENCE_STAIN_MATRIX)).sum(1).min() > 0.99


def test_blank_and_bad_inputs_raise_clear_errors():
    blank = np.full((32, 32, 3), 245, np.uint8)
    blank[0, 0] = (120, 60, 120)  # a single stained pixel is not enough
    with pytest.raises(ValueError, match="too little tissue"):
        stain.macenko_stain_matrix(blank)
    with pytest.raises(ValueError, match="too little tissue"):
        stain.macenko_normalize(blank)
    with pytest.raises(ValueError, match="RGB"):
        stain.macenko_stain_matrix(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stain.macenko_stain_matrix(np.zeros((8, 8, 3), np.float32))
    image = _two_stain_image(H_VEC, E_VEC)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        stain.macenko_normalize(image, np.eye(3), [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        stain.macenko_normalize(image, stain.REFERENCE_STAIN_MATRIX, [1.0, 0.0])


def test_real_he_image_gives_plausible_stains(shared_data):
    image = read_image(shared_data("nuclei_stardist") / "histo.jpg", channels=3)
    est = stain.macenko_stain_matrix(image)
    cos = (est * _unit(stain.REFERENCE_STAIN_MATRIX)).sum(1)
    assert cos.min() > 0.9  # close to the textbook H&E vectors
    assert est[0, 0] > est[1, 0]
