"""The one place that imports open_clip (everything else does `from model.openclip_import import open_clip`).

Why this module exists: open_clip imports torchvision (transforms, FrozenBatchNorm2d). On a machine with a
CPU-only torch and PyPI's default torchvision wheel (a CUDA build), torchvision's compiled ops library fails to
load, and `import torchvision` then dies in `torchvision/_meta_registrations.py` with
`RuntimeError: operator torchvision::nms does not exist`: that file registers fake kernels for `nms` and `qnms`
without first checking that the ops exist (its other registrations are guarded). We never call those ops, so
when -- and only when -- the import fails with exactly that error, we declare the missing operator schemas
(no kernels) and import again. Calling `torchvision.ops.nms` afterwards still fails loudly ("no kernel"), which
is the truth. Where torchvision imports cleanly (a matching CUDA or CPU build) this module does nothing extra.
"""

from __future__ import annotations

import re
import sys

import torch

# Schemas as torchvision's C++ library declares them (torchvision/csrc/ops/nms.cpp, quantized/cpu/qnms_kernel.cpp).
_TORCHVISION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP_ERROR = re.compile(r"operator torchvision::(\w+) does not exist")
_shim_library: torch.library.Library | None = None  # kept alive: dropping it would undo the definitions


def missing_torchvision_op(error: BaseException) -> str | None:
    """The op name if `error` is torchvision's 'operator torchvision::<op> does not exist', else None."""
    match = _MISSING_OP_ERROR.search(str(error))
    return match.group(1) if match else None


def _forget_partial_torchvision_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_torchvision_op_schemas() -> None:
    global _shim_library
    if _shim_library is not None:
        return
    _shim_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_OP_SCHEMAS.values():
        _shim_library.define(schema)


def import_torchvision_with_shim() -> bool:
    """Import torchvision; returns True if the op-schema workaround was needed.

    Raises the original error for any failure other than the known missing-operator one.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if missing_torchvision_op(error) not in _TORCHVISION_OP_SCHEMAS:
            raise
        _forget_partial_torchvision_import()
        _define_torchvision_op_schemas()
        import torchvision  # noqa: F401

        return True
    return False


TORCHVISION_SHIM_USED = import_torchvision_with_shim()

import open_clip  # noqa: E402  (must follow the torchvision import above)

__all__ = ["TORCHVISION_SHIM_USED", "import_torchvision_with_shim", "missing_torchvision_op", "open_clip"]
