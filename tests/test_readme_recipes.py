"""The README's code, run exactly as a user pastes it: the open_clip load recipe, in a fresh interpreter
of the project's virtualenv, on an export made by jobs/export_checkpoint.py at the path the README names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from jobs.export_checkpoint import main as export_main
from tests.test_finetuning_init import commit
from tests.test_model_formats import trained_looking_model

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_recipe(name: str) -> str:
    """The fenced python block after the README's `<!-- recipe: NAME ...-->` marker, de-indented."""
    pattern = rf"<!-- recipe: {re.escape(name)}\b.*?-->\s*```python\n(.*?)```"
    match = re.search(pattern, README.read_text(), flags=re.DOTALL)
    assert match, f"README has no recipe {name!r}"
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def test_open_clip_load_recipe_loads_the_quick_starts_export_as_pasted(tmp_path):
    model = trained_looking_model("meanP")
    run = commit(model, tmp_path / "runs", "quickstart-like")
    export_dir = tmp_path / "quickstart-output" / "export-open_clip"
    assert export_main(["--init", run, "--format", "open_clip", "--out", str(export_dir)]) == 0
    recipe = readme_recipe("open_clip-export")
    assert "quickstart-output/export-open_clip" in recipe
    result = subprocess.run(
        [sys.executable, "-c", recipe], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    embed_dim = model.clip.text_projection.shape[1]
    assert result.stdout.split() == ["CLIP", "(1,", f"{embed_dim})"]
