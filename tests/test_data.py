"""Tests for jaxflows.data: toy sets, digits, file loading, standardisation, splits."""

import math
import os
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import jax
    import jax.numpy as jnp

from jaxflows import data as D

UCI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "uci")
RED = os.path.join(UCI, "wine_quality_red", "winequality-red.csv")
WHITE = os.path.join(UCI, "wine_quality_white", "winequality-white.csv")
needs_uci = pytest.mark.skipif(not os.path.exists(RED),
                               reason="../shared/data/uci is not present on this machine")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- toy data

def test_two_moons_shape_determinism_and_keys():
    x = D.two_moons(0, 101, noise=0.1)
    assert x.shape == (101, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, D.two_moons(0, 101, noise=0.1))
    assert not np.allclose(x, D.two_moons(1, 101, noise=0.1))
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        np.testing.assert_array_equal(D.two_moons(key, 7), D.two_moons(key, 7))
    np.testing.assert_array_equal(D.two_moons(jax.random.PRNGKey(3), 7),
                                  D.two_moons(jax.random.key(3), 7))


def test_two_moons_points_lie_on_the_moons():
    x = D.two_moons(2, 400, noise=0.0).astype(np.float64)
    outer = np.abs(np.hypot(x[:, 0], x[:, 1]) - 1.0) < 1e-5
    inner = np.abs(np.hypot(x[:, 0] - 1.0, x[:, 1] - 0.5) - 1.0) < 1e-5
    assert np.all(outer | inner)
    assert outer.sum() == 200 and inner.sum() == 200  # balanced
    assert np.all(x[outer, 1] >= -1e-6) and np.all(x[inner, 1] <= 0.5 + 1e-6)
    # with noise, not a Gaussian: the mean sits between the moons where few points are
    y = D.two_moons(2, 2000, noise=0.1)
    dist = np.linalg.norm(y - y.mean(0), axis=1)
    assert np.mean(dist < 0.2) < 0.05


def test_checkerboard_support_and_balance():
    x = D.checkerboard(5, 4000)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert np.all((x >= -2) & (x <= 2))
    cell = np.floor(x).astype(int)
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)
    counts = np.unique(cell[:, 0] * 10 + cell[:, 1], return_counts=True)[1]
    assert counts.size == 8 and counts.min() > 400  # all 8 squares, ~500 each
    np.testing.assert_array_equal(x, D.checkerboard(5, 4000))


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_toy_bad_n(bad):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        D.two_moons(0, bad)


def test_toy_bad_key():
    with pytest.raises(TypeError, match="key_or_seed"):
        D.two_moons("seed", 5)
    with pytest.raises(ValueError, match="noise"):
        D.two_moons(0, 5, noise=-1.0)


# ---------------------------------------------------------------- digits

def test_digits_dequantised():
    raw = D.digits(dequantize=False)
    assert raw.shape == (1797, 64) and raw.dtype == np.float32
    assert np.array_equal(raw, np.round(raw)) and raw.min() == 0 and raw.max() == 16
    x = D.digits(seed=0)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(np.floor(x), raw)
    frac = x - raw
    assert frac.min() >= 0 and frac.max() < 1 and abs(frac.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(x, D.digits(seed=0))
    assert not np.array_equal(x, D.digits(seed=1))


# ---------------------------------------------------------------- real CSV

@needs_uci
def test_uci_wine_red_drop_quality():
    x = D.load_array(RED, drop="quality")
    assert x.shape == (1599, 11) and x.dtype == np.float64
    np.testing.assert_allclose(
        x[0], [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4])
    full = D.load_array(RED)
    assert full.shape == (1599, 12)
    np.testing.assert_array_equal(full[:, -1][:3], [5, 5, 5])
    np.testing.assert_array_equal(D.load_array(RED, drop=-1), x)
    np.testing.assert_array_equal(D.load_array(RED, drop=[11]), x)
    np.testing.assert_array_equal(D.load_array(RED, drop="11"), x)
    np.testing.assert_array_equal(D.load_array(RED, delimiter=";", header=True, drop="quality"), x)
    two = D.load_array(RED, drop="quality,alcohol")
    np.testing.assert_array_equal(two, x[:, :10])


@needs_uci
def test_uci_wine_white_and_bad_name():
    assert D.load_array(WHITE, drop="quality").shape == (4898, 11)
    with pytest.raises(ValueError, match=r"winequality-red\.csv' has no column 'qualty'.*'quality'"):
        D.load_array(RED, drop="qualty")


# ---------------------------------------------------------------- small text files

EXPECTED = np.array([[1.0, 2.5, -3.0], [4.0, 5.0, 6e-3]])


@pytest.mark.parametrize("name,text", [
    ("comma_header.csv", "a,b,c\n1,2.5,-3\n4,5,6e-3\n"),
    ("comma_quoted.csv", '"a","b","c"\n1,2.5,-3\n\n4,5,6e-3\n'),
    ("comma_noheader.csv", "1,2.5,-3\n4,5,6e-3\n"),
    ("semicolon.csv", "a;b;c\n1;2.5;-3\n4;5;6e-3\n"),
    ("tab.tsv", "a\tb\tc\n1\t2.5\t-3\n4\t5\t6e-3\n"),
    ("spaces.txt", "# saved by np.savetxt\n1 2.5  -3\n4   5 6e-3\n"),
    ("crlf_bom.csv", "\ufeffa,b,c\r\n1,2.5,-3\r\n4,5,6e-3\r\n"),
])
def test_text_formats(tmp_path, name, text):
    x = D.load_array(write(tmp_path, name, text))
    np.testing.assert_allclose(x, EXPECTED)


def test_header_forced_and_explicit_delimiter(tmp_path):
    path = write(tmp_path, "nums.csv", "1,2\n3,4\n5,6\n")
    assert D.load_array(path).shape == (3, 2)
    np.testing.assert_array_equal(D.load_array(path, header=True), [[3, 4], [5, 6]])
    tabbed = write(tmp_path, "t.txt", "1\t2\n3\t4\n")
    np.testing.assert_array_equal(D.load_array(tabbed, delimiter="tab"), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(D.load_array(tabbed, delimiter="\t"), [[1, 2], [3, 4]])
    # a wrong explicit delimiter leaves one unparseable column, named in the error
    with pytest.raises(ValueError, match=r"non-numeric column 0"):
        D.load_array(tabbed, delimiter=",")


def test_single_column_csv_is_2d(tmp_path):
    x = D.load_array(write(tmp_path, "one.csv", "v\n1\n2\n3\n"))
    assert x.shape == (3, 1)


def test_string_column_rejected_by_name_then_dropped(tmp_path):
    path = write(tmp_path, "labels.csv", "x,species,y\n1,setosa,2\n3,virginica,4\n")
    with pytest.raises(ValueError, match=r"labels\.csv' has a non-numeric column 'species' "
                                         r"\(index 1\): 'setosa' on line 2"):
        D.load_array(path)
    np.testing.assert_array_equal(D.load_array(path, drop="species"), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(D.load_array(path, drop=1), [[1, 2], [3, 4]])


def test_string_column_without_header(tmp_path):
    path = write(tmp_path, "nohead.csv", "1,a,2\n3,b,4\n")
    with pytest.raises(ValueError, match=r"non-numeric column 1: 'a' on line 1"):
        D.load_array(path)
    np.testing.assert_array_equal(D.load_array(path, drop=1), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="no header row"):
        D.load_array(path, drop="label")


def test_nan_and_missing_rows_counted(tmp_path):
    path = write(tmp_path, "gaps.csv", "a,b\n1,2\n3,nan\n5,6\n,8\n9,inf\nNA,1\n2,?\n")
    with pytest.raises(ValueError, match=r"gaps\.csv' has 5 rows with NaN, Inf or missing "
                                         r"values \(first: data row 1, 0-based \(line 3"):
        D.load_array(path)


def test_ragged_rows(tmp_path):
    path = write(tmp_path, "ragged.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"ragged\.csv' has 2 fields on line 3 but 3 in the header"):
        D.load_array(path, delimiter=",")


def test_decimal_comma_hint(tmp_path):
    path = write(tmp_path, "euro.csv", "a;b\n1,5;2,0\n3,0;4,5\n")
    with pytest.raises(ValueError, match=r"column 'a' \(index 0\): '1,5'.*decimal comma"):
        D.load_array(path)
    # without a header every row also splits consistently on ',': ';' must win
    path = write(tmp_path, "euro2.csv", "1,5;2,0\n3,0;4,5\n")
    with pytest.raises(ValueError, match=r"column 0: '1,5'.*decimal comma"):
        D.load_array(path)


@pytest.mark.parametrize("text,match", [
    ("", "is empty"),
    ("\n# only a comment\n\n", "is empty"),
    ("a,b,c\n", "has no data rows"),
])
def test_empty_text(tmp_path, text, match):
    with pytest.raises(ValueError, match=r"empty\.csv' " + match):
        D.load_array(write(tmp_path, "empty.csv", text))


def test_drop_everything_and_bad_index(tmp_path):
    path = write(tmp_path, "two.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match="no columns left after dropping"):
        D.load_array(path, drop=["a", "b"])
    with pytest.raises(ValueError, match="has 2 columns, so column index 5"):
        D.load_array(path, drop=5)


# ---------------------------------------------------------------- numpy files

def test_npy_shapes_and_dtypes(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    x = D.load_array(tmp_path / "a.npy")
    assert x.shape == (3, 2) and x.dtype == np.float32
    np.save(tmp_path / "v.npy", np.arange(4, dtype=np.int32))
    v = D.load_array(str(tmp_path / "v.npy"))
    assert v.shape == (4, 1) and v.dtype == np.float64
    np.testing.assert_array_equal(D.load_array(tmp_path / "a.npy", drop=0), [[1], [3], [5]])


@pytest.mark.parametrize("arr,match", [
    (np.zeros((2, 3, 4)), r"shape \(2, 3, 4\); expected \(n, d\)"),
    (np.zeros((0, 3)), "has no data rows"),
    (np.zeros((3, 0)), "has no columns"),
    (np.array(["a", "b"]), "not numbers"),
    (np.array([[1.0, np.nan], [np.inf, 2.0], [1.0, 2.0]]), r"2 rows with NaN.*first: data row 0"),
])
def test_npy_bad_contents(tmp_path, arr, match):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ValueError, match=r"bad\.npy'.*" + match):
        D.load_array(tmp_path / "bad.npy")


def test_npy_objects_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy' holds Python objects"):
        D.load_array(tmp_path / "obj.npy")


def test_npz_keys(tmp_path):
    np.savez(tmp_path / "one.npz", only=np.ones((4, 3)))
    assert D.load_array(tmp_path / "one.npz").shape == (4, 3)
    np.savez(tmp_path / "many.npz", data=np.ones((5, 2)), targets=np.arange(5))
    with pytest.raises(ValueError, match=r"many\.npz' holds 2 arrays \('data', 'targets'\); "
                                         "pick one with key"):
        D.load_array(tmp_path / "many.npz")
    assert D.load_array(tmp_path / "many.npz", key="data").shape == (5, 2)
    assert D.load_array(tmp_path / "many.npz", key="targets").shape == (5, 1)
    with pytest.raises(ValueError, match=r"no array named 'x'; it holds 'data', 'targets'"):
        D.load_array(tmp_path / "many.npz", key="x")


def test_truncated_npz_and_npy(tmp_path):
    np.savez_compressed(tmp_path / "full.npz", data=np.random.default_rng(0).normal(size=(200, 5)))
    raw = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz' is not a readable \.npz file"):
        D.load_array(tmp_path / "cut.npz")
    np.save(tmp_path / "full.npy", np.ones((50, 4)))
    raw = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:200])
    with pytest.raises(ValueError, match=r"cut\.npy'"):
        D.load_array(tmp_path / "cut.npy")


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.csv' does not exist"):
        D.load_array(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"unsupported extension '\.xlsx'"):
        D.load_array(write(tmp_path, "sheet.xlsx", "1,2\n"))
    with pytest.raises(ValueError, match="is a directory"):
        D.load_array(tmp_path)
    with pytest.raises(ValueError, match="key='x' only applies to .npz"):
        D.load_array(write(tmp_path, "k.csv", "1,2\n"), key="x")
    np.save(tmp_path / "d.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match="only apply to text files"):
        D.load_array(tmp_path / "d.npy", delimiter=",")
    with pytest.raises(ValueError, match="cannot be dropped by name"):
        D.load_array(tmp_path / "d.npy", drop="quality")


def test_check_finite():
    x = np.ones((5, 2))
    assert D.check_finite(x, "train") is x
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"^train has 1 row with NaN or Inf values \(first: row 3"):
        D.check_finite(x, "train")
    with pytest.raises(ValueError, match="2 rows"):
        D.check_finite(jnp.array([1.0, jnp.inf, -jnp.inf]), "v")


# ---------------------------------------------------------------- standardisation

def test_standardizer_moments_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[3.0, -1.0, 100.0], scale=[0.1, 2.0, 50.0], size=(500, 3))
    s = D.fit_standardizer(x)
    z = D.standardize(s, x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-12)
    np.testing.assert_allclose(D.unstandardize(s, z), x, rtol=1e-12)
    assert D.standardize(s, x.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(D.standardizer_log_det(s), -np.sum(np.log(x.std(0))))


def test_standardizer_refuses_a_constant_column():
    """A constant column has no density (a point mass: unbounded likelihood): named, refused."""
    x = np.column_stack([np.arange(10.0), np.full(10, 0.1), np.arange(10.0) ** 2])
    np.testing.assert_array_equal(D.constant_columns(x), [1])
    with pytest.raises(ValueError, match=r"zero variance in column 1 \(0-based; column 1 is 0\.1 "
                                         r"in every row\).*drop the column"):
        D.fit_standardizer(x)
    x[:, 2] = -4.0
    with pytest.raises(ValueError, match=r"zero variance in 2 columns \(1, 2\)"):
        D.fit_standardizer(x)


def test_standardizer_log_det_changes_units():
    """log N(x; m, diag s^2) == log N(z; 0, I) + standardizer_log_det."""
    from scipy.stats import multivariate_normal

    s = D.Standardizer(mean=np.array([1.0, -2.0]), scale=np.array([0.5, 3.0]))
    x = np.array([[0.3, 4.0], [1.0, -2.0]])
    z = D.standardize(s, x)
    ours = multivariate_normal(np.zeros(2)).logpdf(z) + D.standardizer_log_det(s)
    exact = multivariate_normal(s.mean, np.diag(s.scale ** 2)).logpdf(x)
    np.testing.assert_allclose(ours, exact, rtol=1e-12)


def test_standardizer_under_jit_and_errors():
    s = D.fit_standardizer(np.array([[0.0, 1.0], [2.0, 5.0]]))
    f = jax.jit(lambda s, x: (D.standardize(s, x), D.standardizer_log_det(s)))
    z, ld = f(s, jnp.array([[1.0, 3.0]]))
    np.testing.assert_allclose(z, [[0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(ld, -np.log(1.0) - np.log(2.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\).*got shape \(4, 3\)"):
        D.standardize(s, np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        D.fit_standardizer(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        D.fit_standardizer(np.ones(3))


# ---------------------------------------------------------------- split, units

def test_split_partition_and_determinism():
    x = np.arange(103)
    tr, va, te = D.split(x, seed=1)
    assert (len(tr), len(va), len(te)) == (82, 11, 10)  # bounds round(82.4), round(92.7)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(103))
    for a, b in zip((tr, va, te), D.split(x, seed=1)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tr, D.split(x, seed=2)[0])
    a, b = D.split(jnp.arange(10.0)[:, None], fractions=(0.5, 0.5))
    assert a.shape == (5, 1) and b.shape == (5, 1)


def test_split_errors():
    with pytest.raises(ValueError, match="summing to 1"):
        D.split(np.ones(10), fractions=(0.5, 0.4))
    with pytest.raises(ValueError, match="summing to 1"):
        D.split(np.ones(10), fractions=(1.2, -0.2))
    with pytest.raises(ValueError, match="leaves a part empty"):
        D.split(np.ones(3), fractions=(0.8, 0.1, 0.1))


def test_bits_per_dim():
    assert D.bits_per_dim(-8 * math.log(2.0), 8) == pytest.approx(1.0)
    np.testing.assert_allclose(D.bits_per_dim(np.array([0.0, -64.0]), 64),
                               [0.0, 1.0 / math.log(2.0)])
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        D.bits_per_dim(-1.0, 0)
