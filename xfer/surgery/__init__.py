"""Graph surgery on ONNX models: small passes that rewire, then clean up, sort and check.

Passes: ``cut`` (feature extractor / head boundary), ``inputs`` (new input
channels and size), ``head`` (new classifier layers), ``freeze`` (what trains,
recorded in the model), and ``recipes`` (the study's four transfer modes).
"""

from xfer.config import MODES
from xfer.surgery.cut import Boundary, Dense, dense_layers, find_boundary
from xfer.surgery.freeze import get_frozen, set_frozen
from xfer.surgery.head import reinit_dense, replace_head
from xfer.surgery.inputs import retarget_input
from xfer.surgery.recipes import apply

__all__ = ["MODES", "Boundary", "Dense", "apply", "dense_layers", "find_boundary", "get_frozen", "reinit_dense",
           "replace_head", "retarget_input", "set_frozen"]
