"""The one place that imports open_clip (everything else does `from model.openclip_import import open_clip`).

open_clip imports torchvision, which does not import next to a CPU-only torch without the workaround in
`model.torchvision_shim`; installing its hook first makes this import work on every machine.
"""

from __future__ import annotations

from model.torchvision_shim import install_import_hook, schemas_declared

install_import_hook()

import open_clip  # noqa: E402  (must follow the hook above)

TORCHVISION_SHIM_USED = schemas_declared()

__all__ = ["TORCHVISION_SHIM_USED", "open_clip"]
