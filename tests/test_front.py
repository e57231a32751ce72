"""The convolution front (xfer.bench.front + the kernel's Front): the cut finds LeNet-like chains and nothing else,
the kernel's loops match ONNX Runtime on every dispatch target, and bad layers are one clear error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from xfer import _C
from xfer.bench.front import ConvStep, PoolStep, layers, split_front


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort  # here, not at the top: the fuzz test runs under AddressSanitizer without it

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def chain(c: int, size: int, spec: list[tuple], head: bool = True, seed: int = 0) -> onnx.ModelProto:
    """A model: input (N, c, size, size), then spec's layers ('conv', co, k, pads, relu) / ('pool', k, s) /
    ('other', op), then Flatten and a Gemm to 3 classes when ``head``."""
    rng = np.random.default_rng(seed)
    nodes, inits, t, ch, hw = [], [], "input", c, (size, size)
    for i, s in enumerate(spec):
        out = f"t{i}"
        if s[0] == "conv":
            _, co, k, pads, relu = s
            inits += [numpy_helper.from_array((rng.standard_normal((co, ch, k, k)) * 0.3).astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(rng.standard_normal(co).astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node("Conv", [t, f"w{i}", f"b{i}"], [out], kernel_shape=[k, k], pads=list(pads)))
            ch, hw = co, (hw[0] + pads[0] + pads[2] - k + 1, hw[1] + pads[1] + pads[3] - k + 1)
            if relu:
                nodes.append(helper.make_node("Relu", [out], [out + "r"]))
                out += "r"
        elif s[0] == "pool":
            _, k, st = s
            nodes.append(helper.make_node("MaxPool", [t], [out], kernel_shape=[k, k], strides=[st, st]))
            hw = ((hw[0] - k) // st + 1, (hw[1] - k) // st + 1)
        else:
            nodes.append(helper.make_node(s[1], [t], [out]))
        t = out
    outputs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, None)]
    if head:
        feats = ch * hw[0] * hw[1]
        inits.append(numpy_helper.from_array(rng.standard_normal((3, feats)).astype(np.float32), "fc"))
        nodes += [helper.make_node("Flatten", [t], ["flat"], axis=1), helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, size, size])],
                          outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


LENET = [("conv", 6, 5, (2, 2, 2, 2), True), ("pool", 2, 2), ("conv", 16, 5, (0, 0, 0, 0), True), ("pool", 2, 2)]


def through_front(m: onnx.ModelProto, x: np.ndarray, threads: int = 0) -> np.ndarray:
    split = split_front(m)
    assert split is not None
    n, c, h, w = x.shape
    feats = _C.Front(c, h, w, layers(split))(x, threads=threads)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(split.head.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    return s.run(None, {inp.name: feats if split.flat else feats.reshape(n, *[d for d in inp.shape[1:]])})[0]


def test_lenet_front_is_cut_at_the_flatten():
    split = split_front(chain(1, 32, LENET))
    assert split is not None and split.flat and split.cut == "flat" and split.convs == 2
    assert [type(s) for s in split.steps] == [ConvStep, PoolStep, ConvStep, PoolStep]
    assert all(s.relu for s in split.steps if isinstance(s, ConvStep))
    assert [n.op_type for n in split.head.graph.node] == ["Gemm"]
    assert split.describe() == "conv 1->6 5x5 + relu, maxpool 2x2, conv 6->16 5x5 + relu, maxpool 2x2"


@pytest.mark.parametrize("spec,c,size", [
    (LENET, 1, 32),
    ([("conv", 20, 3, (1, 1, 1, 1), False), ("pool", 3, 2), ("conv", 7, 3, (0, 1, 2, 0), True)], 3, 29),
    ([("conv", 33, 5, (0, 0, 0, 0), True), ("conv", 17, 1, (0, 0, 0, 0), True), ("pool", 2, 1)], 2, 19),
    ([("conv", 1, 7, (3, 3, 3, 3), False)], 1, 9),
], ids=["lenet", "rgb-odd-pads", "many-channels", "one-channel"])
def test_front_then_head_matches_onnxruntime_on_every_target(spec, c, size):
    from xfer.preprocess import kernel_target, kernel_targets, set_kernel_target

    m = chain(c, size, spec)
    x = np.random.default_rng(3).standard_normal((5, c, size, size)).astype(np.float32)
    want = ort_run(m, x)
    span = float(want.max() - want.min()) or 1.0
    first = kernel_target()
    try:
        for t in kernel_targets():
            set_kernel_target(t)
            for threads in (1, 2):
                got = through_front(m, x, threads)
                assert np.abs(got - want).max() <= 1e-5 * span, (t, threads)
    finally:
        set_kernel_target(first)


def test_a_front_without_flatten_feeds_a_4d_head():
    m = chain(1, 12, [("conv", 4, 3, (1, 1, 1, 1), True), ("other", "Sigmoid")], head=False)
    split = split_front(m)
    assert split is not None and not split.flat and split.cut == "t0r"
    x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(through_front(m, x), ort_run(m, x), atol=1e-5)


@pytest.mark.parametrize("spec", [
    [("other", "Relu"), ("conv", 4, 3, (0, 0, 0, 0), False)],  # does not start with a conv
    [("pool", 2, 2), ("conv", 4, 3, (0, 0, 0, 0), False)],
], ids=["relu-first", "pool-first"])
def test_no_front_when_the_model_does_not_start_with_a_conv(spec):
    assert split_front(chain(1, 16, spec)) is None


def test_strided_or_grouped_convs_are_left_to_onnxruntime():
    m = chain(1, 16, [("conv", 4, 3, (0, 0, 0, 0), True)])
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("strides", [2, 2]))
    assert split_front(m) is None


def test_a_tensor_used_twice_ends_the_front():
    m = chain(1, 16, [("conv", 4, 3, (1, 1, 1, 1), True), ("conv", 4, 3, (1, 1, 1, 1), False)], head=False)
    m.graph.node.append(helper.make_node("Add", ["t0r", "t1"], ["sum"]))
    m.graph.output[0].name = "sum"
    split = split_front(m)
    assert split is not None and split.cut == "t0r" and split.convs == 1


def test_bad_layers_and_inputs_are_one_clear_error():
    w, b = np.zeros((6, 1, 5, 5), np.float32), np.zeros(6, np.float32)
    with pytest.raises(ValueError, match=r"layers\[0\] weight: expected 3 input channels, got shape \(6, 1, 5, 5\)"):
        _C.Front(3, 32, 32, [("conv", w, b, (0, 0, 0, 0), True)])
    with pytest.raises(ValueError, match=r"layers\[0\] bias: expected 6 values"):
        _C.Front(1, 32, 32, [("conv", w, np.zeros(5, np.float32), (0, 0, 0, 0), True)])
    with pytest.raises(TypeError, match=r"layers\[0\] weight: expected dtype float32, got float64"):
        _C.Front(1, 32, 32, [("conv", w.astype(np.float64), b, (0, 0, 0, 0), True)])
    with pytest.raises(ValueError, match=r"a 5x5 kernel does not fit a padded 4x4 input"):
        _C.Front(1, 4, 4, [("conv", w, b, (0, 0, 0, 0), True)])
    with pytest.raises(ValueError, match=r"layers\[1\]: a 3x3 window does not fit a 2x2 input"):
        _C.Front(1, 6, 6, [("conv", w, b, (0, 0, 0, 0), True), ("maxpool", (3, 3), (1, 1))])
    with pytest.raises(ValueError, match=r"expected 'conv' or 'maxpool', got 'avgpool'"):
        _C.Front(1, 6, 6, [("avgpool", (2, 2), (2, 2))])
    with pytest.raises(ValueError, match="expected at least one layer"):
        _C.Front(1, 6, 6, [])
    with pytest.raises(TypeError, match=r"layers\[0\]: expected a tuple \('conv'"):
        _C.Front(1, 6, 6, [["maxpool", (2, 2), (2, 2)]])
    with pytest.raises(TypeError, match=r"layers\[0\]: expected \('conv', weight, bias, \(top, left, bottom, right\), relu\)"):
        _C.Front(1, 8, 8, [("conv", w, b, ("a", 0, 0, 0), True)])
    f = _C.Front(1, 8, 8, [("conv", w, b, (2, 2, 2, 2), True), ("maxpool", (2, 2), (2, 2))])
    assert f.out_features == 6 * 4 * 4
    with pytest.raises(ValueError, match=r"x: expected shape \(N >= 1, 1, 8, 8\), got \(2, 1, 8, 9\)"):
        f(np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 96\)"):
        f(np.zeros((2, 1, 8, 8), np.float32), out=np.zeros((2, 95), np.float32))
    buf = np.zeros(400, np.float32)
    with pytest.raises(ValueError, match="overlaps x"):
        f(buf[:128].reshape(2, 1, 8, 8), out=buf[100:292].reshape(2, 96))


def test_a_big_first_conv_is_left_to_onnxruntime():
    """VGG-size convolutions (87 M multiply-adds for the first alone) are ORT's GEMMs' job, not the front's."""
    assert split_front(chain(3, 224, [("conv", 64, 3, (1, 1, 1, 1), True), ("pool", 2, 2)])) is None
    split = split_front(chain(3, 64, [("conv", 16, 3, (1, 1, 1, 1), True), ("conv", 64, 3, (1, 1, 1, 1), True)]))
    assert split is not None and split.convs == 1  # the second would pass the bound


def front_reference(x: np.ndarray, steps: list[tuple]) -> np.ndarray:
    """The front's spec in numpy (float64): ('conv', w, b, pads, relu) and ('maxpool', (kh, kw), (sh, sw))."""
    y = x.astype(np.float64)
    for s in steps:
        if s[0] == "conv":
            _, w, b, (top, left, bottom, right), relu = s
            win = sliding_window_view(np.pad(y, ((0, 0), (0, 0), (top, bottom), (left, right))), w.shape[2:], axis=(2, 3))
            y = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64)) + b[None, :, None, None]
            y = np.maximum(y, 0) if relu else y
        else:
            _, k, st = s
            y = sliding_window_view(y, k, axis=(2, 3))[:, :, :: st[0], :: st[1]].max(axis=(-2, -1))
    return y.reshape(len(x), -1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 20), w=st.integers(1, 20),
       threads=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_fuzz_front_against_reference(data, n, c, h, w, threads, seed):
    """Random chains (channels 1-40 across both loops, kernels, pads, pools, odd sizes) on every target: each
    within float32 rounding of the float64 spec; under AddressSanitizer this also proves no loop reads past a buffer."""
    from xfer.preprocess import kernel_target, kernel_targets, set_kernel_target

    rng = np.random.default_rng(seed)
    steps, ch, hh, ww = [], c, h, w
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()) or not steps:
            co, kh, kw = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
            pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
            if hh + pads[0] + pads[2] < kh or ww + pads[1] + pads[3] < kw:
                continue
            steps.append(("conv", rng.standard_normal((co, ch, kh, kw)).astype(np.float32),
                          rng.standard_normal(co).astype(np.float32), pads, data.draw(st.booleans())))
            ch, hh, ww = co, hh + pads[0] + pads[2] - kh + 1, ww + pads[1] + pads[3] - kw + 1
        else:
            k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
            s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
            if k[0] > hh or k[1] > ww:
                continue
            steps.append(("maxpool", k, s))
            hh, ww = (hh - k[0]) // s[0] + 1, (ww - k[1]) // s[1] + 1
    if not steps:
        return
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    want = front_reference(x, steps)
    first = kernel_target()
    try:
        for t in kernel_targets():
            set_kernel_target(t)
            got = _C.Front(c, h, w, steps)(x, threads=threads)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), rtol=0, err_msg=t)
    finally:
        set_kernel_target(first)


LENET_STEPS = [("conv", np.random.default_rng(5).standard_normal((6, 1, 5, 5)).astype(np.float32), np.full(6, 0.1, np.float32),
                (2, 2, 2, 2), True), ("maxpool", (2, 2), (2, 2)),
               ("conv", np.random.default_rng(6).standard_normal((16, 6, 5, 5)).astype(np.float32) * 0.2,
                np.zeros(16, np.float32), (0, 0, 0, 0), True), ("maxpool", (2, 2), (2, 2))]


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("shape,size,channels,interp", [
    ((64, 64, 3), 32, 1, "area"),      # whole factors: the integer box path
    ((50, 37, 3), 32, 1, "bilinear"),  # taps
    ((45, 45, 1), 32, 3, "area"),      # gray replicated to a 3-channel front, uneven boxes
])
def test_front_from_images_equals_the_front_of_the_preprocessed_batch(n, shape, size, channels, interp):
    """The fused call (preprocess each image, convolve it while the next is prefetched) gives exactly what the two
    calls give, on every target and thread count, for runs of images across the threads' blocks of 16, by index."""
    from xfer.preprocess import kernel_target, kernel_targets, preprocess, set_kernel_target

    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (23, *shape), np.uint8)
    index = rng.integers(0, len(images), n).astype(np.int64)
    steps = [(s[0], np.repeat(s[1], channels, axis=1) if s[0] == "conv" and s[1].shape[1] == 1 else s[1], *s[2:])
             for s in LENET_STEPS]
    front = _C.Front(channels, size, size, steps)
    mean, std = [0.4] * channels, [0.3] * channels
    first = kernel_target()
    try:
        for t in kernel_targets():
            set_kernel_target(t)
            x = preprocess(images, size, channels, mean, std, interp=interp, index=index, threads=1)
            want = front(x, threads=1)
            for threads in (1, 2, 3):
                got = front.from_images(images, mean, std, interp=interp, index=index, threads=threads)
                assert np.array_equal(got, want), (t, threads)
    finally:
        set_kernel_target(first)


def test_front_from_a_list_of_images_of_mixed_sizes():
    from xfer.preprocess import preprocess

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, s, np.uint8) for s in [(40, 40, 3), (33, 70), (32, 32, 4), (128, 64, 3)] * 5]
    front = _C.Front(1, 32, 32, LENET_STEPS)
    out = np.full((len(images), front.out_features), np.nan, np.float32)
    got = front.from_images(images, [0.5], [0.25], out=out, threads=2)
    assert got is not None and np.shares_memory(got, out)
    assert np.array_equal(out, front(preprocess(images, 32, 1, [0.5], [0.25]), threads=1))


def test_front_from_images_bad_input_is_one_clear_error():
    front = _C.Front(1, 32, 32, LENET_STEPS)
    images = np.zeros((4, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images: this front takes 2 channels; images preprocess to 1 \(gray\) or 3"):
        _C.Front(2, 8, 8, [("conv", np.zeros((1, 2, 3, 3), np.float32), np.zeros(1, np.float32), (0, 0, 0, 0), False)]
                 ).from_images(images, [0.5], [0.5])
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 576\), got \(4, 575\)"):
        front.from_images(images, [0.5], [0.5], out=np.zeros((4, 575), np.float32))
    with pytest.raises(ValueError, match=r"index\[1\]: 9 is out of range for a batch of 4"):
        front.from_images(images, [0.5], [0.5], index=np.array([0, 9], np.int64))
    with pytest.raises(ValueError, match=r"std: expected finite values >= 1e-06"):
        front.from_images(images, [0.5], [0.0])
    with pytest.raises(ValueError, match=r"interp: expected 'area' or 'bilinear', got 'cubic'"):
        front.from_images(images, [0.5], [0.5], interp="cubic")
    shared = np.zeros(4 * 64 * 64 * 3, np.uint8)
    with pytest.raises(ValueError, match="out: the output buffer overlaps the input images"):
        front.from_images(shared.reshape(4, 64, 64, 3), [0.5], [0.5], out=shared[: 4 * 576 * 4].view(np.float32).reshape(4, 576))


def test_front_from_file_reads_what_the_mapping_holds(tmp_path):
    """from_file (pread into per-thread buffers) gives exactly what from_images gives on the memory-mapped array."""
    import os

    from xfer.preprocess import kernel_target, kernel_targets, set_kernel_target

    rng = np.random.default_rng(4)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (37, 64, 64, 3), np.uint8))
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    index = rng.integers(0, 37, 41).astype(np.int64)
    front = _C.Front(1, 32, 32, LENET_STEPS)
    fd = os.open(tmp_path / "images.npy", os.O_RDONLY)
    first = kernel_target()
    try:
        for t in kernel_targets():
            set_kernel_target(t)
            want = front.from_images(images, [0.4], [0.3], index=index, threads=1)
            for threads in (1, 2, 3):
                got = front.from_file(fd, images.offset, list(images.shape), index, [0.4], [0.3], threads=threads)
                assert np.array_equal(got, want), (t, threads)
    finally:
        set_kernel_target(first)
        os.close(fd)


def test_front_from_file_bad_input_is_one_clear_error(tmp_path):
    import os

    path = tmp_path / "short.bin"
    path.write_bytes(bytes(64 * 64 * 3 * 2 + 100))  # two images and a bit, not the four the shape says
    front = _C.Front(1, 32, 32, LENET_STEPS)
    fd = os.open(path, os.O_RDONLY)
    shape, idx = [4, 64, 64, 3], np.array([0, 1, 2], np.int64)
    try:
        with pytest.raises(RuntimeError, match=r"images file: ends before byte 36864 \(read 100 of 12288 bytes at offset 24576\)"):
            front.from_file(fd, 0, shape, idx, [0.5], [0.5], threads=1)
        with pytest.raises(ValueError, match=r"index\[2\]: 4 is out of range for a batch of 4 images"):
            front.from_file(fd, 0, shape, np.array([0, 1, 4], np.int64), [0.5], [0.5])
        with pytest.raises(ValueError, match=r"offset: expected >= 0, got -1"):
            front.from_file(fd, -1, shape, idx, [0.5], [0.5])
        with pytest.raises(ValueError, match=r"shape: expected 1, 3 or 4 channels, got 2"):
            front.from_file(fd, 0, [4, 64, 64, 2], idx, [0.5], [0.5])
        with pytest.raises(ValueError, match=r"shape: expected \(N, H, W, C\) of positive sizes"):
            front.from_file(fd, 0, [4, 64, 64], idx, [0.5], [0.5])
        with pytest.raises(ValueError, match=r"fd: expected an open file descriptor, got -1"):
            front.from_file(-1, 0, shape, idx, [0.5], [0.5])
    finally:
        os.close(fd)
    with pytest.raises(RuntimeError, match=r"images file: reading 12288 bytes at offset 0 failed: Bad file descriptor"):
        front.from_file(fd, 0, shape, idx, [0.5], [0.5], threads=1)
