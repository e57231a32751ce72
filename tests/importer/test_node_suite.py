"""The ONNX project's own node test cases, for every case whose ops the importer lists as supported.

Each case either reproduces ONNX's expected outputs or is refused with an
``XferError`` naming the node (at import, or at run time where the refusal
depends on a shape); a wrong result or any other exception fails.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from xfer.errors import XferError
from xfer.importer import supported_ops, to_torch


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    ops = supported_ops()
    return [c for c in cases
            if all(n.op_type in ops and n.domain in ("", "ai.onnx") for n in c.model.graph.node)]


CASES = _cases()
# A graph of several half-precision nodes: the reference rounds after every node, torch accumulates in float32
# inside one, so the two may differ by an ulp or two of the type (2**-10 for float16, 2**-7 for bfloat16).
HALF_RTOL = {"float16": 2 ** -9, "bfloat16": 2 ** -6}


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if hasattr(value, "SerializeToString") else np.asarray(value)


def _tensor(value) -> torch.Tensor:
    a = _array(value)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def test_suite_is_substantial():
    assert len(CASES) > 300


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    try:
        module = to_torch(case.model).eval()
    except XferError as e:
        assert case.name and str(e).startswith("node '"), str(e)
        return
    for inputs, expected in case.data_sets:
        try:
            with torch.no_grad():
                got = module(*[_tensor(i) for i in inputs])
        except XferError as e:  # refused once the shapes are known (e.g. a cubic Resize of a 5-D tensor)
            assert str(e).startswith("node '"), str(e)
            return
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            e = _array(e)
            rtol = max(case.rtol, HALF_RTOL.get(e.dtype.name, 0.0)) if len(case.model.graph.node) > 1 else case.rtol
            e = e.astype(np.float32) if e.dtype.name == "bfloat16" else e
            g = _numpy(g)
            assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
            np.testing.assert_allclose(g, e, rtol=rtol, atol=case.atol)


def test_integer_division_truncates_toward_zero():
    from xfer.importer.ops.elementwise import _div

    assert _div(torch.tensor([7, -7, 7, -7]), torch.tensor([2, 2, -2, -2])).tolist() == [3, -3, -3, 3]


def test_most_cases_import():
    imported = 0
    for case in CASES:
        try:
            to_torch(case.model)
            imported += 1
        except XferError:
            pass
    assert imported >= 250, imported
