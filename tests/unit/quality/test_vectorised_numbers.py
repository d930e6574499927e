"""The vectorised number parsing (`floats`, `integers`) gives what the scalar grammar
(`to_float`, `to_int`) gives, bit for bit, on random text built from the grammar's edges."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from tasks.quality.pandas_rules import floats, integers, to_float, to_int

PIECES = [
    *("", " ", "\t", "+", "-", "0", "1", "9", "007", ".", "e", "E", "e+", "e-", "308", "400"),
    *("x", "nan", "inf", "_", "1_0", "\u0663", "\n", "NA", "0x1f"),
    *("9223372036854775807", "9223372036854775808", "-9223372036854775808"),
]


def _texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6))) for _ in range(4000)]
    texts += [repr(rng.uniform(-1e300, 1e300)) for _ in range(1000)]
    texts += [f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 20)}f}" for _ in range(1000)]
    texts += [f"{rng.randint(-(2**63), 2**63 - 1)}.0" for _ in range(200)]
    return texts + ["9.3e18", "-9.223372036854775808e18", "1e3", " 9.0 ", "+1e2", "4.9e-324"]


@pytest.mark.parametrize("dtype", ["str", object])
@pytest.mark.parametrize("seed", [0, 1])
def test_floats_are_bit_identical_to_to_float(seed, dtype):
    texts = _texts(seed)
    got = floats(pd.Series(texts, dtype=dtype))
    want = np.array([np.nan if (v := to_float(t)) is None else v for t in texts])
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)].view("int64"), want[~np.isnan(want)].view("int64"))


@pytest.mark.parametrize("overflow", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_integers_equal_to_int_with_and_without_text_beyond_int64(seed, overflow):
    rng = random.Random(seed)
    texts = [str(rng.randint(-(10**12), 10**12)) for _ in range(2000)] + _texts(seed)
    if not overflow:  # the fast path: every integer text fits int64
        texts = [t for t in texts if not (t.strip().lstrip("+-").isdigit() and to_int(t) is None)]
    got = integers(pd.Series(texts, dtype="str"))
    assert [None if pd.isna(v) else int(v) for v in got] == [to_int(t) for t in texts]


def test_missing_values_stay_missing():
    got = integers(pd.Series(["1", None, "x"], dtype="str"))
    assert [None if pd.isna(v) else int(v) for v in got] == [1, None, None]
    assert np.isnan(floats(pd.Series([None, "1.5"], dtype=object))[0])
