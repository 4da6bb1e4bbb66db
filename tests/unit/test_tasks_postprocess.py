"""Gender and verification postprocess: fields, normalisation, the fixed batch of 2."""

import numpy as np
import pytest

from harness.errors import InputError
from harness.tasks.gender import gender_fields, prob_male
from harness.tasks.verification import l2_normalize, pad_batch, split_batch


def test_prob_male_is_column_one():
    np.testing.assert_allclose(prob_male(np.array([[0.2, 0.8], [0.9, 0.1]])), [0.8, 0.1])
    with pytest.raises(InputError, match=r"\[N, 2\]"):
        prob_male(np.zeros((2, 3)))


def test_gender_fields():
    assert gender_fields(0.8, "male") == {"label": "male", "prob_male": 0.8, "pred": "male", "correct": True}
    assert gender_fields(0.3, "male")["correct"] is False
    assert gender_fields(0.3, None) == {"label": None, "prob_male": 0.3, "pred": "female", "correct": None}
    with pytest.raises(InputError, match="label 'M'"):
        gender_fields(0.3, "M")


def test_l2_normalize_rows():
    e = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(e, [[0.6, 0.8], [0, 0]])
    assert e.dtype == np.float32


def test_pad_and_split_the_fixed_batch():
    one = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    padded, n = pad_batch(one, 2)
    assert padded.shape == (2, 2, 3) and n == 1
    np.testing.assert_array_equal(padded[1], one[0])
    np.testing.assert_array_equal(split_batch(padded, n), one)
    two = np.zeros((2, 2, 3))
    assert pad_batch(two)[0] is two
    with pytest.raises(InputError, match="batch of 3"):
        pad_batch(np.zeros((3, 2, 3)))
