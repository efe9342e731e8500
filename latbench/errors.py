"""Errors a user can meet.

A :class:`LatbenchError` is a problem with the input (unknown device, corrupt
table, illegal arch, missing CUDA...). The CLI prints its message as one line
and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LatbenchError(Exception):
    """A user-facing error: one clear line, exit code 2."""

    exit_code = 2


class UnknownNameError(LatbenchError):
    """An unknown space, device, backend, strategy or model name."""


class ArchError(LatbenchError):
    """A malformed arch JSON or an arch with an illegal choice."""


class TableError(LatbenchError):
    """A corrupt, foreign or incompatible latency table."""


class BackendUnavailable(LatbenchError):
    """A backend that cannot run on this machine (no CUDA, no onnxruntime...)."""


class UnsupportedOp(LatbenchError):
    """An op the chosen backend cannot run."""
