"""Hostile checkpoint files: load_checkpoint on files from elsewhere.

Every file here is a valid checkpoint with something done to it: cut at any
byte, bytes flipped, entries replaced by arrays of other dtypes and shapes (NaN
scalars, object, structured and subarray dtypes), entries added, removed or
renamed, forged .npy headers (huge declared shapes), forged zip directories
(declared sizes, CRCs, compression methods, flags) and compressed members that
expand enormously. Each load either reads exactly what the file holds (as NumPy's
own reader, without pickles, reads it) or raises ValueError, KeyError or
TypeError naming the file, with the parameters and the optimizer (state, t,
learning rate, hyperparameters) bitwise unchanged; and it never allocates much
more than the destination needs (tracemalloc's peak, which counts NumPy's
allocations, stays under MEMORY).

FASTOPTIM_EXAMPLES_SCALE multiplies the examples of the property tests (for a
long campaign, e.g. 100 with --hypothesis-seed).
"""
import functools
import io
import os
import struct
import tempfile
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastoptim as fo
from _helpers import examples, in_layouts
from fastoptim import schedules

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
SHAPES = {"W1": (5, 2), "b1": (5, 1), "W2": (1, 5), "b2": (1, 1)}
ERRORS = (ValueError, KeyError, TypeError)
MEMORY = 4 << 20  # bytes: the destinations hold about 1 KB; a bomb expands to 64 MiB and more
NAME = "hostile.npz"


def init(seed):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    params["W1"] = np.asfortranarray(params["W1"])
    return params


def build(kind, params, learning_rate):
    if kind == "adam":
        return fo.Adam(params, learning_rate=learning_rate)
    # a schedule, per-key weight decay, a flag and an extra scalar (mu_product)
    return fo.NAdam(params, learning_rate=learning_rate, decoupled_weight_decay=True,
                    weight_decay={k: 0.01 * (i + 1) for i, k in enumerate(SHAPES)})


KINDS = ["adam", "nadam"]


@functools.lru_cache(maxsize=None)
def source(kind):
    """The valid checkpoint's bytes."""
    params = init(3)
    lr = 0.02 if kind == "adam" else schedules.CosineDecay(0.01, 50, warmup_steps=5)
    opt = build(kind, params, lr)
    rng = np.random.default_rng(100)
    for _ in range(3):
        opt.step(in_layouts({"d" + k: rng.standard_normal(s) for k, s in SHAPES.items()}, params))
    with tempfile.TemporaryDirectory() as d:
        fo.save_checkpoint(os.path.join(d, "c.npz"), params, opt)
        with open(os.path.join(d, "c.npz"), "rb") as f:
            return f.read()


@functools.lru_cache(maxsize=None)
def members(kind):
    """The valid checkpoint's members: [(zip name, .npy bytes)]."""
    with zipfile.ZipFile(io.BytesIO(source(kind))) as z:
        return tuple((i.filename, z.read(i)) for i in z.infolist())


def npy(a, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version, allow_pickle=True)
    return buf.getvalue()


def archive(items, compress=False):
    """A zip of [(name, bytes)] written by zipfile (duplicate names allowed)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else
                             zipfile.ZIP_STORED) as z:
            for name, data in items:
                # zipfile ends a name at NUL and cannot write an empty one
                z.writestr(name.split("\x00")[0] or "x", data)
    return buf.getvalue()


def deflate(chunks):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate, as in a zip
    return b"".join(c.compress(x) for x in chunks) + c.flush()


@functools.lru_cache(maxsize=None)
def expanding(data):
    return deflate([data] + [bytes(1 << 20)] * 4)


def raw_zip(items):
    """A zip written field by field, so that every field can lie. `items`:
    dicts with name, payload (the stored bytes) and optionally method, crc,
    size (the declared uncompressed size) and flags."""
    out, central = bytearray(), bytearray()
    for m in items:
        name = m["name"].encode()
        payload = m["payload"]
        fields = (m.get("flags", 0), m.get("method", 0), 0, 0x21,
                  m.get("crc", zlib.crc32(payload)), len(payload), m.get("size", len(payload)),
                  len(name))
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, *fields, 0) + name + payload
        central += (struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, *fields, 0, 0, 0,
                                0, 0, offset) + name)
    start = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(items), len(items), len(central),
                       start, 0)
    return bytes(out)


# --- the oracle --------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


def target(kind):
    """Parameters and an optimizer with values unlike the checkpoint's."""
    params = init(8)
    opt = build(kind, params, 0.3)
    opt.step(in_layouts({"d" + k: np.full(s, 0.5) for k, s in SHAPES.items()}, params))
    return params, opt


def same(a, b):
    """Bitwise equal arrays (dtype and shape too), or equal scalars."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())
    return type(a) is type(b) and a == b


def snapshot(params, opt):
    out = {("p", k): a.copy(order="K") for k, a in params.items()}
    out.update({("sd", k): v for k, v in opt.state_dict().items()})
    out[("lr",)] = opt.learning_rate
    return out


def assert_unchanged(before, after):
    assert before.keys() == after.keys(), "entries changed"
    for k in before:
        assert same(before[k], after[k]), f"{k} changed: {before[k]!r} -> {after[k]!r}"


def attempt(data, kind, workdir, with_optimizer=True):
    """Load `data` as a checkpoint and check the outcome; returns the error, or
    None when it loaded."""
    path = workdir / NAME
    path.write_bytes(data)
    params, opt = target(kind)
    before = snapshot(params, opt)
    error = None
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fo.load_checkpoint(path, params, opt if with_optimizer else None)
    except ERRORS as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
    assert peak < MEMORY, f"the load allocated {peak} bytes"
    if error is not None:
        assert NAME in str(error), f"the error does not name the file: {error!r}"
        assert_unchanged(before, snapshot(params, opt))
        return error
    # Loaded: it must be what NumPy's own reader (no pickles) finds in the file
    # (without an optimizer, in the entries that were read).
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files
                   if with_optimizer or not k.startswith("optimizer/")}
    for k, a in params.items():
        assert same(a, entries["parameters/" + k]), k
    if not with_optimizer:
        assert_unchanged({k: v for k, v in before.items() if k[0] != "p"},
                         {k: v for k, v in snapshot(params, opt).items() if k[0] != "p"})
        return None
    sd = opt.state_dict()
    stored = {k[len("optimizer/"):]: v for k, v in entries.items() if k.startswith("optimizer/")}
    for k, v in stored.items():
        if k in sd:
            if isinstance(sd[k], np.ndarray):
                assert same(sd[k], v), k
            elif isinstance(sd[k], float):  # numbers are restored as floats
                assert sd[k] == float(v.item()), k
            else:
                assert sd[k] == v.item(), k
        else:  # options at their defaults are left out of a state dict
            assert v.shape == () and not v.item(), f"{k}={v!r} was not restored"
    for k in sd.keys() - stored.keys():  # only a learning rate the file lacks stays as it was
        assert k.startswith("learning_rate") and same(sd[k], before[("sd", k)]), k
    return None


# --- the valid file loads; helpers are sound -----------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_the_valid_file_loads_exactly(kind, workdir):
    assert attempt(source(kind), kind, workdir) is None
    assert attempt(archive(members(kind), compress=True), kind, workdir) is None
    assert attempt(raw_zip([{"name": n, "payload": d} for n, d in members(kind)]), kind,
                   workdir) is None


# --- property tests ----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_cut_at_any_byte(kind, workdir, data):
    valid = source(kind)
    n = data.draw(st.integers(0, len(valid) - 1), label="length")
    assert isinstance(attempt(valid[:n], kind, workdir), ERRORS)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(50), **SETTINGS)
@given(data=st.data())
def test_flipped_bytes(kind, workdir, data):
    """Any bytes flipped: an error, or (flips in fields nothing reads, e.g. a
    file's time) exactly the valid content."""
    valid = bytearray(source(kind) if data.draw(st.booleans(), label="stored")
                      else archive(members(kind), compress=True))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)),
                               min_size=1, max_size=4), label="flips")
    for i, mask in flips:
        valid[i] ^= mask
    attempt(bytes(valid), kind, workdir, with_optimizer=data.draw(st.booleans()))


PLAIN = ["<f8", "<f4", "<f2", ">f8", "<i8", "<i4", "|u1", "|b1", "<c16", "<U8", "<U1"]
STRANGE = ["|S4", "<M8[s]", "<m8[D]"]


def hostile_arrays(like=None):
    """Arrays a file could hold instead of an entry."""
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    plain = st.sampled_from(PLAIN + STRANGE).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), shapes))
    options = [
        plain,
        st.sampled_from([np.array(np.nan), np.array(np.inf), np.array(-np.inf), np.array(-1.0),
                         np.array(1e308), np.array(0), np.array(-1), np.array(2**63 - 1),
                         np.array(True), np.array(""), np.array("Adam"), np.array("NAdam"),
                         np.array("CosineDecay"), np.array(["NAdam"]), np.array([3]),
                         np.array(1.5), np.array(np.float32(0.9)), np.array(np.nan + 1j)]),
        st.sampled_from([np.array([1, None], dtype=object), np.array(None, dtype=object),
                         np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
                         np.zeros((), dtype=[("a", "<f8", (2,))]), np.zeros(2, "V8"),
                         np.zeros(3, dtype=[("a", "O")])]),
    ]
    if like is not None:
        # the entry's shape with other values (NaN too) or another dtype: often loadable
        options.append(hnp.arrays(like.dtype, like.shape))
        options.append(st.sampled_from(PLAIN).map(lambda dt: converted(like, dt)))
    return st.one_of(options)


def converted(a, dtype):
    try:
        return a.astype(dtype)
    except ValueError:  # e.g. "Adam" as a float
        return a


@st.composite
def forged_npy(draw):
    """A .npy member whose header may lie or not parse."""
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (1, 1), (0, 0)]))
    if draw(st.booleans()):
        descr = draw(st.sampled_from(
            ["<f8", "<f4", "|b1", "<i8", "<U8", "|O", "<c16", "|V8", "<M8[s]", ">f8", "bogus",
             [("a", "<f8")], [("a", "|O")], [("a", "<f8", (2,))], 5, ("<f8", (2,))]))
        shape = draw(st.one_of(
            st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
            st.lists(st.integers(-2, 6), max_size=3).map(tuple),
            st.sampled_from([(2**62, 2**62), (10**30,), (1.5,), (True,), "x", [5, 2], ()])))
        fortran = draw(st.sampled_from([False, True, 1, None]))
        text = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
        if draw(st.booleans()):
            text = text[:draw(st.integers(0, len(text)))]
        header = text.encode("latin1") + b" \n"
    else:
        header = draw(st.binary(max_size=200))
    hsize = 2 if version[0] == 1 else 4
    length = draw(st.one_of(st.just(len(header)), st.integers(0, 2**(8 * hsize) - 1)))
    body = draw(st.one_of(st.binary(max_size=64), st.integers(0, 200).map(bytes)))
    return (b"\x93NUMPY" + bytes(version) + length.to_bytes(hsize, "little") + header + body)


def entry_names(kind):
    return [n for n, _ in members(kind)]


@st.composite
def edited_archives(draw, kind):
    """The valid members, edited: entries replaced, removed, added, renamed or
    made raw bytes; stored or compressed."""
    items = list(members(kind))
    with np.load(io.BytesIO(source(kind)), allow_pickle=False) as npz:
        arrays = {k + ".npy": npz[k] for k in npz.files}
    # (not "optimizer/learning_rate/bogus": load_state_dict ignores it, a fault of its
    # own, see test_state_dict_fuzz)
    extra = ["parameters/W9.npy", "optimizer/v/dW9.npy", "optimizer/extra.npy", "notes.npy", "parameters/.npy", "fastoptim/other.npy",
             "optimizer/learning_rate.npy", "optimizer/maximize.npy", "optimizer/amsgrad.npy",
             "optimizer/weight_decay.npy", "optimizer/mu_product.npy"]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "remove", "add", "rename", "raw",
                                   "forged", "duplicate"]))
        if not items and op != "add":
            continue
        i = draw(st.integers(0, len(items) - 1)) if items else 0
        if op == "replace":
            name = items[i][0]
            items[i] = (name, npy(draw(hostile_arrays(arrays.get(name)))))
        elif op == "remove":
            del items[i]
        elif op == "add":
            name = draw(st.one_of(st.sampled_from(extra), st.text(min_size=1, max_size=12)))
            items.append((name, npy(draw(hostile_arrays()))))
        elif op == "rename":
            name = draw(st.sampled_from([items[i][0][:-4], items[i][0] + ".npy",
                                         items[i][0].upper(), "/" + items[i][0]]))
            items[i] = (name, items[i][1])
        elif op == "raw":
            items[i] = (items[i][0], draw(st.binary(max_size=100)))
        elif op == "forged":
            items[i] = (items[i][0], draw(forged_npy()))
        else:
            items.append((items[i][0], npy(draw(hostile_arrays(arrays.get(items[i][0]))))))
    return archive(items, compress=draw(st.booleans()))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data())
def test_edited_entries(kind, workdir, data):
    attempt(data.draw(edited_archives(kind), label="file"), kind, workdir,
            with_optimizer=data.draw(st.booleans(), label="with_optimizer"))


@st.composite
def forged_directories(draw, kind):
    """The valid members in a zip whose fields lie: declared sizes (up to 4 GB),
    CRCs, compression methods, flags; payloads stored or deflated, and deflated
    zeros that expand far beyond what is declared."""
    items = []
    for name, data in members(kind):
        m = {"name": name, "payload": data, "crc": zlib.crc32(data), "size": len(data)}
        if draw(st.booleans()):
            m.update(method=8, payload=deflate([data]))
        if draw(st.integers(0, 3)) == 0:
            lie = draw(st.sampled_from(["size", "crc", "method", "flags", "bomb"]))
            if lie == "size":
                m["size"] = draw(st.one_of(st.integers(0, 2 * len(data)),
                                           st.integers(0, 2**32 - 1)))
            elif lie == "crc":
                m["crc"] = draw(st.integers(0, 2**32 - 1))
            elif lie == "method":
                m["method"] = draw(st.sampled_from([0, 1, 8, 9, 12, 14, 93, 99, 65535]))
            elif lie == "flags":
                m["flags"] = draw(st.sampled_from([1, 8, 0x41, 0x800, 0xFFFF]))
            else:  # the member, then 4 MiB of zeros, deflated
                m.update(method=8, payload=expanding(data))
        items.append(m)
    return raw_zip(items)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_forged_directories(kind, workdir, data):
    attempt(data.draw(forged_directories(kind), label="file"), kind, workdir)


# --- the named cases, one by one (each refused on its own terms) ----------------------

def replaced(kind, name, payload, compress=False):
    return archive([(n, payload if n == name else d) for n, d in members(kind)], compress)


@functools.lru_cache(maxsize=None)
def bomb(header_shape, zeros):
    """A .npy member declaring float64 `header_shape`, then `zeros` zero bytes,
    deflated (64 MiB of zeros deflate to about 64 KB)."""
    head = header("<f8", header_shape)
    return head, deflate([head] + [bytes(1 << 20)] * (zeros >> 20))


def header(descr, shape, version=1):
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    size = 2 if version == 1 else 4
    text += b" " * (-(len(text) + 9 + size) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(text).to_bytes(size, "little") + text


def bomb_file(kind, shape, zeros, declared=None):
    head, payload = bomb(shape, zeros)
    items = []
    for name, data in members(kind):
        if name == "optimizer/v/dW1.npy":
            items.append({"name": name, "payload": payload, "method": 8, "crc": 0,
                          "size": declared if declared is not None else len(head) + zeros})
        else:
            items.append({"name": name, "payload": data})
    return raw_zip(items)


SCALAR_1K = npy(np.array("x" * 256))
NAMED = {
    # a zip bomb: 64 MiB of zeros, honestly declared, for an entry of 80 bytes
    "bomb": lambda k: bomb_file(k, (8 << 20,), 64 << 20),
    # the directory declares 4 GB; the header the same
    "bomb-declaring-4GB": lambda k: bomb_file(k, (499_000_000,), 64 << 20,
                                              declared=4_000_000_000),
    # the directory declares 100 bytes; the stream expands to 64 MiB
    "bomb-declaring-little": lambda k: bomb_file(k, (10,), 64 << 20, declared=208),
    # a forged .npy header: 2**40 float64 elements, 16 bytes of data
    "huge-shape": lambda k: replaced(k, "optimizer/v/dW1.npy",
                                     bomb((2**40,), 0)[0] + bytes(16)),
    "huge-shape-scalar": lambda k: replaced(k, "optimizer/t.npy",
                                            bomb((2**31, 2**31), 0)[0] + bytes(16)),
    "huge-header": lambda k: replaced(k, "optimizer/t.npy", b"\x93NUMPY\x02\x00"
                                      + (1 << 31).to_bytes(4, "little") + bytes(100)),
    # a header declared 1 GB long, followed by 64 MiB of deflated zeros
    "huge-header-bomb": lambda k: raw_zip(
        [{"name": n, "payload": d} for n, d in members(k) if n != "optimizer/t.npy"]
        + [{"name": "optimizer/t.npy", "method": 8, "size": (64 << 20) + 12,
            "payload": deflate([b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little")]
                               + [bytes(1 << 20)] * 64)}]),
    "negative-shape": lambda k: replaced(k, "optimizer/v/db1.npy",
                                         header("<f8", (-5, -1)) + bytes(40)),
    # the array's bytes, then 8 more: NumPy's reader ignores them (and a zip
    # reader that stops early never checks the CRC)
    "trailing-bytes": lambda k: replaced(k, "parameters/b1.npy",
                                         npy(np.ones((5, 1))) + bytes(8)),
    "structured": lambda k: replaced(k, "parameters/b2.npy",
                                     npy(np.zeros((1, 1), [("a", "<f8")]))),
    "subarray": lambda k: replaced(k, "optimizer/t.npy", npy(np.zeros((), [("a", "<i8", 2)]))),
    "object": lambda k: replaced(k, "optimizer/v/db2.npy", npy(np.zeros((1, 1), object))),
    "not-npy": lambda k: replaced(k, "parameters/W1.npy", b"just bytes"),
    "no-npy-suffix": lambda k: archive([(n[:-4] if n == "parameters/W1.npy" else n, d)
                                        for n, d in members(k)]),
    "duplicate": lambda k: archive(list(members(k)) + [("parameters/b2.npy",
                                                         npy(np.ones((1, 1))))]),
    "encrypted": lambda k: raw_zip([{"name": n, "payload": d, "flags": 1}
                                    for n, d in members(k)]),
    "bzip2": lambda k: raw_zip([{"name": n, "payload": d, "method": 12}
                                for n, d in members(k)]),
    "bad-deflate": lambda k: raw_zip([{"name": n, "payload": b"\xff" * 40, "method": 8}
                                      for n, d in members(k)]),
    "bad-crc": lambda k: raw_zip([{"name": n, "payload": d, "crc": 1} for n, d in members(k)]),
    "short-member": lambda k: raw_zip([{"name": n, "payload": d[:-8], "size": len(d)}
                                       for n, d in members(k)]),
    "scalar-as-array": lambda k: replaced(k, "optimizer/optimizer.npy",
                                          npy(np.array([k.replace("n", "N").capitalize()
                                                        .replace("Nadam", "NAdam")]))),
    "t-nan": lambda k: replaced(k, "optimizer/t.npy", npy(np.array(np.nan))),
    "beta1-nan": lambda k: replaced(k, "optimizer/beta1.npy", npy(np.array(np.nan))),
    "format-nan": lambda k: replaced(k, "fastoptim/checkpoint.npy", npy(np.array(np.nan))),
    "format-true": lambda k: replaced(k, "fastoptim/checkpoint.npy", npy(np.array(True))),
    "extra-scalars": lambda k: archive(list(members(k)) + [(f"optimizer/x{i}.npy",
                                                            npy(np.array(i)))
                                                           for i in range(200)]),
    # 3000 entries of 1 KB each: kept out by counting them, before reading any
    "many-scalars": lambda k: archive(list(members(k)) + [(f"optimizer/x{i}.npy", SCALAR_1K)
                                                          for i in range(3000)]),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(NAMED))
def test_named_hostile_file(case, kind, workdir):
    error = attempt(NAMED[case](kind), kind, workdir)
    assert isinstance(error, ERRORS), f"{case} loaded"


def test_named_cases_are_what_they_say(workdir):
    """The bombs really expand and the scalar-as-array case is otherwise valid
    (so the tests above could fail)."""
    for case in ("bomb", "bomb-declaring-4GB"):
        with zipfile.ZipFile(io.BytesIO(NAMED[case]("adam"))) as z:
            info = z.getinfo("optimizer/v/dW1.npy")
            assert info.file_size >= 64 << 20 and info.compress_size < 1 << 20
    with zipfile.ZipFile(io.BytesIO(NAMED["bomb-declaring-little"]("adam"))) as z:
        head, payload = bomb((10,), 64 << 20)
        assert len(zlib.decompress(payload, -15)) == len(head) + (64 << 20)
    with np.load(io.BytesIO(NAMED["scalar-as-array"]("nadam"))) as npz:
        assert npz["optimizer/optimizer"].tolist() == ["NAdam"]


REASONS = {
    "huge-shape": ("optimizer/v/dW1", r"\(1099511627776,\)"),
    "huge-header-bomb": ("optimizer/t", "header of 1073741824 bytes"),
    "bomb": ("optimizer/v/dW1", "8388608"),
    "structured": ("parameters/b2", "dtype"), "subarray": ("optimizer/t", "dtype"),
    "object": ("optimizer/v/db2", "dtype object"), "not-npy": ("parameters/W1", "magic"),
    "no-npy-suffix": ("parameters/W1", "not a .npy"), "duplicate": ("parameters/b2", "more than once"),
    "scalar-as-array": ("optimizer/optimizer", r"shape \(1,\)"),
    "negative-shape": ("optimizer/v/db1", "shape"), "trailing-bytes": ("parameters/b1", "8"),
    "bad-crc": ("fastoptim/checkpoint", "CRC"), "encrypted": ("fastoptim/checkpoint", "encrypted"),
    "bzip2": ("fastoptim/checkpoint", "compression method 12"),
    "bad-deflate": ("fastoptim/checkpoint", "damaged"),
}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_error_names_the_entry_and_the_reason(case, workdir):
    import re

    entry, reason = REASONS[case]
    error = attempt(NAMED[case]("adam"), "adam", workdir)
    assert f"'{entry}'" in str(error) and re.search(reason, str(error)), error


def test_too_many_entries_are_refused_by_count(workdir):
    error = attempt(NAMED["many-scalars"]("adam"), "adam", workdir)
    assert "3000 optimizer entries" in str(error), error


def test_parameters_only_load_reads_no_optimizer_entry(workdir):
    """Without an optimizer, the optimizer's entries are not read at all: a
    bomb among them costs nothing and the parameters load."""
    assert attempt(NAMED["bomb"]("adam"), "adam", workdir, with_optimizer=False) is None


# --- what save writes, load reads ------------------------------------------------------

def test_save_refuses_what_load_would_refuse(tmp_path):
    """Values a checkpoint cannot hold without pickling are refused before
    anything is written."""
    with pytest.raises(TypeError, match=r"parameters\['W'\].*object"):
        fo.save_checkpoint(tmp_path / "c.npz", {"W": np.zeros(2, object)})
    with pytest.raises(TypeError, match=r"parameters\['W'\]"):
        fo.save_checkpoint(tmp_path / "c.npz", {"W": np.zeros(2, [("a", "<f8")])})
    params = {"W": np.zeros(2)}
    opt = fo.Adam(params)
    sd = opt.state_dict()
    sd["t"] = 2**80                       # a Python int NumPy can only store as an object
    opt.load_state_dict(sd)
    with pytest.raises(TypeError, match="'t'"):
        fo.save_checkpoint(tmp_path / "c.npz", params, opt)
    assert os.listdir(tmp_path) == []
