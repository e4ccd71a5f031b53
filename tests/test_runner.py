"""The notebook runner: parallel papermill runs that survive a failing notebook."""

import json

import pytest
from factories import write_notebook

from moopt.runner import NotebookJob, run_notebooks


@pytest.mark.parametrize("mode", ["warm", "papermill"])
def test_failures_are_collected_and_others_finish(tmp_path, mode):
    good = write_notebook(tmp_path / "good.ipynb", "print(value * 2)")
    bad = write_notebook(tmp_path / "bad.ipynb", "raise RuntimeError(f'broken for {value}')")
    out = tmp_path / "outputs"
    jobs = [NotebookJob("sub_icb", "A1", "theme", good, str(out / "notebooks/sub_icb/A1/theme.ipynb"), {"value": 21}),
            NotebookJob("sub_icb", "B2", "theme", bad, str(out / "notebooks/sub_icb/B2/theme.ipynb"), {"value": 5})]
    messages = []
    results = run_notebooks(jobs, out, workers=2, progress=messages.append, mode=mode)
    assert [r.status for r in results] == ["ok", "failed"]
    assert "RuntimeError" in results[1].error and "broken for 5" in results[1].error
    executed = json.loads((out / "notebooks/sub_icb/A1/theme.ipynb").read_text())
    assert "42" in json.dumps(executed["cells"][-1]["outputs"])  # the injected parameter was used
    # The failed notebook is kept under a name that says so, never as the finished notebook.
    assert not (out / "notebooks/sub_icb/B2/theme.ipynb").exists()
    assert (out / "notebooks/sub_icb/B2/theme.failed.ipynb").exists()
    assert len(messages) == 2 and any("FAILED" in m for m in messages)


def test_warm_kernel_resets_between_notebooks(tmp_path):
    """A reused kernel must not leak one notebook's variables into the next."""
    first = write_notebook(tmp_path / "first.ipynb", "leak = 'from the first notebook'")
    second = write_notebook(tmp_path / "second.ipynb", "print('leak' in dir())")
    out = tmp_path / "outputs"
    jobs = [NotebookJob("sub_icb", f"N{i}", "t", nb, str(out / f"notebooks/sub_icb/N{i}/t.ipynb"))
            for i, nb in enumerate([first, second, first, second])]
    results = run_notebooks(jobs, out, workers=1, mode="warm")
    assert all(r.status == "ok" for r in results)
    for i in (1, 3):
        executed = json.loads((out / f"notebooks/sub_icb/N{i}/t.ipynb").read_text())
        assert "False" in json.dumps(executed["cells"][-1]["outputs"])
