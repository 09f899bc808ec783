"""The one place that imports open_clip (everything else does `from model.openclip_import import open_clip`).

open_clip imports torchvision, which does not import next to a CPU-only torch without the workaround in
`model.torchvision_shim`; installing its hook first makes this import work on every machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model.torchvision_shim import install_import_hook, schemas_declared

install_import_hook()

import open_clip  # noqa: E402  (must follow the hook above)

TORCHVISION_SHIM_USED = schemas_declared()
_OPEN_CLIP_DIR = str(Path(open_clip.__file__).parent)


def _not_open_clip_chatter(record: logging.LogRecord) -> bool:
    """open_clip logs every model build step on the root logger, and warns "No pretrained weights loaded"
    whenever we build with pretrained=None, which we always do on purpose (random init, or our weights are
    loaded right after). Its other warnings and its errors pass."""
    if not record.pathname.startswith(_OPEN_CLIP_DIR):
        return True
    if record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and "No pretrained weights loaded" not in record.getMessage()


logging.getLogger().addFilter(_not_open_clip_chatter)

__all__ = ["TORCHVISION_SHIM_USED", "open_clip"]
