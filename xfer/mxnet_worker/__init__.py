"""The MXNet side of the pretraining boundary: a script run by the pretraining environment's interpreter.

Nothing here imports xfer, and xfer imports nothing from here: ``xfer.pretrain_env``
runs ``main.py`` by path in an interpreter that has MXNet 1.9.1 and numpy<1.24,
and only files cross (a job JSON in, a result JSON, symbol/params/ONNX/arrays out).
"""
