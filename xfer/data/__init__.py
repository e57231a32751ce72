"""Data sources: digits for pretraining, FERG-DB (real or synthetic) and class-per-folder sets as targets."""

from xfer.data.digits import DigitSet, load_digits, load_embedded_digits, load_mnist, read_idx
from xfer.data.ferg import CHARACTERS, EMOTIONS

__all__ = ["CHARACTERS", "EMOTIONS", "DigitSet", "load_digits", "load_embedded_digits", "load_mnist", "read_idx"]
