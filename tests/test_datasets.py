"""fastoptim.demo.datasets: make_moons equal to scikit-learn's, and the course's data set."""
import numpy as np
import pytest

from fastoptim.demo.datasets import load_dataset, make_moons


@pytest.fixture
def global_state():
    """Restores NumPy's global random state after a test that seeds it."""
    saved = np.random.get_state()
    yield
    np.random.set_state(saved)


def assert_global_state_is(saved):
    now = np.random.get_state()
    assert now[0] == saved[0] and now[2:] == saved[2:]
    np.testing.assert_array_equal(now[1], saved[1], err_msg="the global random state changed")


# ------------------------------------------------ equal to scikit-learn


SIZES = [1, 2, 3, 7, 100, 300, (5, 9), (0, 4), (3, 0)]


@pytest.mark.parametrize("n_samples", SIZES, ids=str)
@pytest.mark.parametrize("noise", [None, 0.05, 0.2, 0.0])
@pytest.mark.parametrize("seed", [0, 3, 42])
@pytest.mark.parametrize("shuffle", [True, False])
def test_make_moons_equals_sklearn(n_samples, noise, seed, shuffle):
    sk = pytest.importorskip("sklearn.datasets")
    expected_X, expected_y = sk.make_moons(n_samples, shuffle=shuffle, noise=noise,
                                           random_state=seed)
    X, y = make_moons(n_samples, noise=noise, random_state=seed, shuffle=shuffle)
    assert X.dtype == expected_X.dtype and y.dtype == expected_y.dtype
    np.testing.assert_array_equal(X, expected_X, strict=True)
    np.testing.assert_array_equal(y, expected_y, strict=True)


def test_make_moons_random_state_instance_equals_sklearn():
    sk = pytest.importorskip("sklearn.datasets")
    ours, theirs = np.random.RandomState(7), np.random.RandomState(7)
    for _ in range(3):  # the same generator, advanced call after call
        X, y = make_moons(50, noise=0.1, random_state=ours)
        expected_X, expected_y = sk.make_moons(50, noise=0.1, random_state=theirs)
        np.testing.assert_array_equal(X, expected_X, strict=True)
        np.testing.assert_array_equal(y, expected_y, strict=True)
    np.testing.assert_array_equal(ours.get_state()[1], theirs.get_state()[1])


def test_make_moons_none_draws_from_the_global_state_like_sklearn(global_state):
    sk = pytest.importorskip("sklearn.datasets")
    np.random.seed(11)
    X, y = make_moons(40, noise=0.3)
    after_ours = np.random.get_state()
    np.random.seed(11)
    expected_X, expected_y = sk.make_moons(40, noise=0.3)
    np.testing.assert_array_equal(X, expected_X, strict=True)
    np.testing.assert_array_equal(y, expected_y, strict=True)
    assert_global_state_is(after_ours)


def test_load_dataset_is_the_course_recipe(global_state):
    sk = pytest.importorskip("sklearn.datasets")
    np.random.seed(3)  # the course's load_dataset
    train_X, train_Y = sk.make_moons(n_samples=300, noise=.2)
    X, Y = load_dataset()
    np.testing.assert_array_equal(X, train_X.T, strict=True)
    np.testing.assert_array_equal(Y, train_Y.reshape((1, train_Y.shape[0])), strict=True)


# ------------------------------------------------ checks without scikit-learn


@pytest.mark.parametrize("n_samples", [1, 2, 9, 100, (4, 6), (0, 3)], ids=str)
def test_points_lie_on_the_two_half_circles(n_samples):
    X, y = make_moons(n_samples, shuffle=False)
    n_outer, n_inner = (n_samples // 2, n_samples - n_samples // 2) \
        if isinstance(n_samples, int) else n_samples
    assert X.shape == (n_outer + n_inner, 2) and X.dtype == np.float64
    assert y.shape == (n_outer + n_inner,) and y.dtype == np.intp
    np.testing.assert_array_equal(y, [0] * n_outer + [1] * n_inner)
    outer, inner = X[:n_outer], X[n_outer:]
    # outer moon: the upper half of the unit circle, from (1, 0) to (-1, 0)
    np.testing.assert_allclose(outer[:, 0] ** 2 + outer[:, 1] ** 2, 1.0, rtol=1e-12)
    assert np.all(outer[:, 1] >= -1e-15)
    # inner moon: the lower half of the unit circle centred at (1, 0.5)
    np.testing.assert_allclose((inner[:, 0] - 1) ** 2 + (inner[:, 1] - 0.5) ** 2, 1.0,
                               rtol=1e-12)
    assert np.all(inner[:, 1] <= 0.5 + 1e-15)
    if n_outer > 1:
        np.testing.assert_allclose(outer[[0, -1]], [[1, 0], [-1, 0]], atol=1e-15)
        assert np.all(np.diff(outer[:, 0]) < 0)  # evenly spaced angles from 0 to pi
    if n_inner > 1:
        np.testing.assert_allclose(inner[[0, -1]], [[0, 0.5], [2, 0.5]], atol=1e-15)


def test_shuffle_permutes_points_and_labels_together():
    X0, y0 = make_moons(101, shuffle=False)
    X, y = make_moons(101, random_state=5)
    assert not np.array_equal(X, X0)
    # every shuffled point is one of the original points, with its label
    matches = np.all(X[:, None, :] == X0[None, :, :], axis=2)
    assert np.all(matches.sum(axis=1) == 1)
    np.testing.assert_array_equal(y, y0[matches.argmax(axis=1)])
    assert sorted(matches.argmax(axis=1)) == list(range(101))


def test_noise_is_gaussian_with_the_given_scale():
    X_clean, _ = make_moons(20000, random_state=1)
    X_noisy, _ = make_moons(20000, noise=0.2, random_state=1)  # same shuffle, then noise
    diff = X_noisy - X_clean
    assert abs(diff.mean()) < 0.01
    assert abs(diff.std() - 0.2) < 0.005
    # the noise is drawn after the shuffle, from the same generator
    rng = np.random.RandomState(1)
    rng.shuffle(np.arange(20000))
    np.testing.assert_allclose(diff, rng.normal(scale=0.2, size=(20000, 2)), rtol=0, atol=1e-12)


def test_same_seed_same_data_and_int_equals_randomstate():
    a = make_moons(60, noise=0.1, random_state=9)
    b = make_moons(60, noise=0.1, random_state=9)
    c = make_moons(60, noise=0.1, random_state=np.random.RandomState(9))
    d = make_moons(60, noise=0.1, random_state=10)
    for other in (b, c):
        np.testing.assert_array_equal(a[0], other[0])
        np.testing.assert_array_equal(a[1], other[1])
    assert not np.array_equal(a[0], d[0])


def test_seeded_calls_leave_the_global_state_alone():
    saved = np.random.get_state()
    make_moons(30, noise=0.2, random_state=4)
    make_moons(30, noise=0.2, random_state=np.random.RandomState(4))
    load_dataset()
    assert_global_state_is(saved)


def test_load_dataset_shapes_and_content():
    X, Y = load_dataset()
    assert X.shape == (2, 300) and X.dtype == np.float64
    assert Y.shape == (1, 300)
    assert set(np.unique(Y)) == {0, 1} and Y.sum() == 150
    X_moons, y_moons = make_moons(300, noise=0.2, random_state=3)
    np.testing.assert_array_equal(X, X_moons.T, strict=True)
    np.testing.assert_array_equal(Y[0], y_moons, strict=True)
    # a fresh call gives the same data
    X2, Y2 = load_dataset()
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"n_samples": 0}, ValueError, "n_samples"),
    ({"n_samples": -3}, ValueError, "n_samples"),
    ({"n_samples": (1, 2, 3)}, ValueError, "n_samples"),
    ({"n_samples": (1, -2)}, ValueError, "n_samples"),
    ({"n_samples": (1.5, 2)}, ValueError, "n_samples"),
    ({"n_samples": True}, TypeError, "n_samples"),
    ({"noise": -0.1}, ValueError, "noise"),
    ({"noise": float("nan")}, ValueError, "noise"),
    ({"noise": "0.2"}, TypeError, "noise"),
    ({"random_state": "3"}, TypeError, "random_state"),
    ({"random_state": 1.5}, TypeError, "random_state"),
])
def test_bad_arguments_name_the_argument(kwargs, error, word):
    with pytest.raises(error, match=word):
        make_moons(**kwargs)
