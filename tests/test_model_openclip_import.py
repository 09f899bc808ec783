"""The torchvision workaround: used only when torchvision's import fails with the known missing-op error."""

from __future__ import annotations

import subprocess
import sys

from model import openclip_import
from model.openclip_import import import_torchvision_with_shim, missing_torchvision_op, open_clip


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_shim_is_used_exactly_when_plain_torchvision_import_fails():
    plain = _fresh_python("import torchvision")
    plain_fails_with_missing_op = (
        plain.returncode != 0 and "operator torchvision::nms does not exist" in plain.stderr
    )
    assert plain.returncode == 0 or plain_fails_with_missing_op, plain.stderr[-2000:]
    ours = _fresh_python(
        "import model.openclip_import as m, torchvision, open_clip; "
        "print(m.TORCHVISION_SHIM_USED, open_clip.__version__)"
    )
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert ours.stdout.split()[0] == str(plain_fails_with_missing_op)


def test_clean_import_changes_nothing():
    """Once torchvision is importable, calling the helper again defines nothing and reports no shim."""
    library_before = openclip_import._shim_library
    assert import_torchvision_with_shim() is False
    assert openclip_import._shim_library is library_before


def test_only_the_known_error_is_recognised():
    assert missing_torchvision_op(RuntimeError("operator torchvision::nms does not exist")) == "nms"
    assert (
        missing_torchvision_op(RuntimeError("operator torchvision::roi_align does not exist")) == "roi_align"
    )
    assert missing_torchvision_op(RuntimeError("CUDA driver version is insufficient")) is None


def test_open_clip_is_the_real_package():
    assert open_clip.__name__ == "open_clip" and hasattr(open_clip, "create_model")
