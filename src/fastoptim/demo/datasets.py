"""The course's training data: two interleaving half circles ("moons").

`make_moons` returns exactly what scikit-learn's `make_moons` returns for the
same `random_state`, without needing scikit-learn. `load_dataset` is the
course's data set, drawn from a private generator so NumPy's global random
state is left alone.
"""
import numbers

import numpy as np


def make_moons(n_samples=100, noise=None, random_state=None, *, shuffle=True):
    """Two interleaving half circles, as scikit-learn's `make_moons`.

    n_samples: the total number of points (the outer moon gets n_samples // 2),
        or a pair (n_outer, n_inner).
    noise: standard deviation of the Gaussian noise added to the points, or None.
    random_state: an int seed, a numpy.random.RandomState, or None for NumPy's
        global random state (which is then advanced, as scikit-learn does).
    shuffle: shuffle the points (before the noise is added).

    Returns X of shape (n_samples, 2), float64, and y of shape (n_samples,),
    the 0/1 labels as np.intp.
    """
    n_outer, n_inner = _split(n_samples)
    if noise is not None:
        if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real):
            raise TypeError(f"noise must be a real number or None, got {type(noise).__name__}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
    generator = _random_state(random_state)

    outer = np.linspace(0, np.pi, n_outer)
    inner = np.linspace(0, np.pi, n_inner)
    X = np.vstack([
        np.append(np.cos(outer), 1 - np.cos(inner)),
        np.append(np.sin(outer), 1 - np.sin(inner) - 0.5),
    ]).T
    y = np.hstack([np.zeros(n_outer, dtype=np.intp), np.ones(n_inner, dtype=np.intp)])

    if shuffle:
        order = np.arange(n_outer + n_inner)
        generator.shuffle(order)
        X, y = X[order], y[order]
    if noise is not None:
        X += generator.normal(scale=noise, size=X.shape)
    return X, y


def load_dataset():
    """The course's training set: 300 moons points with noise 0.2, seed 3.

    The course calls np.random.seed(3) and then make_moons(n_samples=300,
    noise=.2); a private RandomState(3) draws the same numbers without
    touching NumPy's global random state. Returns X of shape (2, 300) and
    Y of shape (1, 300), laid out as the course's (X is the transpose of
    make_moons' points).
    """
    X, y = make_moons(n_samples=300, noise=0.2, random_state=np.random.RandomState(3))
    return X.T, y.reshape((1, y.shape[0]))


def _split(n_samples):
    if isinstance(n_samples, (bool, np.bool_)):
        raise TypeError("n_samples must be an integer or a pair of integers, got bool")
    if isinstance(n_samples, numbers.Integral):
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"n_samples must be >= 1, got {n}")
        return n // 2, n - n // 2
    try:
        n_outer, n_inner = n_samples
    except (TypeError, ValueError):
        raise ValueError(
            f"n_samples must be an integer or a pair (n_outer, n_inner), got {n_samples!r}"
        ) from None
    for n in (n_outer, n_inner):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(
                f"n_samples must be a pair of non-negative integers, got {n_samples!r}"
            )
    return int(n_outer), int(n_inner)


def _random_state(seed):
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        return np.random.RandomState(seed)
    raise TypeError(
        f"random_state must be None, an int or a numpy.random.RandomState, "
        f"got {type(seed).__name__}"
    )
