"""Triton kernels behind the attention primitives (imported lazily: Triton is optional).

Each kernel module keeps its plain PyTorch reference beside the family's public functions (for
example :mod:`interplay.core.attention.linear`) and is tested against it, on CPU under Triton's
interpreter (``TRITON_INTERPRET=1``, small shapes) and on CUDA by ``@pytest.mark.gpu`` tests.

* :mod:`~interplay.core.attention.kernels.linear_chunked` — causal chunked linear attention,
  forward and backward.
"""

from __future__ import annotations

import importlib.util


def triton_available() -> bool:
    """Whether Triton can be imported (it is not a hard dependency of interplay-core)."""
    return importlib.util.find_spec("triton") is not None


__all__ = ["triton_available"]
