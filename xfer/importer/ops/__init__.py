"""Converters, one small module per op family; importing this package registers them all."""

from xfer.importer.ops import activation, conv, elementwise, linear, math, norm, reduce, resize, shape, tensor  # noqa: F401
