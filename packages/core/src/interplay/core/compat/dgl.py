"""Import DGL 2.1.0 on torch 2.13: the one place that holds the import workarounds.

DGL's last wheels on PyPI (2.1.0) were built for torch <= 2.2, and a plain ``import dgl`` fails on
torch 2.13. Found by experiment (dgl 2.1.0, torchdata 0.11.0, torch 2.13.0+cpu, Python 3.11),
:func:`import_dgl` does exactly this and nothing more:

1. ``DGLBACKEND=pytorch`` is set when unset. Without it DGL prints a notice on stdout and writes
   ``~/.dgl/config.json`` on first import; with another backend our torch tensors would not work,
   so any other value is an :class:`ImportError`.
2. ``dgl.graphbolt`` is replaced in ``sys.modules`` by a stub before ``import dgl``. ``import dgl``
   reaches GraphBolt through ``dgl.dataloading -> dgl.distributed -> dgl.graphbolt``, and GraphBolt
   fails twice over: it imports ``torchdata.datapipes`` (removed in torchdata 0.10; ``pip install
   dgl`` pulls torchdata 0.11) and it loads ``graphbolt/libgraphbolt_pytorch_<torch version>.so``,
   a C++ extension DGL ships only for torch 2.0.0 - 2.2.1 (``FileNotFoundError`` otherwise).
   Nothing outside ``dgl.distributed`` uses GraphBolt, and ``dgl.distributed`` only touches it
   (``gb.<name>``) inside functions for distributed GraphBolt partitions. The stub is therefore
   installed only when one of the two is missing, and any attribute read on it raises an
   :class:`AttributeError` that says why.

Not needed, though often quoted as part of this recipe:

- aliasing ``setuptools.extern.packaging`` to ``packaging``. ``dgl.utils`` imports
  ``packaging.version`` first and only falls back to ``setuptools.extern.packaging`` when
  ``packaging`` is missing; ``packaging`` is always installed here (lightning, torchmetrics and
  matplotlib require it), and setuptools >= 71 has no ``setuptools.extern`` at all (and itself
  imports ``packaging``), so the alias could never take effect.
- the tensor adapter: DGL looks for ``tensoradapter/pytorch/libtensoradapter_pytorch_2.13.0.so``,
  does not find it and logs (at DEBUG) that it falls back to its own memory management; results are
  unaffected.

One requirement is not a shim: ``dgl/data/*.py`` import ``pandas`` at import time although DGL 2.1.0
does not declare it, so the ``dgl`` extra lists ``pandas`` next to ``dgl``. The PyPI wheel is
CPU-only; CUDA graphs need a DGL build from the DGL wheel index.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["dgl_available", "import_dgl"]

# The module name is a seam for tests that check the "not installed" message.
_MODULE = "dgl"
_INSTALL_HINT = "pip install 'interplay-core[dgl]'"
_STUB_MARKER = "__interplay_stub__"


def import_dgl() -> ModuleType:
    """Return the ``dgl`` module, importing it with the workarounds described in the module docstring.

    Raises :class:`ImportError` with an installation hint when DGL is not installed, or with the
    cause when it is installed but cannot be imported.
    """
    backend = os.environ.setdefault("DGLBACKEND", "pytorch")
    if backend != "pytorch":
        raise ImportError(
            f"DGL backend requested but DGLBACKEND={backend!r}; interplay needs DGLBACKEND=pytorch "
            "(unset it or set it to 'pytorch')"
        )
    if _MODULE in sys.modules:
        loaded = sys.modules[_MODULE]
        if loaded is None:  # import blocked on purpose (sys.modules["dgl"] = None), as if not installed
            raise ImportError(f"DGL backend requested but dgl is not installed: {_INSTALL_HINT}")
        return loaded

    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"DGL backend requested but dgl is not installed: {_INSTALL_HINT}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if f"{_MODULE}.graphbolt" not in sys.modules and not _graphbolt_loadable(package_dir):
        sys.modules[f"{_MODULE}.graphbolt"] = _graphbolt_stub(f"{_MODULE}.graphbolt")

    try:
        return importlib.import_module(_MODULE)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] != _MODULE:
            why = " (dgl 2.1.0 imports it without declaring it)" if error.name == "pandas" else ""
            raise ImportError(
                f"DGL backend requested but importing dgl needs the missing module {error.name!r}{why}: "
                f"{_INSTALL_HINT}"
            ) from error
        raise ImportError(f"DGL backend requested but dgl failed to import: {error}") from error
    except Exception as error:  # a broken native library surfaces as OSError, FileNotFoundError, ...
        raise ImportError(
            f"DGL backend requested but dgl failed to import with torch {torch.__version__}: "
            f"{type(error).__name__}: {error}"
        ) from error


def dgl_available() -> bool:
    """Whether :func:`import_dgl` succeeds (imports DGL on first call; later calls are cheap)."""
    try:
        import_dgl()
    except ImportError:
        return False
    return True


def _graphbolt_loadable(package_dir: Path) -> bool:
    """Whether the real ``dgl.graphbolt`` would import: its C++ library for this torch and torchdata's
    datapipes must both exist."""
    version = torch.__version__.split("+", maxsplit=1)[0]
    if sys.platform.startswith("darwin"):
        library = f"libgraphbolt_pytorch_{version}.dylib"
    elif sys.platform.startswith("win"):
        library = f"graphbolt_pytorch_{version}.dll"
    else:
        library = f"libgraphbolt_pytorch_{version}.so"
    if not (package_dir / "graphbolt" / library).exists():
        return False
    try:
        return importlib.util.find_spec("torchdata.datapipes") is not None
    except ModuleNotFoundError:  # torchdata itself is missing
        return False


def _graphbolt_stub(name: str) -> ModuleType:
    stub = types.ModuleType(name, "Stub installed by interplay.core.compat.dgl; GraphBolt is unavailable.")
    stub.__path__ = []  # a package, as the real one is, so `from dgl import graphbolt` resolves to it
    setattr(stub, _STUB_MARKER, True)

    def __getattr__(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(
            f"{name}.{attribute} is unavailable: interplay.core.compat.dgl replaced {name} with a stub "
            f"because DGL's GraphBolt cannot load with torch {torch.__version__} (no matching "
            "libgraphbolt library or no torchdata.datapipes)"
        )

    stub.__getattr__ = __getattr__
    return stub
