"""Workarounds for third-party libraries that do not import cleanly with the torch we pin.

Each optional library gets one module here that owns every shim it needs, so the rest of the code
base imports it through one function and never repeats (or half-repeats) a workaround:

- :mod:`interplay.core.compat.dgl`: :func:`import_dgl` / :func:`dgl_available` for DGL 2.1.0 on
  torch 2.13 (the ``dgl`` backend of :mod:`interplay.core.attention.graph`, and KGAT).
"""

from __future__ import annotations

from interplay.core.compat.dgl import dgl_available, import_dgl

__all__ = ["dgl_available", "import_dgl"]
