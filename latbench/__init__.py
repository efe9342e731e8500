"""latbench: hardware-aware neural architecture search with honest latency numbers.

Latency is in milliseconds everywhere.
"""

from __future__ import annotations

__version__ = "0.1.0"
