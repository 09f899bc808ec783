"""Lets `import torchvision` (and so `import open_clip`) work next to a CPU-only torch.

Why: PyPI's torchvision wheel is a CUDA build. Next to a CPU-only torch its compiled ops library does not
load, and `import torchvision` then dies in `torchvision/_meta_registrations.py` with
`RuntimeError: operator torchvision::nms does not exist`: that file registers fake kernels for `nms` and
`qnms` without first checking that the ops exist (its other registrations are guarded). Nothing here calls
those ops, so when -- and only when -- torchvision's import fails with exactly that error, the missing
operator schemas are declared (no kernels) and the import runs again. Calling `torchvision.ops.nms`
afterwards still fails loudly ("no kernel"), which is the truth. Where torchvision imports cleanly (a
matching CUDA or CPU build) nothing is declared.

One mechanism, two doors: `install_import_hook()` puts a finder on `sys.meta_path` that wraps torchvision's
own loader with that retry. `model.openclip_import` installs it before importing open_clip, and
`infra/install.sh` adds a one-line `.pth` file to the virtualenv that installs it at interpreter start, so
a user's own script (`import open_clip`, as the README shows) works in that virtualenv too. Installing the
hook imports nothing (not even torch): it costs nothing until torchvision is imported.
"""

from __future__ import annotations

import importlib.abc
import re
import sys
from typing import Any

# Schemas as torchvision's C++ library declares them (torchvision/csrc/ops/nms.cpp, quantized/cpu/qnms_kernel.cpp).
_TORCHVISION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP_ERROR = re.compile(r"operator torchvision::(\w+) does not exist")
_shim_library: Any = None  # a torch.library.Library, kept alive: dropping it would undo the definitions


def missing_torchvision_op(error: BaseException) -> str | None:
    """The op name if `error` is torchvision's 'operator torchvision::<op> does not exist', else None."""
    match = _MISSING_OP_ERROR.search(str(error))
    return match.group(1) if match else None


def schemas_declared() -> bool:
    """True once the workaround was needed (torchvision's plain import failed with the known error)."""
    return _shim_library is not None


def install_import_hook() -> None:
    """Idempotent; effective for the next `import torchvision` of this interpreter."""
    if not any(isinstance(finder, _TorchvisionFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Finds torchvision with the finders after it, and wraps the loader it gets."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _RetryOnMissingOp(spec.loader)
                return spec
        return None


class _RetryOnMissingOp(importlib.abc.Loader):
    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # resource readers, is_package, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            self._loader.exec_module(module)
        except RuntimeError as error:
            if missing_torchvision_op(error) not in _TORCHVISION_OP_SCHEMAS:
                raise
            _forget_partial_submodules()
            _declare_op_schemas()
            self._loader.exec_module(module)


def _forget_partial_submodules() -> None:
    # `torchvision` itself stays: the import machinery holds it while it executes.
    for name in [m for m in sys.modules if m.startswith("torchvision.")]:
        del sys.modules[name]


def _declare_op_schemas() -> None:
    global _shim_library
    if _shim_library is not None:
        return
    import torch

    _shim_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_OP_SCHEMAS.values():
        _shim_library.define(schema)
