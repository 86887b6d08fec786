"""notebooks/colab_tpu.ipynb runs top to bottom (here on the CPU, with its parameter cell set to the smoke
settings: no install, a few steps) and ends with the student's video shown inline; the repository keeps
it without outputs."""
from __future__ import annotations

import json
import os

import nbformat
from nbclient import NotebookClient

from training_utils import REPO

NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1


def test_notebook_runs_on_the_cpu_and_shows_the_video(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\nSMOKE = True\nINSTALL = False\nWORKDIR = {str(tmp_path / 'work')!r}\nSTEPS = 4\n"
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    last = nb.cells[-1].outputs
    assert any("<video" in out.get("data", {}).get("text/html", "") for out in last), last
    losses = [c for c in nb.cells if "metrics.jsonl" in c.source][0].outputs
    assert any("dmd_loss" in out.get("text", "") for out in losses)
    assert os.path.getsize(tmp_path / "work" / "student.mp4") > 0
