"""Build process safety, probed as a hostile user would (issues 9 and 10).

One command per outputs folder; workers and kernels that die with the build; a dead
worker replaced and its notebook retried once; a site replaced only by a complete build;
bounded workers; cache keys that see every input; mistakes in the request reported
before the slow work.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import factories
from factories import copy_project
from moopt.cli import main
from moopt.config import ParameterError, load_config
from moopt.runner import NotebookJob, NotebookResult

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYTHON = sys.executable


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_for(condition, seconds: float, what: str):
    """Poll ``condition`` until it returns something true, at most ``seconds`` (a bound, not a speed test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {seconds:.0f}s waiting for {what}")


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _descendants(root: int) -> dict[int, str]:
    """Every running descendant of ``root``: pid -> command line."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = commands.get(pid, "")
                frontier.append(pid)
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def small_project(tmp_path_factory) -> Path:
    """A project folder with the repository's notebooks and parameters and the small synthetic set."""
    folder = copy_project(tmp_path_factory.mktemp("probe_project"))
    done = subprocess.run([PYTHON, "-m", "moopt.cli", "synth", "--scale", "small"], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return folder


def _sub_icb_codes(project: Path) -> list[str]:
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv", dtype=str)
    return sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())


# -- one command per outputs folder ----------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from moopt.build_lock import outputs_lock
    with outputs_lock(sys.argv[1], "build"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold_lock(outputs: Path, seconds: float = 600) -> subprocess.Popen:
    holder = subprocess.Popen([PYTHON, "-c", HOLD_LOCK, str(outputs), str(seconds)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _missing_files_params(folder: Path) -> Path:
    """Run parameters naming data files that do not exist: any data work fails at once."""
    params = folder / "files.yml"
    params.write_text("data: {source: files, epd: [e.csv], list_sizes: [l.csv], organisations: m.csv}\n")
    return params


def test_second_command_on_a_busy_outputs_folder_exits_2_naming_the_holder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outputs = tmp_path / "outputs"
    params = _missing_files_params(tmp_path)
    holder = _hold_lock(outputs)
    try:
        for command in (["build"], ["ingest"], ["site"]):
            status = main([*command, "--params", str(params)])
            err = capsys.readouterr().err
            assert status == 2, command
            assert "Traceback" not in err
            assert re.search(rf"in use by moopt build, pid {holder.pid}\b", err), err
            assert "--outputs" in err  # says what to do
    finally:
        holder.kill()
        holder.wait()


def test_lock_left_by_a_killed_command_is_taken_over(tmp_path):
    from moopt.build_lock import LOCK_NAME, outputs_lock, read_lock_holder

    outputs = tmp_path / "outputs"
    holder = _hold_lock(outputs)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_lock_holder(outputs)["pid"] == holder.pid  # the dead holder's record is still there
    said = []
    with outputs_lock(outputs, "build", said.append):
        assert read_lock_holder(outputs)["pid"] == os.getpid()
    assert any(f"pid {holder.pid}" in line and "no longer runs" in line for line in said)
    assert not (outputs / LOCK_NAME).exists()  # released


RACE = textwrap.dedent("""
    import os, sys, time
    from moopt.build_lock import OutputsBusyError, outputs_lock
    log = sys.argv[2]
    while time.time() < float(sys.argv[3]):  # all start together
        pass
    try:
        with outputs_lock(sys.argv[1], "build"):
            with open(log, "a") as f:
                f.write(f"in {os.getpid()} {time.time()}\\n")
            time.sleep(0.5)
            with open(log, "a") as f:
                f.write(f"out {os.getpid()} {time.time()}\\n")
    except OutputsBusyError:
        sys.exit(3)
""")


def test_commands_racing_for_a_stale_lock_never_hold_it_together(tmp_path):
    outputs = tmp_path / "outputs"
    holder = _hold_lock(outputs)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    log = tmp_path / "holders.log"
    start = time.time() + 3
    racers = [subprocess.Popen([PYTHON, "-c", RACE, str(outputs), str(log), str(start)], env=_env())
              for _ in range(4)]
    codes = [r.wait(timeout=120) for r in racers]
    assert set(codes) <= {0, 3} and codes.count(0) >= 1
    events = [line.split() for line in log.read_text().splitlines()]
    inside = 0
    for kind, _pid, _when in sorted(events, key=lambda e: float(e[2])):
        inside += 1 if kind == "in" else -1
        assert inside <= 1, events  # never two holders at once
    assert len(events) == 2 * codes.count(0)


# -- workers die with the build ----------------------------------------------------------------------

@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopping_a_build_stops_its_workers_and_kernels(small_project, monkeypatch, capsys, stop):
    """Killed during its notebooks, a build leaves no worker or kernel running a few seconds later,
    and nothing publishes the half-run notebooks."""
    site = small_project / "outputs" / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text("the previous site")
    build = subprocess.Popen(
        [PYTHON, "-m", "moopt.cli", "build", "--themes", "safety,antimicrobials", "--workers", "2",
         "--renderer", "builtin"],
        cwd=small_project, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        def kernels_running():
            family = _descendants(build.pid)
            kernels = [pid for pid, cmd in family.items() if "ipykernel" in cmd]
            return family if len(kernels) >= 2 else None

        family = _wait_for(kernels_running, 600, "the build to reach its notebooks (two kernels running)")
        os.kill(build.pid, stop)
        _wait_for(lambda: not any(_running(pid) for pid in family), 30,
                  f"workers and kernels {sorted(family)} to stop after {stop.name} of the build")
        status = build.wait(timeout=60)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    if stop == signal.SIGTERM:
        assert status == 143
        err = build.stderr.read()
        assert "Traceback" not in err, err
    assert (site / "index.html").read_text() == "the previous site"
    assert not list((small_project / "outputs").glob("site.tmp-*"))
    # The notebooks on disk are now a mix of two runs: `moopt site` must not publish them.
    monkeypatch.chdir(small_project)
    assert main(["site", "--renderer", "builtin"]) == 2
    assert "stopped while running its notebooks" in capsys.readouterr().err
    assert (site / "index.html").read_text() == "the previous site"


def execute_dies_once(job: NotebookJob, outputs_dir: str, cwd: str | None) -> NotebookResult:
    """A stand-in executor: the job "DIE" kills its worker on its first attempt, as the OOM killer would."""
    attempts = Path(job.parameters["attempts"])
    with open(attempts, "a") as log:
        log.write(f"{job.org_code}\n")
    if job.org_code == "DIE" and attempts.read_text().split().count("DIE") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return NotebookResult(job.org_level, job.org_code, job.theme, job.output, "ok", None, 0.2)


def execute_always_dies(job: NotebookJob, outputs_dir: str, cwd: str | None) -> NotebookResult:
    """A stand-in executor whose job "DIE" kills its worker every time."""
    with open(job.parameters["attempts"], "a") as log:
        log.write(f"{job.org_code}\n")
    if job.org_code == "DIE":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return NotebookResult(job.org_level, job.org_code, job.theme, job.output, "ok", None, 0.2)


def _stub_jobs(tmp_path: Path, codes: list[str]) -> list[NotebookJob]:
    attempts = tmp_path / "attempts.log"
    return [NotebookJob("sub_icb", code, "safety", "unused.ipynb", str(tmp_path / f"{code}.ipynb"),
                        {"attempts": str(attempts)}) for code in codes]


def test_dead_worker_is_replaced_and_its_notebook_retried_once(tmp_path):
    from moopt.runner import run_notebooks

    jobs = _stub_jobs(tmp_path, ["A1", "B2", "DIE", "C3", "D4", "E5"])
    said = []
    results = run_notebooks(jobs, tmp_path, workers=2, progress=said.append, execute=execute_dies_once)
    assert [r.status for r in results] == ["ok"] * 6
    assert (tmp_path / "attempts.log").read_text().split().count("DIE") == 2
    assert any("worker process died" in line and "DIE" in line for line in said)


def test_notebook_that_always_kills_its_worker_fails_alone_after_one_retry(tmp_path):
    from moopt.runner import run_notebooks

    jobs = _stub_jobs(tmp_path, ["A1", "DIE", "B2", "C3", "D4"])
    results = run_notebooks(jobs, tmp_path, workers=2, execute=execute_always_dies)
    by_code = {r.org_code: r for r in results}
    assert by_code["DIE"].status == "failed" and "died twice" in by_code["DIE"].error
    assert all(by_code[c].status == "ok" for c in ("A1", "B2", "C3", "D4"))
    assert (tmp_path / "attempts.log").read_text().split().count("DIE") == 2


# -- the site is replaced only by a complete build -----------------------------------------------------

@pytest.mark.slow
def test_interrupted_or_wholly_failed_build_keeps_the_published_site(small_project, monkeypatch, capsys):
    import moopt.pipeline as pipeline

    monkeypatch.chdir(small_project)
    outputs = small_project / "outputs"
    site = outputs / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text("the previous site")
    (outputs / "site.tmp-999999").mkdir(exist_ok=True)  # left by a run killed while rendering
    code = _sub_icb_codes(small_project)[0]
    args = ["build", "--orgs", code, "--themes", "safety", "--renderer", "builtin"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_notebooks", interrupted)
    assert main(args) == 130
    assert (site / "index.html").read_text() == "the previous site"
    assert not (outputs / "site.tmp-999999").exists()  # cleaned by the next build, under the lock
    assert main(["site", "--renderer", "builtin"]) == 2
    assert "stopped while running its notebooks" in capsys.readouterr().err
    assert (site / "index.html").read_text() == "the previous site"

    def all_failed(jobs, *a, **k):
        return [NotebookResult(j.org_level, j.org_code, j.theme, j.output, "failed", "NoSuchKernel: python3", 0.0)
                for j in jobs]

    monkeypatch.setattr(pipeline, "run_notebooks", all_failed)
    assert main(args) == 1
    out = capsys.readouterr()
    assert "NOT replaced" in out.out
    assert (site / "index.html").read_text() == "the previous site"


# -- bounded workers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers, message", [
    (True, "whole number"),
    (0, "whole number"),
    (100000, "per CPU core"),
    (4 * (os.cpu_count() or 1) + 1, "per CPU core"),
])
def test_workers_must_be_a_sensible_whole_number(tmp_path, workers, message):
    with pytest.raises(ParameterError, match=message):
        load_config(project_dir=tmp_path, overrides={"workers": workers})


def test_workers_zero_on_the_command_line_is_refused_not_ignored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--params", str(_missing_files_params(tmp_path)), "--workers", "0", "--no-site"]) == 2
    assert "workers must be a whole number" in capsys.readouterr().err


def test_runner_never_starts_more_workers_than_jobs(tmp_path, monkeypatch):
    import moopt.runner as runner

    sizes = []

    class CountingPool(runner.ProcessPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            sizes.append(max_workers)
            super().__init__(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(runner, "ProcessPoolExecutor", CountingPool)
    jobs = _stub_jobs(tmp_path, ["A1", "B2", "C3"])
    results = runner.run_notebooks(jobs, tmp_path, workers=12, execute=execute_dies_once)
    assert [r.status for r in results] == ["ok"] * 3
    assert sizes == [3]


# -- cache keys ----------------------------------------------------------------------------------------

def _ods_row(code: str, name: str, region: str = "", icb: str = "", commissioner: str = "",
             setting: str = "") -> str:
    fields = [""] * 27
    fields[0], fields[1], fields[2], fields[3] = code, name, region, icb
    fields[12], fields[14], fields[25] = "A", commissioner, setting
    return ",".join(f'"{f}"' for f in fields)


def _write_ods(folder: Path, sub_icb_name: str) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    epraccur = folder / "epraccur.csv"
    epraccur.write_text("\n".join(_ods_row(p, f"Practice {p}", "Y54", "QHM", "00K", "4")
                                  for p in ("A81001", "A81002")) + "\n")
    eccg = folder / "eccg.csv"
    eccg.write_text(_ods_row("00K", sub_icb_name) + "\n")
    eauth = folder / "eauth.csv"
    eauth.write_text(_ods_row("QHM", "North East ICB") + "\n" + _ods_row("Y54", "North East Region") + "\n")
    return epraccur, eccg, eauth


def test_engine_key_changes_with_every_input_and_only_then(tmp_path, monkeypatch):
    import moopt.pipeline as pipeline
    from moopt.store import Store

    package = tmp_path / "package"
    shutil.copytree(SRC / "moopt", package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", package)  # a copy of moopt's source to edit
    data = tmp_path / "data"
    epraccur, eccg, eauth = _write_ods(data, "Hartlepool CCG")
    epd = factories.write_epd(data / "EPD_202501.csv", [
        factories.epd_row("2025-01", "A81001", "0501013B0AAABAB", 10),
        factories.epd_row("2025-01", "A81002", "0501013B0AAABAB", 7)])
    lists = factories.write_list_sizes(data / "lists.csv",
                                       factories.list_size_rows("2025-01", "A81001", {("MALE", "30_34"): 900}))
    config = {"period_end": "latest", "period_months": 24}

    with Store(tmp_path / "store" / "moopt.duckdb") as store:
        def ingest_all():
            store.ingest_ods_organisations(epraccur, eccg, eauth)
            store.ingest_prescribing(epd)
            store.ingest_list_size(lists)

        def key():
            return pipeline._engine_key(store, load_config(project_dir=tmp_path, overrides={
                "period": {"end": config["period_end"], "months": config["period_months"]}}))

        ingest_all()
        before = key()
        ingest_all()  # an unchanged rebuild
        assert key() == before, "nothing changed, yet the key did"

        def rename_in_eccg():  # issue 10: only the names file changes, not the practice file
            eccg.write_text(_ods_row("00K", "Hartlepool and Stockton CCG") + "\n")

        def add_a_practice_to_epraccur():
            epraccur.write_text(epraccur.read_text() + _ods_row("A81003", "Practice A81003", "Y54", "QHM",
                                                               "00K", "4") + "\n")

        def more_prescribing():
            factories.write_epd(epd, [factories.epd_row("2025-01", "A81001", "0501013B0AAABAB", 11),
                                      factories.epd_row("2025-01", "A81002", "0501013B0AAABAB", 7)])

        def other_list_sizes():
            factories.write_list_sizes(lists, factories.list_size_rows("2025-01", "A81001",
                                                                       {("MALE", "30_34"): 901}))

        def change_a_formula():  # a module the old key did not hash
            path = package / "indicators" / "definitions.py"
            path.write_text(path.read_text() + "\n# changed formula\n")

        def add_a_module():
            (package / "stats" / "new_method.py").write_text("FACTOR = 2\n")

        def change_a_definition():
            path = sorted((package / "indicators" / "definitions").glob("*.yml"))[0]
            path.write_text(path.read_text() + "\n# changed\n")

        def change_period_end():
            config["period_end"] = "2025-01"

        def change_period_months():
            config["period_months"] = 12

        changes = [rename_in_eccg, add_a_practice_to_epraccur, more_prescribing, other_list_sizes,
                   change_a_formula, add_a_module, change_a_definition, change_period_end,
                   change_period_months]
        seen = {before}
        for change in changes:
            time.sleep(0.01)  # a new modification time even on coarse clocks
            change()
            ingest_all()
            after = key()
            assert after not in seen, f"the indicator cache key did not change after {change.__name__}"
            seen.add(after)
            ingest_all()
            assert key() == after, f"the key changed without a change after {change.__name__}"


# -- fail fast -------------------------------------------------------------------------------------------

def test_unknown_theme_fails_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    import moopt.pipeline as pipeline

    def no_data(*a, **k):
        raise AssertionError("the data were read before the themes were checked")

    monkeypatch.setattr(pipeline, "ensure_data", no_data)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--themes", "safty", "--no-site"]) == 2
    assert "safty (did you mean safety?)" in capsys.readouterr().err


def _typo_of_first_code(project: Path) -> tuple[list[str], str]:
    real = _sub_icb_codes(project)[0]
    typo = real[:-1] + ("X" if real[-1] != "X" else "Y")
    assert typo not in _sub_icb_codes(project)
    return ["--orgs", typo], rf"Unknown sub-icb location code\(s\): {typo} \(did you mean [^)]*\b{real}\b"


def _month_not_in_data(project: Path) -> tuple[list[str], str]:
    return ["--period-end", "2001-01"], r"period\.end \(or --period-end\) 2001-01 is not in the data, which cover"


@pytest.mark.slow
@pytest.mark.parametrize("mistake", [_typo_of_first_code, _month_not_in_data], ids=["org code", "period end"])
def test_request_mistakes_in_the_data_fail_before_indicators(small_project, monkeypatch, capsys, mistake):
    """Organisation codes and the period end are checked as soon as the data are stored."""
    import moopt.pipeline as pipeline

    def no_engine(*a, **k):
        raise AssertionError("indicators were computed before the request was checked against the data")

    monkeypatch.setattr(pipeline, "compute_indicators", no_engine)
    monkeypatch.chdir(small_project)
    args, expected = mistake(small_project)
    assert main(["build", *args, "--themes", "safety", "--no-site"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err, re.I), err
