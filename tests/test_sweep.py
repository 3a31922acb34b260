"""Sweeps: expansion, run names, flag rendering (round trip through config_flags), planning,
skip-finished logic, local execution (with a fake trainer), cluster scripts, aggregation, and
one real two-run sweep through ``launch/sweep.py`` (the command; ``launch/executor.py`` runs the
jobs, ``modellens_jax.experiments.sweep`` declares and plans them)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ml_collections.config_flags import config_path

from modellens_jax.experiments import sweep
from modellens_jax.experiments.sweep import Hyper, SweepError

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_launch_sweep", ROOT / "launch" / "sweep.py")
command = importlib.util.module_from_spec(_spec)  # the sweep command, called in-process
_spec.loader.exec_module(command)
EXAMPLE = "configs/sweep_example.py:tiny"
SAFE = re.compile(r"^[A-Za-z0-9._+,=-]+$")
h = Hyper()


def write_config(tmp_path: Path, sweep_body: str, config_body: str | None = None) -> str:
    """A config file in tmp_path: ``configs/default.py``'s config (or ``config_body``) plus
    ``get_sweep(h)`` returning ``sweep_body``."""
    config_body = config_body or textwrap.dedent(f"""
        import importlib.util

        def get_config(arg=None):
            spec = importlib.util.spec_from_file_location("_d", {str(ROOT / "configs/default.py")!r})
            m = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(m)
            return m.get_config(arg)
    """)
    path = tmp_path / "sweep_cfg.py"
    path.write_text(config_body + "\n\ndef get_sweep(h):\n    return " + sweep_body + "\n")
    return str(path)


TYPED_CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.lr = 1e-3
        c.n = 3
        c.flag = True
        c.name = "base"
        c.buckets = (8, 16)
        c.words = ("a", "b")
        c.anything = None
        c.sub = ml_collections.ConfigDict(dict(rate=0.1, mode="x"))
        c.other = ml_collections.ConfigDict(dict(rate=0.2))
        c.train = ml_collections.ConfigDict(dict(steps=6, eval_every=3, early_stop_patience=0,
                                                 judge="weighted_tau"))
        return c
""")


# --- expansion ------------------------------------------------------------------------------
def test_product_zip_nested_chain():
    a = h.sweep("config.a", [1, 2])
    b = h.sweep("config.b", ["x", "y", "z"])
    assert h.product([a, b]) == [
        {"config.a": 1, "config.b": "x"}, {"config.a": 1, "config.b": "y"},
        {"config.a": 1, "config.b": "z"}, {"config.a": 2, "config.b": "x"},
        {"config.a": 2, "config.b": "y"}, {"config.a": 2, "config.b": "z"},
    ]  # fmt: skip
    z = h.zip([h.sweep("config.c", [0.1, 0.2]), h.sweep("config.d", [True, False])])
    assert z == [{"config.c": 0.1, "config.d": True}, {"config.c": 0.2, "config.d": False}]
    nested = h.product([a, z, h.fixed("config.e", (8, 16))])
    assert len(nested) == 4
    assert nested[1] == {"config.a": 1, "config.c": 0.2, "config.d": False, "config.e": (8, 16)}
    assert h.chain([a, h.sweep("config.b", ["q"])]) == [{"config.a": 1}, {"config.a": 2}, {"config.b": "q"}]  # fmt: skip
    assert h.product([]) == [{}]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: h.zip([h.sweep("config.a", [1, 2]), h.sweep("config.b", [1])]), "different lengths"),
        (lambda: h.product([h.sweep("config.a", [1]), h.sweep("config.a", [2])]), "two factors"),
        (lambda: h.sweep("model.dropout", [0.1]), "config."),
        (lambda: h.sweep("config.a", []), "empty"),
        (lambda: h.sweep("config.a", "abc"), "list of values"),
        (lambda: h.sweep("config.a", [object()]), "cannot be a flag"),
    ],
)  # fmt: skip
def test_expansion_errors(make, match):
    with pytest.raises(SweepError, match=match):
        make()


def test_numpy_values_unwrapped():
    np = pytest.importorskip("numpy")
    (p,) = h.sweep("config.a", [np.float32(0.5)])
    assert type(p["config.a"]) is float and p["config.a"] == 0.5


# --- names ----------------------------------------------------------------------------------
def test_example_names():
    points = sweep.load_sweep(EXAMPLE)
    names = sweep.run_names(points)
    assert len(names) == 9 and names[0] == "pairwise=0.0,dropout=0.0"
    assert names[5] == "pairwise=0.5,dropout=0.3" and len(set(names)) == 9


def test_names_shortened_to_unique_suffix():
    assert sweep.short_labels(["config.model.dropout", "config.loss.weights.pairwise"]) == {
        "config.model.dropout": "dropout", "config.loss.weights.pairwise": "pairwise",
    }  # fmt: skip
    labels = sweep.short_labels(
        ["config.model.dropout", "config.head.dropout", "config.x.y.dropout"]
    )
    assert labels == {"config.model.dropout": "model.dropout", "config.head.dropout": "head.dropout",
                      "config.x.y.dropout": "y.dropout"}  # fmt: skip
    points = h.product([h.sweep("config.model.dropout", [0.1]), h.sweep("config.head.dropout", [0.2, 1e-05])])  # fmt: skip
    assert sweep.run_names(points) == ["model.dropout=0.1,head.dropout=0.2", "model.dropout=0.1,head.dropout=1e-05"]  # fmt: skip


def test_names_safe_unique_and_bounded():
    points = h.chain([
        h.sweep("config.data.source", ["a/b", "a_b", "a b", "A_B", "../x", "", "-lead", "x=y,z"]),
        h.sweep("config.flag", [True, None]),
        h.sweep("config.buckets", [(8, 16), (-1, 2), ()]),
        h.sweep("config.long.key", ["v" * 300, "v" * 299 + "w"]),
    ])  # fmt: skip
    names = sweep.run_names(points)
    assert len({n.lower() for n in names}) == len(points)  # unique, also case-insensitively
    for n in names:
        assert SAFE.match(n) and not n.startswith((".", "-")) and len(n) <= sweep.MAX_NAME + 9, n
    assert "flag=true" in names and "buckets=8_16" in names and "buckets=-1_2" in names
    assert names[0].startswith("source=a_b_") and names[3].startswith("source=A_B_")  # hashed
    assert "source=empty" in names and "source=x_y_z" in names
    assert sweep.run_names(points) == names  # deterministic


def test_duplicate_points_rejected():
    with pytest.raises(SweepError, match="duplicate"):
        sweep.run_names(h.chain([h.sweep("config.a", [1]), h.sweep("config.a", [1])]))


# --- flags ----------------------------------------------------------------------------------
def test_render_values():
    r = sweep.render_value
    assert r(0.5) == "0.5" and r(1e-05) == "1e-05" and r(3) == "3" and r(True) == "true"
    assert r((8, 16)) == "(8, 16)" and r(("a", "b")) == "('a', 'b')"
    assert r("a b", current="s") == "a b" and r("1", current=None) == "'1'"


def test_flags_round_trip_through_config_flags(tmp_path):
    body = """h.chain([
        h.product([h.sweep("config.lr", [0.0, 1e-05, 0.30000000000000004]), h.sweep("config.n", [0, -2])]),
        h.zip([h.sweep("config.flag", [False, True]), h.sweep("config.name", ["a b,c", "it's \\"q\\"=1"])]),
        h.sweep("config.buckets", [(4,), (1, 2, 3), ()]),
        h.sweep("config.words", [("x y", "z'"), ("solo",)]),
        h.product([h.sweep("config.sub.rate", [0.5]), h.sweep("config.other.rate", [0.25]),
                   h.sweep("config.sub.mode", ["--dash", "/path/*.csv"])]),
    ])"""
    spec = write_config(tmp_path, body, TYPED_CONFIG)
    runs = sweep.plan(spec, tmp_path / "root")
    assert len(runs) == 6 + 2 + 3 + 2 + 2
    for run in runs:
        # Independent check: parse the shell-quoted command line as a shell would, then apply
        # its --config.* flags with config_flags.
        argv = shlex.split(shlex.join(run.command("python")))
        cfg = sweep.resolve_config(spec, argv[3:])
        for key, value in run.point.items():
            got = config_path.get_value(key.removeprefix("config."), cfg)
            assert got == value and type(got) is type(value), (run.name, key, got, value)
    labels = [r.name for r in runs if "sub.rate" in r.name]
    assert labels == ["sub.rate=0.5,other.rate=0.25,mode=--dash",
                      "sub.rate=0.5,other.rate=0.25,mode=_path__.csv"]  # fmt: skip


@pytest.mark.parametrize(
    "body, match",
    [
        ('h.sweep("config.model.droput", [0.1])', "droput"),
        ('h.sweep("config.train.steps", [1.5])', "steps"),
        ('h.sweep("config.model.dropout", ["high"])', "dropout"),
    ],
)
def test_plan_rejects_typos_and_types(tmp_path, body, match):
    spec = write_config(tmp_path, body)
    with pytest.raises(SweepError, match=match):
        sweep.plan(spec, tmp_path / "root")


def test_plan_rejects_untyped_field(tmp_path):
    spec = write_config(tmp_path, 'h.sweep("config.anything", [1])', TYPED_CONFIG)
    with pytest.raises(SweepError, match=r"anything=1.*not supported"):
        sweep.plan(spec, tmp_path / "root")


def test_plan_extra_and_steps(tmp_path):
    runs = sweep.plan(
        EXAMPLE, tmp_path, "--config.train.steps=20 --config.model.use_model_desc=False"
    )
    assert [r.steps for r in runs] == [20] * 9
    assert runs[4].args == [
        f"--config={EXAMPLE}", f"--workdir={tmp_path / 'pairwise=0.5,dropout=0.1'}",
        "--config.loss.weights.pairwise=0.5", "--config.model.dropout=0.1",
        "--config.train.steps=20", "--config.model.use_model_desc=False",
    ]  # fmt: skip
    assert sweep.plan(EXAMPLE, tmp_path)[0].steps == 6  # the tiny preset
    with pytest.raises(SweepError, match="varies"):
        sweep.plan(EXAMPLE, tmp_path, "--config.model.dropout=0.2")
    cfg = sweep.resolve_config(EXAMPLE, ["--noconfig.model.use_model_desc", "--config.seed=3"])
    assert cfg.model.use_model_desc is False and cfg.seed == 3
    spec = write_config(tmp_path, 'h.sweep("config.model.use_model_desc", [True, False])')
    assert [r.name for r in sweep.plan(spec, tmp_path)] == ["use_model_desc=true", "use_model_desc=false"]  # fmt: skip
    with pytest.raises(SweepError, match="varies"):
        sweep.plan(spec, tmp_path, "--noconfig.model.use_model_desc")
    with pytest.raises(SweepError, match="workdir"):
        sweep.plan(EXAMPLE, tmp_path, "--workdir=/elsewhere")


# --- dry run --------------------------------------------------------------------------------
def expected_cmd(root: Path, name: str, pair: str, drop: str, extra: list[str]) -> str:
    return shlex.join([
        sys.executable, "-m", "modellens_jax.train", f"--config={EXAMPLE}",
        f"--workdir={root / name}", f"--config.loss.weights.pairwise={pair}",
        f"--config.model.dropout={drop}", *extra,
    ])  # fmt: skip


def test_dry_run_prints_exact_commands(tmp_path, capsys):
    root = tmp_path / "sweep root"
    extra = ["--config.train.steps=2", "--config.data.source=my dir"]
    fake_summary(root / "pairwise=0.0,dropout=0.1", step=2)  # finished: skipped
    fake_summary(root / "pairwise=1.0,dropout=0.3", step=1)  # stale summary: resumed
    assert command.main([f"--config={EXAMPLE}", f"--workdir={root}", "--dry_run",
                         f"--extra={shlex.join(extra)}"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    cmds = [line for line in out if not line.startswith("#")]
    expect = [
        expected_cmd(root, f"pairwise={p},dropout={d}", p, d, extra)
        for p in ("0.0", "0.5", "1.0") for d in ("0.0", "0.1", "0.3") if (p, d) != ("0.0", "0.1")
    ]  # fmt: skip
    assert cmds == expect
    assert "# skip pairwise=0.0,dropout=0.1: done" in out
    assert "# pairwise=1.0,dropout=0.3 (resumes): log " + str(root / "pairwise=1.0,dropout=0.3/log.txt") in out  # fmt: skip
    assert out[0].endswith("9 runs: 1 finished (skipped), 0 running elsewhere, 8 to run")
    assert not (root / "pairwise=0.0,dropout=0.0").exists()  # nothing created


def test_launch_script_dry_run(tmp_path):
    p = subprocess.run(
        [sys.executable, "launch/sweep.py", f"--config={EXAMPLE}", f"--workdir={tmp_path}",
         "--dry_run", "--extra=--config.train.steps=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    cmds = [line for line in p.stdout.splitlines() if not line.startswith("#")]
    assert cmds[0] == expected_cmd(tmp_path, "pairwise=0.0,dropout=0.0", "0.0", "0.0", ["--config.train.steps=2"])  # fmt: skip
    assert len(cmds) == 9
    bad = subprocess.run(
        [sys.executable, "launch/sweep.py", f"--config={EXAMPLE}", f"--workdir={tmp_path}",
         "--dry_run", "--extra=--config.model.droput=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "droput" in bad.stderr


# --- skip-finished logic --------------------------------------------------------------------
def fake_summary(workdir: Path, step: int, judge: float = 0.1, best_step=None, **extra) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    best = {"step": best_step or step, "judge": judge, "val": {
        "completion": {"weighted_tau": judge, "ndcg@10": 0.7, "num_groups": 5.0},
        "unseen_model": {"weighted_tau": judge / 2, "ndcg@10": 0.6, "num_groups": 3.0},
    }}  # fmt: skip
    (workdir / "train_summary.json").write_text(json.dumps({"step": step, "best": best, "compiles": 1, **extra}))  # fmt: skip


def test_status_and_skip(tmp_path):
    run = sweep.Run("r", {}, tmp_path / "r", [], steps=6, patience=2, eval_every=3)
    assert sweep.status(run) == "pending"
    (run.workdir / "checkpoints" / "3").mkdir(parents=True)
    assert sweep.status(run) == "partial"  # killed: resumes from its checkpoint
    fake_summary(run.workdir, step=6)
    assert sweep.status(run) == "done"
    longer = sweep.Run("r", {}, run.workdir, [], steps=20)
    assert sweep.status(longer) == "partial"  # more steps configured now: resumed
    (run.workdir / "train_summary.json").write_text("{not json")
    assert sweep.status(run) == "partial"
    # early stop: train.py stops `patience` evaluations after the best one
    run.steps = 60
    fake_summary(run.workdir, step=30, best_step=27)  # 1 evaluation without improvement
    assert not sweep.is_finished(run, sweep.read_summary(run))
    fake_summary(run.workdir, step=31, best_step=24)  # not an evaluation step
    assert not sweep.is_finished(run, sweep.read_summary(run))
    fake_summary(run.workdir, step=30, best_step=24)  # evaluations at 27, 30: stopped
    assert sweep.is_finished(run, sweep.read_summary(run))
    run.patience = 0
    assert not sweep.is_finished(run, sweep.read_summary(run))
    fake_summary(run.workdir, step=7, stopped_early=True)
    assert sweep.is_finished(run, sweep.read_summary(run))


def test_running_run_is_not_started_twice(tmp_path):
    wd = tmp_path / "r"
    wd.mkdir()
    run = sweep.Run("r", {}, wd, [], steps=6)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--workdir={wd}"]
    )
    try:
        (wd / sweep.PID_FILE).write_text(f"{proc.pid}\n")
        assert sweep.status(run) == "running"
    finally:
        proc.kill()
        proc.wait()
    assert sweep.status(run) == "pending"  # stale pid file


# --- execution with a fake trainer ----------------------------------------------------------
FAKE_TRAINER = """#!{python}
# Stands in for `python -m modellens_jax.train`: records the call, sleeps FAKE_SLEEP, fails
# when FAKE_FAIL is in the run name, else writes a summary whose judge is the sum of the
# numeric overrides.
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
assert args[:2] == ["-m", "modellens_jax.train"], args
kv = dict(a[2:].split("=", 1) for a in args[2:] if "=" in a)
wd = Path(kv["workdir"])
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(wd.name + "\\n")
(wd / "fake.pid").write_text(str(os.getpid()))
print("fake start", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in wd.name:
    print("boom"); sys.exit(3)
steps = int(kv.get("config.train.steps", 6))
def num(v):
    try: return float(v)
    except ValueError: return 0.0
j = sum(num(v) for k, v in kv.items() if k.startswith("config.") and k != "config.train.steps")
(wd / "checkpoints" / str(steps)).mkdir(parents=True, exist_ok=True)
best = {{"step": steps, "judge": j, "val": {{"completion": {{"weighted_tau": j, "ndcg@10": 0.5}}}}}}
(wd / "train_summary.json").write_text(json.dumps({{"step": steps, "best": best, "compiles": 1,
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}))
print(f"step {{steps}}/{{steps}}")
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_TRAINER.format(python=sys.executable))
    path.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    return path, calls


def test_execute_parallel_skip_and_fail(tmp_path, fake, monkeypatch, capsys):
    python, calls = fake
    root = tmp_path / "root"
    args = [f"--config={EXAMPLE}", f"--workdir={root}", f"--python={python}", "--parallel=3"]
    monkeypatch.setenv("FAKE_FAIL", "pairwise=1.0,dropout=0.3")
    assert command.main(args) == 1  # one run failed
    out = capsys.readouterr()
    assert "FAILED pairwise=1.0,dropout=0.3 (exit 3)" in out.out and "boom" in out.out
    assert len(calls.read_text().split()) == 9
    log = (root / "pairwise=0.5,dropout=0.1" / "log.txt").read_text()
    assert log.startswith("\n# ") and "step 6/6" in log and str(python) in log
    rows = list(csv.DictReader(open(root / "sweep.csv")))
    assert [r["status"] for r in rows].count("done") == 8 and rows[-1]["status"] == "failed"
    assert float(rows[4]["judge"]) == pytest.approx(0.6) and rows[4]["completion/ndcg@10"] == "0.5"
    assert not list(root.glob("*/sweep.pid"))
    # re-run: only the failed one runs again
    monkeypatch.delenv("FAKE_FAIL")
    calls.write_text("")
    assert command.main(args) == 0
    assert calls.read_text().split() == ["pairwise=1.0,dropout=0.3"]
    calls.write_text("")
    assert command.main(args) == 0  # all finished: nothing runs
    assert calls.read_text() == ""
    assert "9 runs: 9 finished (skipped)" in capsys.readouterr().out


def test_gpus_one_per_run(tmp_path, fake):
    python, _ = fake
    root = tmp_path / "root"
    command.main([f"--config={EXAMPLE}", f"--workdir={root}", f"--python={python}", "--gpus=3,5"])
    used = [json.loads(p.read_text())["cuda"] for p in root.glob("*/train_summary.json")]
    assert len(used) == 9 and set(used) == {"3", "5"}


def test_killed_sweep_resumes(tmp_path, fake):
    """SIGTERM to the sweep stops its running trainer; the next sweep runs the rest."""
    python, calls = fake
    root = tmp_path / "root"
    args = [sys.executable, "launch/sweep.py", f"--config={EXAMPLE}", f"--workdir={root}",
            f"--python={python}"]  # fmt: skip
    env = {**os.environ, "FAKE_SLEEP": "1.5"}
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first, second = root / "pairwise=0.0,dropout=0.0", root / "pairwise=0.0,dropout=0.1"
        deadline = time.time() + 60
        while not (second / "fake.pid").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (first / "train_summary.json").exists()
        child = int((second / "fake.pid").read_text())
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0].decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out
    assert "interrupted" in out
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the trainer it started is gone
    assert not (second / "train_summary.json").exists() and not (second / "sweep.pid").exists()
    calls.write_text("")
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = calls.read_text().split()
    assert "pairwise=0.0,dropout=0.0" not in ran and "pairwise=0.0,dropout=0.1" in ran
    assert len(ran) == 8


def test_emitted_scripts_run(tmp_path, fake, capsys):
    python, calls = fake
    root = tmp_path / "root"
    fake_summary(root / "pairwise=0.0,dropout=0.0", step=6)
    base = [f"--config={EXAMPLE}", f"--workdir={root}"]
    assert command.main([*base, "--emit=shell"]) == 0
    shell = capsys.readouterr().out
    assert "# skip pairwise=0.0,dropout=0.0: finished" in shell
    assert command.main([*base, "--emit=slurm", "--parallel=4", "--sbatch=--gres=gpu:1"]) == 0
    slurm = capsys.readouterr().out
    assert "#SBATCH --array=0-7%4" in slurm and "#SBATCH --gres=gpu:1" in slurm
    for text in (shell, slurm):
        s = tmp_path / "s.sh"
        s.write_text(text)
        assert subprocess.run(["bash", "-n", str(s)]).returncode == 0
    env = {**os.environ, "PYTHON": str(python), "SLURM_ARRAY_TASK_ID": "7"}
    (tmp_path / "slurm.sh").write_text(slurm)
    r = subprocess.run(["bash", str(tmp_path / "slurm.sh")], cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0 and calls.read_text().split() == ["pairwise=1.0,dropout=0.3"]
    (tmp_path / "shell.sh").write_text(shell)
    r = subprocess.run(["bash", str(tmp_path / "shell.sh")], cwd=ROOT, env=env, timeout=120,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(calls.read_text().split()) == 1 + 8
    assert command.main([*base, "--aggregate_only"]) == 0  # everything finished
    assert command.main([*base, "--emit=slurm"]) == 0
    assert "nothing to run" in capsys.readouterr().out


# --- aggregation ----------------------------------------------------------------------------
def test_aggregate_table_and_heatmap(tmp_path):
    pytest.importorskip("matplotlib")
    root = tmp_path / "root"
    runs = sweep.plan(EXAMPLE, root)
    for i, r in enumerate(runs):
        if i != 4:  # one run never ran
            fake_summary(r.workdir, step=6, judge=0.01 * i, best_step=3)
    rows = sweep.aggregate(runs, root, title="`example`")
    assert [r["status"] for r in rows].count("done") == 8 and rows[4]["status"] == "pending"
    table = list(csv.DictReader(open(root / "sweep.csv")))
    assert list(table[0]) == [
        "run", "status", "pairwise", "dropout", "step", "best_step", "judge",
        "completion/weighted_tau", "completion/ndcg@10", "completion/num_groups",
        "unseen_model/weighted_tau", "unseen_model/ndcg@10", "unseen_model/num_groups",
    ]  # fmt: skip
    assert table[8]["pairwise"] == "1.0" and table[8]["dropout"] == "0.3"
    assert float(table[8]["judge"]) == pytest.approx(0.08) and table[4]["judge"] == ""
    md = (root / "sweep.md").read_text()
    assert "Best: **pairwise=1.0,dropout=0.3** (judge 0.0800 at step 3)" in md
    assert "| pairwise=0.5,dropout=0.1 | 0.5 | 0.1 | pending |" in md
    assert "| pairwise \\ dropout | 0.0 | 0.1 | 0.3 |" in md
    assert "| 0.5 | 0.0300 | – | 0.0500 |" in md
    assert "![judge heat map](sweep_heatmap.png)" in md
    png = (root / "sweep_heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") > 200


def test_aggregate_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    root = tmp_path / "root"
    runs = sweep.plan(EXAMPLE, root)
    sweep.aggregate(runs, root)
    md = (root / "sweep.md").read_text()
    assert "install matplotlib" in md and not (root / "sweep_heatmap.png").exists()
    assert "9 pending" in md


def test_aggregate_1d_has_no_heatmap(tmp_path):
    spec = write_config(tmp_path, 'h.product([h.sweep("config.model.dropout", [0.1, 0.2]), h.fixed("config.seed", 3)])')  # fmt: skip
    root = tmp_path / "root"
    runs = sweep.plan(spec, root)
    assert [r.name for r in runs] == ["dropout=0.1,seed=3", "dropout=0.2,seed=3"]
    for r in runs:
        fake_summary(r.workdir, step=r.steps, judge=math.nan)
    rows = sweep.aggregate(runs, root)
    assert all(math.isnan(r["judge"]) for r in rows)
    assert "Judge by" not in (root / "sweep.md").read_text()
    assert not (root / "sweep_heatmap.png").exists()


# --- the real thing -------------------------------------------------------------------------
@pytest.mark.slow
def test_real_sweep_end_to_end(tmp_path):
    """A 2×1 sweep of 2-step tiny runs through launch/sweep.py, then a re-run that skips both."""
    from modellens_jax import prepare

    spec = write_config(
        tmp_path,
        'h.product([h.sweep("config.loss.weights.pairwise", [0.0, 1.0]), h.fixed("config.model.dropout", 0.1)])',
    )  # fmt: skip
    spec += ":tiny"
    root = tmp_path / "root"
    extra = ("--config.train.steps=2 --config.model.use_model_desc=False "
             "--config.model.use_dataset_desc=False")  # fmt: skip
    runs = sweep.plan(spec, root, extra)
    # Prepare the corpus once for both runs (the trainer would prepare it in each workdir).
    corpus = tmp_path / "corpus"
    prepare.prepare(sweep.resolve_config(spec).data, corpus, verbose=False)
    for r in runs:
        r.workdir.mkdir(parents=True)
        shutil.copytree(corpus, r.workdir / "corpus")
    cmd = [sys.executable, "launch/sweep.py", f"--config={spec}", f"--workdir={root}",
           "--parallel=2", f"--extra={extra}"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one device per run
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join((r.workdir / "log.txt").read_text()[-2000:] for r in runs if (r.workdir / "log.txt").exists())  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr + logs
    for r in runs:
        assert json.loads((r.workdir / "train_summary.json").read_text())["step"] == 2
        assert "step 2/2" in (r.workdir / "log.txt").read_text()
    rows = list(csv.DictReader(open(root / "sweep.csv")))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(math.isfinite(float(r["judge"])) for r in rows)
    assert "unseen_dataset/weighted_tau" in rows[0] and "completion/ndcg@10" in rows[0]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "2 runs: 2 finished (skipped), 0 running elsewhere, 0 to run" in again.stdout
    assert "start" not in again.stdout


# --- vectorised sweeps (--vectorize) ---------------------------------------------------------
MEMBER_KEYS = frozenset({"loss.weights.pairwise", "model.dropout", "model.model_id_dropout"})


def test_vectorisable_keys_match_members():
    from modellens_jax.experiments import members

    assert sweep.member_keys() == members.MEMBER_KEYS
    assert MEMBER_KEYS <= members.MEMBER_KEYS


def test_members_jobs_grouping(tmp_path):
    """Unfinished runs in sweep order, up to per_job each; overrides without ``config.``; keys
    fixed across the sweep (any key) become flags; names passed through; stable job names."""
    spec = write_config(tmp_path, "[]")
    root = tmp_path / "root"
    points = h.chain([
        h.product([h.sweep("config.loss.weights.pairwise", [0.0, 0.5, 1.0]),
                   h.sweep("config.model.dropout", [0.0, 0.25]),
                   h.fixed("config.model.hidden_dim", 64)]),
        h.product([h.fixed("config.model.model_id_dropout", 0.5),
                   h.fixed("config.model.hidden_dim", 64)]),
    ])  # fmt: skip
    names = sweep.run_names(points)
    runs = [sweep.Run(n, p, root / n, [], steps=6) for n, p in zip(names, points)]
    todo = [r for i, r in enumerate(runs) if i != 1]  # run 1 finished
    jobs = sweep.members_jobs(runs, todo, spec, root, "--config.train.steps=3", per_job=2,
                              keys=MEMBER_KEYS)  # fmt: skip
    assert [[r.name for r in j.runs] for j in jobs] == [
        [names[0], names[2]], [names[3], names[4]], [names[5], names[6]],
    ]  # fmt: skip
    assert names[6] == "model_id_dropout=0.5,hidden_dim=64"
    for j in jobs:
        assert j.module == "modellens_jax.members" and j.workdir == root
        assert j.args[:2] == [f"--config={spec}", f"--workdir={root}"]
        assert j.args[4:] == ["--config.model.hidden_dim=64", "--config.train.steps=3"]
        assert json.loads(j.args[3].removeprefix("--names=")) == [r.name for r in j.runs]
        assert j.log_path == root / f"{j.name}.log" and re.fullmatch(r"members-[0-9a-f]{8}", j.name)
    members_of = lambda j: json.loads(j.args[2].removeprefix("--members="))  # noqa: E731
    assert members_of(jobs[0]) == [
        {"loss.weights.pairwise": 0.0, "model.dropout": 0.0},
        {"loss.weights.pairwise": 0.5, "model.dropout": 0.0},
    ]
    assert members_of(jobs[2]) == [
        {"loss.weights.pairwise": 1.0, "model.dropout": 0.25},
        {"model.model_id_dropout": 0.5},  # a chained point: the other keys keep the config's
    ]
    # one job by default; the same runs give the same job name (its log survives re-runs)
    (one,) = sweep.members_jobs(runs, todo, spec, root, keys=MEMBER_KEYS)
    assert len(one.runs) == 6
    again = sweep.members_jobs(runs, todo, spec, root, "--config.train.steps=3", per_job=2,
                               keys=MEMBER_KEYS)  # fmt: skip
    assert [j.name for j in again] == [j.name for j in jobs]
    assert sweep.members_jobs(runs, [], spec, root, keys=MEMBER_KEYS) == []
    with pytest.raises(SweepError, match="members_per_job"):
        sweep.members_jobs(runs, todo, spec, root, per_job=-1, keys=MEMBER_KEYS)


@pytest.mark.parametrize(
    "points, bad",
    [
        (h.product([h.sweep("config.model.hidden_dim", [32, 64]),
                    h.sweep("config.model.dropout", [0.0, 0.1])]), "config.model.hidden_dim"),
        (h.chain([h.sweep("config.model.dropout", [0.0, 0.1]),
                  h.fixed("config.seed", 3)]), "config.seed"),  # set in some points only
    ],
)  # fmt: skip
def test_non_vectorisable_sweep_named(points, bad):
    with pytest.raises(SweepError, match=re.escape(f"varies {bad}, which cannot be vectorised")):
        sweep.vectorisable_split(points, MEMBER_KEYS)
    varying, fixed = sweep.vectorisable_split(
        h.product([h.sweep("config.model.dropout", [0.0, 0.1]), h.fixed("config.seed", 3)]),
        MEMBER_KEYS,
    )
    assert varying == ["config.model.dropout"] and fixed == {"config.seed": 3}


def test_vectorize_dry_run_prints_members_commands(tmp_path, capsys):
    root = tmp_path / "sweep root"
    extra = ["--config.train.steps=2", "--config.data.source=my dir"]
    fake_summary(root / "pairwise=0.0,dropout=0.1", step=2)  # finished: skipped
    fake_summary(root / "pairwise=1.0,dropout=0.3", step=1)  # partial: trained again
    base = [f"--config={EXAMPLE}", f"--workdir={root}", "--dry_run", f"--extra={shlex.join(extra)}",
            "--vectorize"]  # fmt: skip
    assert command.main([*base, "--members_per_job=5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("9 runs: 1 finished (skipped), 0 running elsewhere, 8 to run in 2 vectorised job(s)")  # fmt: skip
    assert "# skip pairwise=0.0,dropout=0.1: done" in out
    names = [f"pairwise={p},dropout={d}" for p in ("0.0", "0.5", "1.0") for d in ("0.0", "0.1", "0.3")]  # fmt: skip
    names.remove("pairwise=0.0,dropout=0.1")
    cmds = [shlex.split(line) for line in out if not line.startswith("#")]
    assert len(cmds) == 2
    got_names = []
    for cmd in cmds:
        assert cmd[:5] == [sys.executable, "-m", "modellens_jax.members", f"--config={EXAMPLE}", f"--workdir={root}"]  # fmt: skip
        assert cmd[7:] == extra
        mems = json.loads(cmd[5].removeprefix("--members="))
        job_names = json.loads(cmd[6].removeprefix("--names="))
        assert [f"pairwise={m['loss.weights.pairwise']},dropout={m['model.dropout']}" for m in mems] == job_names  # fmt: skip
        got_names += job_names
    assert got_names == names and len(json.loads(cmds[0][6].removeprefix("--names="))) == 5
    assert any("restarts pairwise=1.0,dropout=0.3 from scratch" in line for line in out)
    assert not (root / "pairwise=0.0,dropout=0.0").exists()  # nothing created
    # default: one job with every unfinished run
    assert command.main(base) == 0
    out = capsys.readouterr().out
    assert "in 1 vectorised job(s)" in out and len([x for x in out.splitlines() if not x.startswith("#")]) == 1  # fmt: skip
    # the sweep script prints the same; a non-vectorisable sweep is refused, naming the key
    p = subprocess.run([sys.executable, "launch/sweep.py", *base], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1:] == out.splitlines()[1:]
    spec = write_config(tmp_path, 'h.product([h.sweep("config.model.hidden_dim", [32, 64]), h.sweep("config.model.dropout", [0.0, 0.1])])')  # fmt: skip
    assert command.main([f"--config={spec}", f"--workdir={root}", "--dry_run", "--vectorize"]) == 2
    err = capsys.readouterr().err
    assert "varies config.model.hidden_dim, which cannot be vectorised" in err
    assert command.main([f"--config={EXAMPLE}", f"--workdir={root}", "--members_per_job=2"]) == 2
    assert "needs --vectorize" in capsys.readouterr().err


FAKE_MEMBERS = """#!{python}
# Stands in for `python -m modellens_jax.members`: records the call, sleeps FAKE_SLEEP, fails when
# FAKE_FAIL is one of the names, else writes each member's summary under ROOT/<name>.
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
assert args[:2] == ["-m", "modellens_jax.members"], args
kv = dict(a[2:].split("=", 1) for a in args[2:] if "=" in a)
root, names, mems = Path(kv["workdir"]), json.loads(kv["names"]), json.loads(kv["members"])
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(names) + "\\n")
(root / "fake.pid").write_text(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if os.environ.get("FAKE_FAIL") in names:
    print("boom"); sys.exit(3)
steps = int(kv.get("config.train.steps", 6))
for name, m in zip(names, mems):
    j = sum(m.values())
    best = {{"step": steps, "judge": j, "val": {{"completion": {{"weighted_tau": j}}}}}}
    (root / name).mkdir(exist_ok=True)
    (root / name / "train_summary.json").write_text(json.dumps({{"step": steps, "best": best,
        "vectorised": True}}))
print(f"step {{steps}}/{{steps}}")
"""


def test_vectorize_execute_skip_fail_and_scripts(tmp_path, fake, monkeypatch, capsys):
    """Members jobs through execute: pid files, logs, exit codes per run, re-runs skip the
    finished members; the emitted scripts run members jobs too."""
    _, calls = fake
    python = tmp_path / "fake_members"
    python.write_text(FAKE_MEMBERS.format(python=sys.executable))
    python.chmod(0o755)
    root = tmp_path / "root"
    args = [f"--config={EXAMPLE}", f"--workdir={root}", f"--python={python}", "--parallel=2",
            "--vectorize", "--members_per_job=4"]  # fmt: skip
    monkeypatch.setenv("FAKE_FAIL", "pairwise=1.0,dropout=0.3")  # the third job (of 1 run)
    assert command.main(args) == 1
    out = capsys.readouterr().out
    assert "start members-" in out and "(4 members)" in out and "FAILED members-" in out
    assert "boom" in out
    assert len(calls.read_text().splitlines()) == 3
    rows = list(csv.DictReader(open(root / "sweep.csv")))
    assert [r["status"] for r in rows] == ["done"] * 8 + ["failed"]
    assert float(rows[4]["judge"]) == pytest.approx(0.6)
    assert not list(root.glob("*/sweep.pid"))
    log = (root / "pairwise=0.5,dropout=0.1" / "log.txt").read_text()
    (job_log,) = re.findall(r"trained in (members-\w+): log (\S+)", log)
    assert "step 6/6" in Path(job_log[1]).read_text()
    # re-run: only the failed member trains again, alone in its job
    monkeypatch.delenv("FAKE_FAIL")
    calls.write_text("")
    assert command.main(args) == 0
    assert calls.read_text().splitlines() == ['["pairwise=1.0,dropout=0.3"]']
    calls.write_text("")
    assert command.main(args) == 0 and calls.read_text() == ""
    capsys.readouterr()
    # emitted scripts: one line / one array task per members job
    root2 = tmp_path / "root2"
    base = [f"--config={EXAMPLE}", f"--workdir={root2}", "--vectorize", "--members_per_job=5"]
    assert command.main([*base, "--emit=slurm"]) == 0
    slurm = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in slurm and slurm.count("-m modellens_jax.members") == 2
    assert command.main([*base, "--emit=shell"]) == 0
    shell = capsys.readouterr().out
    (tmp_path / "shell.sh").write_text(shell)
    env = {**os.environ, "PYTHON": str(python)}
    r = subprocess.run(["bash", str(tmp_path / "shell.sh")], cwd=ROOT, env=env, timeout=60,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [len(json.loads(x)) for x in calls.read_text().splitlines()] == [5, 4]
    assert len(list(root2.glob("*/train_summary.json"))) == 9


def test_running_members_job_is_not_started_twice(tmp_path):
    root = tmp_path / "root"
    run = sweep.Run("dropout=0.1", {}, root / "dropout=0.1", [], steps=6)
    other = sweep.Run("dropout=0.2", {}, root / "dropout=0.2", [], steps=6)
    for r in (run, other):
        r.workdir.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             f"--workdir={root}", '--names=["dropout=0.1"]'])  # fmt: skip
    try:
        deadline = time.time() + 30  # until it has exec'd (an empty cmdline counts as a match)
        while b"--names" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.time() < deadline
            time.sleep(0.05)
        for r in (run, other):
            (r.workdir / sweep.PID_FILE).write_text(f"{proc.pid}\n")
        assert sweep.status(run) == "running"
        assert sweep.status(other) == "pending"  # not one of that job's members
    finally:
        proc.kill()
        proc.wait()
    assert sweep.status(run) == "pending"


@pytest.mark.slow
def test_real_vectorised_sweep_end_to_end(tmp_path):
    """A 2-point sweep trained as one members job through launch/sweep.py --vectorize: each
    member is a finished run ROOT/<sweep name>, aggregated; a re-run skips both."""
    from modellens_jax import prepare

    spec = write_config(
        tmp_path,
        'h.product([h.sweep("config.loss.weights.pairwise", [0.0, 1.0]), h.sweep("config.model.dropout", [0.1])])',
    )  # fmt: skip
    spec += ":tiny"
    root = tmp_path / "root"
    extra = ("--config.train.steps=2 --config.model.use_model_desc=False "
             "--config.model.use_dataset_desc=False")  # fmt: skip
    prepare.prepare(sweep.resolve_config(spec).data, root / "corpus", verbose=False)
    cmd = [sys.executable, "launch/sweep.py", f"--config={spec}", f"--workdir={root}",
           "--vectorize", f"--extra={extra}"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(f.read_text()[-3000:] for f in root.glob("members-*.log"))
    assert p.returncode == 0, p.stdout + p.stderr + logs
    assert "(2 members)" in p.stdout
    for name in ("pairwise=0.0,dropout=0.1", "pairwise=1.0,dropout=0.1"):
        summary = json.loads((root / name / "train_summary.json").read_text())
        assert summary["step"] == 2 and summary["vectorised"]
        assert "trained in members-" in (root / name / "log.txt").read_text()
    assert "step 2/2" in logs
    rows = list(csv.DictReader(open(root / "sweep.csv")))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(math.isfinite(float(r["judge"])) for r in rows)
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "2 runs: 2 finished (skipped), 0 running elsewhere, 0 to run in 0 vectorised job(s)" in again.stdout  # fmt: skip
