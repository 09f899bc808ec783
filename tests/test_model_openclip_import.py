"""The torchvision workaround: used only when torchvision's import fails with the known missing-op error,
and present in every script the project's virtualenv runs (its start-up hook), not only in ours."""

from __future__ import annotations

import subprocess
import sys

from model.openclip_import import open_clip
from model.torchvision_shim import missing_torchvision_op

WITHOUT_HOOK = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_TorchvisionFinder']; "
)


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_shim_is_used_exactly_when_plain_torchvision_import_fails():
    plain = _fresh_python(WITHOUT_HOOK + "import torchvision")
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


def test_a_users_own_script_imports_open_clip_in_the_projects_virtualenv():
    """No project import in the script: the virtualenv's start-up hook (infra/install.sh) does the work."""
    user = _fresh_python("import open_clip, torchvision.transforms; print(open_clip.__version__)")
    assert user.returncode == 0, user.stderr[-2000:]


def test_only_the_known_error_is_recognised():
    assert missing_torchvision_op(RuntimeError("operator torchvision::nms does not exist")) == "nms"
    assert (
        missing_torchvision_op(RuntimeError("operator torchvision::roi_align does not exist")) == "roi_align"
    )
    assert missing_torchvision_op(RuntimeError("CUDA driver version is insufficient")) is None


def test_open_clip_is_the_real_package():
    assert open_clip.__name__ == "open_clip" and hasattr(open_clip, "create_model")
