"""Emulation: fit an emulator (ONNX Runtime with a thread cap on this machine) to a reference device's
published per-op table, and answer op latencies as that device (:mod:`latbench.emulation.transfer`).

Not to be confused with :mod:`latbench.predict.glue`, which fits the whole-network glue (the time between
ops that a per-op sum misses) on a few measured networks of one device.
"""
