"""The long fault-injection run: ``python -m tests.faults.run --trials=N`` (or
``launch/faults.sh``) prints a table of what held.

Trials (tiny preset, one CPU device, the trainer as a real subprocess):
  kill -9     N trials: SIGKILL at a random moment (often during an asynchronous save), rerun;
              the final parameters must equal the straight run's bit for bit.
  SIGTERM     N/2 trials (at least 10 with --trials=20): SIGTERM at a random moment; exit 75,
              one line, the step in flight saved (steps lost = last step logged before the
              signal minus the step saved, floored at 0), rerun; bit-identical final params.
  corrupted   one trial per damage (state overwritten / truncated, iterator state edited /
              unsealed / invalid, metadata edited / invalid): detected, the previous step
              restored, the run redone to the same final parameters.
  concurrent  10 second runs on a workdir a live run holds: each refused, exit 2, one line
              naming the holder; the first run unaffected.
  disk full   a real 2 MiB tmpfs under the checkpoints (``unshare -rm``, where the machine allows
              unprivileged mount namespaces; else simulated): exit 74, one line naming the step
              and the last good checkpoint, no temporary left; after the space is raised the
              rerun resumes and finishes. Export onto a full tmpfs: exit 74, one line, no temp.
  malformed   the fuzzer's cases (>= 50: corpora, serving CSVs, queries, configs) in-process,
              plus command-line cases (train with bad configs, prepare on bad corpora): one
              line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import common, fuzz

STEPS, EVERY = 120, 10
FLAGS = [f"--config.train.steps={STEPS}", f"--config.train.checkpoint_every={EVERY}",
         "--config.train.log_every=1", "--config.train.keep_latest=2"]  # fmt: skip


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, fault: str, result: str, detail: str = "") -> None:
        self.rows.append((fault, result, detail))
        print(f"  {fault}: {result}  {detail}", flush=True)

    def markdown(self) -> str:
        out = ["| fault | result | detail |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in self.rows]
        return "\n".join(out)


def _reference(base: Path, corpus: Path, cache: Path) -> Path:
    wd = common.workdir_with(corpus, base / "reference")
    p = common.run_train(wd, *FLAGS, cache=cache, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return wd


def _same_final(wd: Path, ref: Path) -> bool:
    try:
        return common.same_params(common.final_params(wd, STEPS), common.final_params(ref, STEPS))
    except Exception as e:  # a missing or unreadable final checkpoint
        print(f"    compare failed: {type(e).__name__}: {e}", flush=True)
        return False


def _interrupt(base, corpus, ref, cache, rng, i, sig) -> dict:
    wd = common.workdir_with(corpus, base / f"{sig.name.lower()}_{i}")
    target = rng.randint(3, STEPS - 5)
    p = common.start_train(wd, *FLAGS, cache=cache)
    ok = common.wait_for(lambda: common.logged_step(p.log_path) >= target or p.poll() is not None,
                         timeout=600)  # fmt: skip
    time.sleep(rng.uniform(0, 0.4))
    during_save = bool(list((wd / "checkpoints").glob("*orbax-checkpoint-tmp*")))
    logged = common.logged_step(p.log_path)
    p.send_signal(sig)
    rc = p.wait(timeout=300)
    log = p.log_path.read_text(errors="replace")
    res = {"rc": rc, "logged": logged, "during_save": during_save, "reached": ok}
    if sig == signal.SIGTERM:
        lines = [ln for ln in common.error_lines(log) if ln.startswith("interrupted by")]
        res["one_line"] = len(lines) == 1
        res["saved"] = int(lines[0].split("at step ")[1].split("/")[0]) if lines else -1
        res["lost"] = max(0, logged - res["saved"]) if lines else None
        res["noise"] = [ln for ln in common.error_lines(log)
                        if not ln.startswith(("step ", "mesh ", "  ", "interrupted", "resumed"))]  # fmt: skip
    r2 = common.run_train(wd, *FLAGS, cache=cache, timeout=900)
    res["resume_rc"] = r2.returncode
    res["identical"] = r2.returncode == 0 and _same_final(wd, ref)
    shutil.rmtree(wd, ignore_errors=True)
    return res


def kill_trials(table, base, corpus, ref, cache, rng, n):
    got = [_interrupt(base, corpus, ref, cache, rng, i, signal.SIGKILL) for i in range(n)]
    good = sum(r["identical"] for r in got)
    saves = sum(r["during_save"] for r in got)
    table.add("kill -9 at a random step, rerun", f"{good}/{n} bit-identical",
              f"{saves} killed during a checkpoint save; kill points (last logged step) "
              f"{sorted(r['logged'] for r in got)}")  # fmt: skip
    return good == n


def term_trials(table, base, corpus, ref, cache, rng, n):
    got = [_interrupt(base, corpus, ref, cache, rng, i, signal.SIGTERM) for i in range(n)]
    good = sum(r["identical"] and r["rc"] == 75 and r["one_line"] and r["lost"] == 0
               and not r["noise"] for r in got)  # fmt: skip
    lost = [r["lost"] for r in got]
    table.add("SIGTERM at a random step, rerun", f"{good}/{n} exit 75, one line, 0 steps lost, "
              "bit-identical", f"steps lost {lost}; saved steps {[r['saved'] for r in got]}; "
              f"{sum(r['during_save'] for r in got)} signalled during a save; exit codes "
              f"{sorted(set(r['rc'] for r in got))}")  # fmt: skip
    for r in got:
        if r["noise"]:
            print(f"    noise: {r['noise'][:3]}")
    return good == n


def _damage(kind: str, step_dir: Path) -> None:
    from tests.faults import test_checkpoint_items as t

    if kind == "state overwritten":
        t.damage_state(step_dir)
    elif kind == "state truncated":
        f = max((step_dir / "state").rglob("*"), key=lambda p: p.stat().st_size)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif kind == "iterator edited (next_index + 7)":
        t.damage_iterator(step_dir)
    elif kind == "iterator without checksum":
        t.unseal_iterator(step_dir)
    elif kind == "iterator invalid JSON":
        (step_dir / "data" / "process_0-of-1.json").write_text("{not json")
    elif kind == "meta edited":
        t.damage_meta(step_dir)
    elif kind == "meta invalid JSON":
        (step_dir / "meta" / "metadata").write_text('{"step": ')
    else:
        raise ValueError(kind)


KINDS = ["state overwritten", "state truncated", "iterator edited (next_index + 7)",
         "iterator without checksum", "iterator invalid JSON", "meta edited",
         "meta invalid JSON"]  # fmt: skip


def corrupt_trials(table, base, corpus, ref, cache):
    good = 0
    for k, kind in enumerate(KINDS):
        wd = common.workdir_with(corpus, base / f"corrupt_{k}")
        shutil.copytree(ref / "checkpoints", wd / "checkpoints")
        shutil.copy(ref / "config.json", wd / "config.json")
        _damage(kind, wd / "checkpoints" / str(STEPS))
        p = common.run_train(wd, *FLAGS, cache=cache, timeout=900)
        text = p.stdout + p.stderr
        ok = (p.returncode == 0 and f"checkpoint step {STEPS} is corrupted" in text
              and f"resumed from step {STEPS - EVERY}" in text and _same_final(wd, ref))  # fmt: skip
        good += ok
        shutil.rmtree(wd, ignore_errors=True)
    table.add("corrupted item of the newest checkpoint", f"{good}/{len(KINDS)} detected, "
              "previous step restored, bit-identical redo", "; ".join(KINDS))  # fmt: skip
    return good == len(KINDS)


def concurrent_trials(table, base, corpus, cache, n=10):
    wd = common.workdir_with(corpus, base / "concurrent")
    p = common.start_train(wd, "--config.train.steps=100000", "--config.train.log_every=50",
                           "--config.train.checkpoint_every=100000", cache=cache)  # fmt: skip
    refused, lines_ok = 0, 0
    try:
        assert common.wait_for(lambda: (wd / ".workdir.lock").exists(), timeout=300)
        for _ in range(n):
            q = common.run_train(wd, *FLAGS, cache=cache, timeout=300)
            lines = common.error_lines(q.stderr)
            refused += q.returncode == 2
            lines_ok += len(lines) == 1 and f"in use by pid {p.pid}" in lines[0]
        alive = p.poll() is None
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    table.add("second run on a workdir a live run holds", f"{refused}/{n} refused (exit 2)",
              f"{lines_ok}/{n} one line naming the holder; first run unaffected: {alive}, "
              f"then SIGTERM -> exit {rc}")  # fmt: skip
    shutil.rmtree(wd, ignore_errors=True)
    return refused == n == lines_ok and alive and rc == 75


FULL_SH = r"""
set -u
mount -t tmpfs -o size=2m tmpfs "$WD/checkpoints" || exit 99
"$PY" -m modellens_jax.train $FLAGS >"$WD.full.out" 2>"$WD.full.err"; echo "rc=$?"
ls -A "$WD/checkpoints" | tr '\n' ' '; echo
mount -o remount,size=64m "$WD/checkpoints"
"$PY" -m modellens_jax.train $FLAGS >"$WD.rerun.out" 2>&1; echo "rerun=$?"
ls -A "$WD/checkpoints" | tr '\n' ' '; echo
mkdir -p "$WD/exportdir" && mount -t tmpfs -o size=64k tmpfs "$WD/exportdir"
"$PY" -m modellens_jax.export --workdir="$WD" --out="$WD/exportdir/bundle" --platforms=cpu \
  >"$WD.export.out" 2>"$WD.export.err"; echo "export=$?"
ls -A "$WD/exportdir" | tr '\n' ' '; echo
"""


def disk_full_trial(table, base, corpus, cache):
    wd = common.workdir_with(corpus, base / "full")
    (wd / "checkpoints").mkdir()
    flags = " ".join(["--config=configs/default.py:tiny", f"--workdir={wd}", *common.NO_DESC,
                      "--config.train.eval_every=100000"])  # fmt: skip
    env = {**common.env(cache), "WD": str(wd), "PY": sys.executable, "FLAGS": flags}
    script = base / "full.sh"
    script.write_text(FULL_SH)
    p = subprocess.run(["unshare", "-rm", "bash", str(script)], cwd=common.ROOT, env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    out = p.stdout.splitlines()
    if p.returncode == 99 or len(out) < 6:
        table.add("disk full during a checkpoint save", "not run",
                  f"no unprivileged tmpfs here ({p.stderr.strip()[:120]}); see the simulated "
                  "test in tests/faults/test_disk_full.py")  # fmt: skip
        return True
    err = [ln for ln in common.error_lines(Path(f"{wd}.full.err").read_text())]
    ok_train = (out[0] == "rc=74" and out[1].split() == ["3"] and len(err) == 1
                and "No space left on device (ENOSPC)" in err[0] and "last good checkpoint is "
                "step 3" in err[0] and out[2] == "rerun=0" and out[3].split() == ["3", "6"])  # fmt: skip
    table.add("disk full during a checkpoint save (real 2 MiB tmpfs)",
              "exit 74, one line, previous checkpoint intact, no temp left, rerun resumes"
              if ok_train else "FAILED", f"{out[0]}; left {out[1].split()}; stderr lines "
              f"{len(err)}: {err[0][:160] if err else ''}...; {out[2]}; then {out[3].split()}")  # fmt: skip
    eerr = common.error_lines(Path(f"{wd}.export.err").read_text())
    ok_export = out[4] == "export=74" and out[5].strip() == "" and len(eerr) == 1
    table.add("export onto a full disk (real 64 KiB tmpfs)", "exit 74, one line, nothing left"
              if ok_export else "FAILED", f"{out[4]}; left: {out[5].split()}; "
              f"{eerr[0][:160] if eerr else ''}")  # fmt: skip
    shutil.rmtree(wd, ignore_errors=True)
    return ok_train and ok_export


def _one_error(stderr: str) -> bool:
    """One ``error:`` line and no traceback (prepare's progress lines aside)."""
    lines = common.error_lines(stderr)
    return sum(ln.startswith("error:") for ln in lines) == 1 and "Traceback" not in stderr


def malformed_trials(table, base, corpus, cache, n):
    good, failures = 0, []
    cases = list(fuzz.cases(n, seed=2016))
    kinds: dict[str, int] = {}
    for k, (name, build) in enumerate(cases):
        d = base / f"fuzz_{k}"
        d.mkdir()
        try:
            build(d)()
            good += 1
        except AssertionError as e:
            failures.append(f"{name}: {e}")
        kinds[name.split("/")[0]] = kinds.get(name.split("/")[0], 0) + 1
        shutil.rmtree(d, ignore_errors=True)
    table.add("malformed inputs (fuzzer, in-process)", f"{good}/{len(cases)} refused with one "
              "line, nothing written", ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))  # fmt: skip
    for f in failures[:5]:
        print(f"    {f}")
    # ... and through the commands: exit 2, one line, nothing written
    cli = [("train", ["--config.input.list_size=0"]), ("train", ["--config.train.judge=foo"]),
           ("train", ["--config.model.dropout=1.5"]), ("train", ["--config.optim.decay=linear"]),
           ("train", ["--config.train.steps=-5"])]  # fmt: skip
    cli_good = 0
    for k, (_, flags) in enumerate(cli):
        wd = base / f"cli_{k}"
        q = common.run_train(wd, *flags, cache=cache, timeout=300)
        cli_good += q.returncode == 2 and _one_error(q.stderr) and not wd.exists()
    for k in range(5):
        name, build = fuzz.corpus_case(random.Random(k), k * 3)
        d = base / f"cli_corpus_{k}"
        d.mkdir()
        build(d)
        cmd = [
            sys.executable,
            "-m",
            "modellens_jax.prepare",
            "--config=configs/default.py:tiny",
            f"--config.data.source={d / 'src'}",
            f"--out={d / 'out'}",
        ]
        q = subprocess.run(cmd, cwd=common.ROOT, env=common.env(cache), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        cli_good += q.returncode == 2 and _one_error(q.stderr) and not (d / "out").exists()
    table.add("malformed inputs through the commands", f"{cli_good}/10 exit 2, one line, "
              "nothing written", "train with 5 bad configs, prepare on 5 bad corpora")  # fmt: skip
    return good == len(cases) and cli_good == 10


def pytest_trials(table) -> bool:
    """The in-process fault tests, all of them (the normal suite runs a short subset)."""
    env = {**common.env(), "MODELLENS_FAULTS_LONG": "1"}
    del env["XLA_FLAGS"]  # tests/conftest.py sets its 8 fake devices
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-q", "-p",
                        "no:randomly", "--no-header"], cwd=common.ROOT, env=env,
                       capture_output=True, text=True, timeout=3600)  # fmt: skip
    last = [ln for ln in p.stdout.splitlines() if " passed" in ln or " failed" in ln]
    summary = last[-1].strip("= ") if last else p.stdout[-300:]
    table.add("tests/faults (pytest, long set: MODELLENS_FAULTS_LONG=1)",
              "all passed" if p.returncode == 0 else "FAILED", summary)  # fmt: skip
    return p.returncode == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--trials", type=int, default=20, help="kill -9 trials (SIGTERM: half, >= 10)")
    ap.add_argument("--fuzz", type=int, default=60, help="malformed inputs (>= 50)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    ap.add_argument("--only", default="", help="comma-separated subset: kill,term,corrupt,"
                    "concurrent,full,malformed,pytest")  # fmt: skip
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    only = set(filter(None, a.only.split(",")))
    table = Table()
    base = Path(tempfile.mkdtemp(prefix="modellens-faults-"))
    t0 = time.time()
    ok = True
    try:
        print(f"fault-injection run in {base}", flush=True)
        cache = base / "jax_cache"
        corpus = common.prepare_corpus(base / "corpus")
        need_ref = not only or only & {"kill", "term", "corrupt"}
        ref = _reference(base, corpus, cache) if need_ref else None
        if not only or "kill" in only:
            ok &= kill_trials(table, base, corpus, ref, cache, rng, a.trials)
        if not only or "term" in only:
            ok &= term_trials(table, base, corpus, ref, cache, rng, max(10, a.trials // 2))
        if not only or "corrupt" in only:
            ok &= corrupt_trials(table, base, corpus, ref, cache)
        if not only or "concurrent" in only:
            ok &= concurrent_trials(table, base, corpus, cache)
        if not only or "full" in only:
            ok &= disk_full_trial(table, base, corpus, cache)
        if not only or "malformed" in only:
            ok &= malformed_trials(table, base, corpus, cache, max(50, a.fuzz))
        if not only or "pytest" in only:
            ok &= pytest_trials(table)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = (f"Fault-injection run: `python -m tests.faults.run --trials={a.trials} "
            f"--fuzz={a.fuzz} --seed={a.seed}` (tiny preset, {STEPS} steps, a checkpoint every "
            f"{EVERY}, one CPU device; {time.time() - t0:.0f} s)\n\n{table.markdown()}\n")  # fmt: skip
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    print(json.dumps({"all_held": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
