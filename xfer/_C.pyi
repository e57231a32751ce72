"""Type stub of xfer's compiled module (csrc/preprocess.cpp)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def preprocess(
    images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
    size: tuple[int, int],
    channels: int = 1,
    mean: Sequence[float] = ...,
    std: Sequence[float] = ...,
    interp: str = "area",
    out: npt.NDArray[np.float32] | None = None,
    device: str = "cpu",
    threads: int = 0,
    cuda_device: int = 0,
    index: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.float32]:
    """uint8 HWC images (a 4-D batch or a list) -> float32 NCHW, resized, colour-converted and normalised."""

def preprocess_to_device(
    images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
    out_ptr: int,
    out_bytes: int,
    size: tuple[int, int],
    channels: int = 1,
    mean: Sequence[float] = ...,
    std: Sequence[float] = ...,
    interp: str = "area",
) -> None:
    """CUDA builds only: write into a CUDA device buffer of out_bytes bytes (ONNX Runtime IO binding)."""

def gray_weights() -> list[float]: ...
def cuda_available() -> bool: ...
def cuda_device_count() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def clock_mhz(trials: int = 5, steps: int = 250000) -> float: ...
def _check_worker_failure(items: int, threads: int, fail_at: int) -> int: ...
def read_floor(
    images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
    threads: int = 0,
    index: npt.NDArray[np.int64] | None = None,
) -> int: ...
def kernel_targets(supported_only: bool = True) -> list[str]: ...
def kernel_target() -> str: ...
def set_kernel_target(name: str) -> None: ...


class Front:
    """A chain of Conv(+Relu) and MaxPool layers run per image with its intermediates in cache."""

    def __init__(self, channels: int, height: int, width: int, layers: Sequence[tuple[Any, ...]]) -> None: ...
    @property
    def out_features(self) -> int: ...
    def __call__(
        self, x: npt.NDArray[np.float32], out: npt.NDArray[np.float32] | None = None, threads: int = 0
    ) -> npt.NDArray[np.float32]: ...
