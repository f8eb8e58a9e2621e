"""Importing Gradio without its type-stub writer (start-up time of ``python app.py``).

Every time Gradio is imported, ``gradio.component_meta.ComponentMeta`` calls ``create_or_modify_pyi`` for each of
its ~80 component classes: it reads the class's source file and its ``.pyi`` stub, parses both and rewrites the
stub when it differs. Those stubs are for editors' type hints only; at run time nothing reads them. On the 2-core
machine this project is measured on it is more than half of ``import gradio`` (5.1 s -> 2.1 s without it, three
alternating runs each). :func:`skip_gradio_stub_writing` replaces that one function with a no-op as the module is
loaded, before any component class is made. Written here rather than asked of Gradio's settings because Gradio has
no setting for it; if a later Gradio drops the function, the replacement is simply never called.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

STUB_MODULE = "gradio.component_meta"


def _no_stub_writing(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for ``gradio.component_meta.create_or_modify_pyi``: writes no ``.pyi`` file."""


class _SkipStubWriting(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as usual and, once it has run, swaps its stub writer for a no-op."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if name != STUB_MODULE:
            return None
        sys.meta_path.remove(self)  # once is enough; other imports go on as usual
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            if hasattr(module, "create_or_modify_pyi"):
                module.create_or_modify_pyi = _no_stub_writing

        loader.exec_module = exec_module
        return spec


def skip_gradio_stub_writing() -> bool:
    """Make the coming ``import gradio`` skip writing type stubs. Returns False (and does nothing) when Gradio is
    already imported, or the hook is already in place."""
    if STUB_MODULE in sys.modules or any(isinstance(f, _SkipStubWriting) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _SkipStubWriting())
    return True
