"""Converters, one small module per op family; importing this package registers them all."""

from xfer.importer.ops import conv, elementwise, linear, norm, shape  # noqa: F401
