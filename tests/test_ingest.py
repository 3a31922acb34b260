"""Ingestion, cleaning, schema rules and the prepare command (issue 2).

Small synthetic corpora are written to tmp_path; the shipped corpus is prepared at most twice.
Every bad-input case checks one error naming file, row and field, and that nothing was written.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
import pytest

from modellens_jax import cli, prepare
from modellens_jax.data import corpus, ingest, schema, splits
from modellens_jax.data.ingest import CorpusError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "modellens_corpus"
SHIPPED = ROOT / "modellens_jax" / "resources" / "leaderboard-v1"

RECORD_HEADER = list(schema.LEADERBOARD_RECORD_COLUMNS)
MODEL_HEADER = list(schema.MODEL_COLUMNS)
DATASET_HEADER = list(schema.DATASET_COLUMNS)


# --- helpers -----------------------------------------------------------------------------------
def default_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_default_config", ROOT / "configs/default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def data_cfg(source, **overrides) -> ml_collections.ConfigDict:
    """configs/default.py's data config with ``source`` and dotted overrides ("split.x")."""
    cfg = default_config().data
    cfg.source = str(source)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


GROUPS = [  # task, dataset, metric, higher_is_better
    ("Image Classification", "CIFAR-10", "top1", "1"),
    ("Image Classification", "CIFAR-10", "top1 err", "0"),
    ("Text Classification", "SST-2", "accuracy", "1"),
]
MODELS = [f"org/net-{c}" for c in "abcdef"]


def base_records() -> list[list[str]]:
    """18 records: 3 groups x 6 models, all valid."""
    rows = []
    for gi, (task, ds, metric, hib) in enumerate(GROUPS):
        for mi, m in enumerate(MODELS):
            v = 70.0 + 3 * mi + gi if hib == "1" else 30.0 - 3 * mi
            rows.append(
                [
                    task,
                    ds,
                    m,
                    metric,
                    f"{v:g}",
                    f"{ds} test set",
                    hib,
                    "src",
                    "2023-01-0" + "123456"[mi],
                ]
            )
    return rows


def base_models() -> list[list[str]]:
    return [
        [m, "net", f"{0.1 * (i + 1):g}", f"model {m}", f"2023-0{i + 1}-01", "src"]
        for i, m in enumerate(MODELS)
    ]


def base_datasets() -> list[list[str]]:
    return [
        ["CIFAR-10", "Image Classification", "32x32 images", "image", "src"],
        ["SST-2", "Text Classification", "movie review sentences", "text", "src"],
    ]


def write_leaderboard(d: Path, records=None, models=None, datasets=None, gz=False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ext = ".csv.gz" if gz else ".csv"
    write_csv(d / f"records{ext}", RECORD_HEADER, base_records() if records is None else records)
    if models is not False:
        write_csv(d / "models.csv", MODEL_HEADER, base_models() if models is None else models)
    if datasets is not False:
        write_csv(
            d / "datasets.csv", DATASET_HEADER, base_datasets() if datasets is None else datasets
        )
    return d


def copy_fixture(d: Path) -> Path:
    shutil.copytree(FIXTURE, d)
    return d


def assert_no_output(out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    if out.parent.exists():
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not left, f"temp dirs left next to {out}: {left}"


def run_cli(src, out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "modellens_jax.prepare",
        "--config=configs/default.py",
        f"--config.data.source={src}",
        f"--out={out}",
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def check_error(msg: str, file: str, row: int | None, field: str | None, match: str) -> None:
    assert file in msg, msg
    if row is not None:
        assert re.search(rf"\b(row|entry) {row}\b", msg), msg
    if field is not None:
        assert f"field '{field}'" in msg, msg
    assert re.search(match, msg), msg


# --- bad input: one clear error, exit != 0, nothing written ------------------------------------
def _set(rows, r, col, value):
    """Sets data row ``r`` (1-based) column ``col`` of a records table."""
    rows[r - 1][RECORD_HEADER.index(col)] = value
    return rows


def case_missing_column(d):
    rows = [r[:4] + r[5:] for r in base_records()]
    write_leaderboard(d)
    write_csv(d / "records.csv", [c for c in RECORD_HEADER if c != "value"], rows)
    return "records.csv", None, "value", r"missing column\(s\) \['value'\]"


def case_non_numeric(d):
    write_leaderboard(d, records=_set(base_records(), 3, "value", "abc"))
    return "records.csv", 3, "value", r"'abc' is not a number"


def case_nan(d):
    write_leaderboard(d, records=_set(base_records(), 2, "value", "NaN"))
    return "records.csv", 2, "value", r"'NaN' is not a finite number"


def case_inf(d):
    write_leaderboard(d, records=_set(base_records(), 5, "value", "-inf"))
    return "records.csv", 5, "value", r"'-inf' is not a finite number"


def case_empty_value(d):
    write_leaderboard(d, records=_set(base_records(), 4, "model", ""))
    return "records.csv", 4, "model", r"empty value"


def case_empty_numeric_value(d):
    write_leaderboard(d, records=_set(base_records(), 5, "value", ""))
    return "records.csv", 5, "value", r"empty value \(1 such rows\)"


def case_value_beyond_float32(d):
    write_leaderboard(d, records=_set(base_records(), 6, "value", "-3.5e38"))
    return "records.csv", 6, "value", r"'-3.5e38' is out of range"


def case_empty_file(d):
    write_leaderboard(d)
    (d / "records.csv").write_bytes(b"")
    return "records.csv", None, None, r"empty file"


def case_header_only(d):
    write_leaderboard(d)
    (d / "records.csv").write_text(",".join(RECORD_HEADER) + "\n")
    return "records.csv", 1, None, r"no data rows"


def case_higher_is_better_not_01(d):
    write_leaderboard(d, records=_set(base_records(), 7, "higher_is_better", "yes"))
    return "records.csv", 7, "higher_is_better", r"'yes' is not 0 or 1"


def case_empty_direction_unknown_metric(d):
    rows = base_records()
    for r in range(1, 7):
        _set(rows, r, "metric", "zorbly")
    _set(rows, 2, "higher_is_better", "")
    write_leaderboard(d, records=rows)
    return "records.csv", 2, "higher_is_better", r"direction of metric 'zorbly' cannot be inferred"


def case_conflicting_direction(d):
    rows = base_records()
    rows.append(list(rows[1]))  # exact duplicate of row 2 ...
    _set(rows, len(rows), "higher_is_better", "0")  # ... that says lower is better
    write_leaderboard(d, records=rows)
    return "records.csv", 19, "higher_is_better", r"conflicts with row 1"


def case_corrupt_gzip(d):
    write_leaderboard(d, gz=True)
    data = (d / "records.csv.gz").read_bytes()
    (d / "records.csv.gz").write_bytes(data[: len(data) // 2])  # truncated
    return "records.csv.gz", None, None, r"unreadable gzip"


def case_not_gzip(d):
    write_leaderboard(d)
    (d / "records.csv").rename(d / "records.csv.gz")  # plain text named .gz
    return "records.csv.gz", None, None, r"unreadable gzip"


def case_too_many_fields(d):
    write_leaderboard(d)
    lines = (d / "records.csv").read_text().splitlines()
    lines[6] += ",extra"  # data row 6
    (d / "records.csv").write_text("\n".join(lines) + "\n")
    return "records.csv", 6, None, r"expected 9 fields as in the header, got 10"


def case_too_few_fields(d):
    write_leaderboard(d)
    lines = (d / "records.csv").read_text().splitlines()
    lines[8] = ",".join(lines[8].split(",")[:7])  # data row 8 loses source and date
    (d / "records.csv").write_text("\n".join(lines) + "\n")
    return "records.csv", 8, None, r"expected 9 fields as in the header, got 7"


def case_unbalanced_quote(d):
    write_leaderboard(d)
    lines = (d / "records.csv").read_text().splitlines()
    lines[4] = lines[4].replace("CIFAR-10 test set", '"CIFAR-10 test set')  # data row 4
    (d / "records.csv").write_text("\n".join(lines) + "\n")
    return "records.csv", 4, None, r"malformed CSV"


def case_not_utf8(d):
    write_leaderboard(d)
    raw = (d / "records.csv").read_bytes().replace(b"org/net-c", b"org/net-\xff", 1)
    (d / "records.csv").write_bytes(raw)
    return "records.csv", None, None, r"not UTF-8 text.*line 4|line 4.*not UTF-8"


def case_bad_record_date(d):
    write_leaderboard(d, records=_set(base_records(), 10, "date", "2023-13-45"))
    return "records.csv", 10, "date", r"'2023-13-45' is not an ISO date"


def case_negative_params(d):
    models = base_models()
    models[2][2] = "-7"
    write_leaderboard(d, models=models)
    return "models.csv", 3, "params", r"negative parameter count -7"


def case_fractional_negative_params(d):
    """Kills the mutant ``params < -1`` (ingest.py negative-params check): a count in [-1, 0)
    must be refused like any other negative one."""
    models = base_models()
    models[3][2] = "-0.5"
    write_leaderboard(d, models=models)
    return "models.csv", 4, "params", r"negative parameter count -0.5"


def case_non_numeric_params(d):
    models = base_models()
    models[1][2] = "7B"
    write_leaderboard(d, models=models)
    return "models.csv", 2, "params", r"'7B' is not a number"


def case_bad_release_date(d):
    models = base_models()
    models[4][4] = "last spring"
    write_leaderboard(d, models=models)
    return "models.csv", 5, "release_date", r"'last spring' is not an ISO date"


def case_all_groups_too_small(d):
    rows = [r for r in base_records() if r[2] == MODELS[0]]  # one model per group
    write_leaderboard(d, records=rows)
    return "records.csv", None, None, r"no evaluation group .* has >= 2 models"


def case_modellens_unknown_direction(d):
    copy_fixture(d)
    text = (d / "data.csv").read_text().replace(",F1,", ",zorbly,")
    (d / "data.csv").write_text(text)
    first = next(i for i, line in enumerate(text.splitlines()) if ",zorbly," in line)
    return "data.csv", first, "metric", r"unknown direction for metric 'zorbly'"


def case_modellens_model2id_string(d):
    copy_fixture(d)
    m2i = json.loads((d / "model2id.json").read_text())
    key = sorted(m2i)[2]
    m2i[key] = "2"
    (d / "model2id.json").write_text(json.dumps(m2i, sort_keys=True))
    return (
        "model2id.json",
        3,
        "id",
        rf"entry 3 \('{re.escape(key)}'\).*expected an integer, got str",
    )


def case_modellens_size_list(d):
    copy_fixture(d)
    prof = json.loads((d / "model_profile.json").read_text())
    key = sorted(prof)[0]
    prof[key]["size"] = [7, "B"]
    (d / "model_profile.json").write_text(json.dumps(prof, sort_keys=True))
    return "model_profile.json", 1, "size", r'expected a number of billions or "unknown", got list'


def case_modellens_negative_size(d):
    copy_fixture(d)
    prof = json.loads((d / "model_profile.json").read_text())
    key = sorted(prof)[4]
    prof[key]["size"] = -1.5
    (d / "model_profile.json").write_text(json.dumps(prof, sort_keys=True))
    return "model_profile.json", 5, "size", r"must be a finite, non-negative number"


def case_modellens_family_not_string(d):
    copy_fixture(d)
    m2f = json.loads((d / "model2family.json").read_text())
    key = sorted(m2f)[1]
    m2f[key] = 3
    (d / "model2family.json").write_text(json.dumps(m2f, sort_keys=True))
    return "model2family.json", 2, "family", r"expected a string, got int"


def case_modellens_invalid_json(d):
    copy_fixture(d)
    (d / "task2id.json").write_text('{\n "Image Classification": 0,\n "Language Modeling": 1,,\n}')
    return "task2id.json", None, None, r"line 3.*invalid JSON"


def case_modellens_missing_side_file(d):
    copy_fixture(d)
    (d / "metric2id.json").unlink()
    return "metric2id.json", None, None, r"missing \(required by the ModelLens corpus format\)"


BAD_INPUT = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_direct(case, tmp_path):
    """Through ``prepare.prepare``: CorpusError with path/row/field, nothing written."""
    src = tmp_path / "src"
    file, row, field, match = BAD_INPUT[case](src)
    out = tmp_path / "out" / "corpus"
    with pytest.raises(CorpusError) as info:
        prepare.prepare(data_cfg(src), out, verbose=False)
    e = info.value
    check_error(str(e), file, row, field, match)
    assert Path(e.path).name == file
    assert e.row == row
    if field is not None:
        assert e.field == field
    assert_no_output(out)
    assert not out.parent.exists()  # not even the parent directory was created


CLI_CASES = [
    "non_numeric",
    "nan",
    "corrupt_gzip",
    "conflicting_direction",
    "too_many_fields",
    "modellens_unknown_direction",
    "modellens_size_list",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_cli(case, tmp_path):
    """The real command: exit status 2, one 'error:' line naming file/row/field, no traceback."""
    src = tmp_path / "src"
    file, row, field, match = BAD_INPUT[case](src)
    out = tmp_path / "out"
    p = run_cli(src, out)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    check_error(errors[0], file, row, field, match)
    assert p.stdout == ""
    assert_no_output(out)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"split.dataset_test": 1.5}, r"data\.split\.dataset_test=1\.5: must be inside \(0, 1\)"),
        ({"split.completion_val": 0.0}, r"data\.split\.completion_val=0\.0: must be inside"),
        (
            {"split.model_val": 0.5, "split.model_test": 0.5},
            r"model_val \+ model_test .* must be < 1",
        ),
        ({"min_group_models": 1}, r"data\.min_group_models=1: must be an integer >= 2"),
        ({"bad_rows": "ignore"}, r"data\.bad_rows='ignore': expected error or skip"),
        ({"size_edges": (1.0, 0.5)}, r"data\.size_edges=.*strictly increasing"),
    ],
)
def test_config_errors_direct(overrides, match, tmp_path):
    src = write_leaderboard(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(cli.UsageError, match=match):
        prepare.prepare(data_cfg(src, **overrides), out, verbose=False)
    assert_no_output(out)


@pytest.mark.parametrize(
    "flag, match",
    [
        ("--config.data.split.dataset_test=1.5", r"data\.split\.dataset_test=1\.5: must be inside"),
        ("--config.data.split.completion_test=-0.1", r"completion_test=-0\.1: must be inside"),
        ("--config.data.split.dataset_val=0.9", r"dataset_val \+ dataset_test .* must be < 1"),
    ],
)
def test_config_errors_cli(flag, match, tmp_path):
    src = write_leaderboard(tmp_path / "src")
    out = tmp_path / "out"
    p = run_cli(src, out, flag)
    assert p.returncode != 0
    assert re.search(match, p.stderr), p.stderr
    assert "Traceback" not in p.stderr
    assert_no_output(out)


def test_float32_maximum_itself_is_accepted():
    """Found by tests/mutation/run.py: the range check is ``|x| > float32 max``; the maximum
    itself is stored exactly and accepted, empty numeric fields are NaN where allowed."""
    big = repr(float(np.finfo(np.float32).max))
    df = pd.DataFrame({"params": [big, "-" + big, "", "7"]})
    report = {}
    got = ingest._parse_float(df, "params", allow_empty=True, bad_rows="error", report=report)
    assert got.dtype == np.float64 and report == {}
    np.testing.assert_array_equal(got[[0, 1, 3]], [float(big), -float(big), 7.0])
    assert np.isnan(got[2])
    assert np.isfinite(got[:2].astype(np.float32)).all()


def test_whole_number_columns_parse_as_float64():
    """Kills data.ingest.x__parse_float__mutmut_6 (``to_numpy(None)``): a column of whole
    numbers only (``params`` of 1, 7 and 70 billion) would come back int64. Parsed values are
    float64 whatever the column holds."""
    for col in (["1", "7", "70"], ["-3", "0"]):
        got = ingest._parse_float(pd.DataFrame({"params": col}), "params", allow_empty=True,
                                  bad_rows="error", report={})  # fmt: skip
        assert got.dtype == np.float64, col
        np.testing.assert_array_equal(got, [float(x) for x in col])


def test_nonexistent_source(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"no such shipped corpus or directory") as info:
        prepare.prepare(data_cfg(tmp_path / "nope"), out, verbose=False)
    assert info.value.field == "source"
    assert_no_output(out)
    p = run_cli(tmp_path / "nope", out)
    assert p.returncode == 2 and "nope" in p.stderr and "no such" in p.stderr
    assert_no_output(out)


def test_source_without_corpus_files(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(CorpusError, match=r"neither records\.csv\[\.gz\].*nor data\.csv"):
        prepare.prepare(data_cfg(tmp_path / "src"), tmp_path / "out", verbose=False)
    assert_no_output(tmp_path / "out")


def test_bad_direction_override_value(tmp_path):
    src = write_leaderboard(tmp_path / "src")
    with pytest.raises(cli.UsageError, match=r"direction_overrides\['top1'\] = 0: must be \+1"):
        prepare.prepare(
            data_cfg(src, direction_overrides={"top1": 0}), tmp_path / "o", verbose=False
        )
    assert_no_output(tmp_path / "o")


def test_out_that_is_not_a_corpus_is_never_replaced(tmp_path):
    src = write_leaderboard(tmp_path / "src")
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(CorpusError, match=r"not a compiled corpus .* refusing to replace"):
        prepare.prepare(data_cfg(src), out, verbose=False)
    assert (out / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".precious.")]


def test_bad_rows_skip_drops_and_counts(tmp_path):
    rows = _set(_set(base_records(), 3, "value", "abc"), 8, "value", "nan")
    src = write_leaderboard(tmp_path / "src", records=rows)
    c = prepare.prepare(data_cfg(src, bad_rows="skip"), tmp_path / "out", verbose=False)
    r = c.manifest["report"]
    assert r["rejected"] == {"bad value": 2}
    assert r["records_read"] == 16 and r["records"] == 16
    assert "rejected rows: {'bad value': 2}" in prepare.format_summary(c)


def test_blank_lines_skipped_and_rows_counted_without_them(tmp_path):
    src = write_leaderboard(tmp_path / "src", records=_set(base_records(), 5, "value", "x"))
    lines = (src / "records.csv").read_text().splitlines()
    lines.insert(2, "")  # a blank line after data row 1
    (src / "records.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as info:
        prepare.prepare(data_cfg(src), tmp_path / "out", verbose=False)
    assert info.value.row == 5
    assert "row 5 (line 7), field 'value'" in str(info.value)


# --- direction overrides ---------------------------------------------------------------------
def _zorbly_fixture(d: Path, metric: str) -> Path:
    copy_fixture(d)
    (d / "data.csv").write_text((d / "data.csv").read_text().replace(",F1,", f",{metric},"))
    return d


def test_direction_override_on_the_command_line(tmp_path):
    """Unknown direction fails without an override and works with --config.data.direction_overrides
    (ml_collections parses a dict literal); the override lands in the manifest."""
    src = _zorbly_fixture(tmp_path / "src", "zorbly")
    out = tmp_path / "out"
    p = run_cli(src, out, '--config.data.direction_overrides={"zorbly": -1}')
    assert p.returncode == 0, p.stderr
    c = corpus.load_corpus(out)
    assert c.manifest["data_config"]["direction_overrides"] == {"zorbly": -1}
    g = c.vocab["metrics"].index("zorbly")
    grp = int(np.flatnonzero(np.asarray(c["group_metric"]) == g)[0])
    sl = slice(int(c["group_offsets"][grp]), int(c["group_offsets"][grp + 1]))
    np.testing.assert_allclose(c["rec_value"][sl], -c["rec_raw_value"][sl])


def test_direction_override_for_dotted_metric_names(tmp_path):
    """A ConfigDict key cannot hold a dot, so prepare also takes --direction_overrides (JSON)."""
    src = _zorbly_fixture(tmp_path / "src", "zorbly@0.5")
    out = tmp_path / "out"
    p = run_cli(src, out, '--config.data.direction_overrides={"zorbly@0.5": 1}')
    assert p.returncode != 0 and "dots" in p.stderr  # ml_collections refuses the key
    assert_no_output(out)
    p = run_cli(src, out, '--direction_overrides={"zorbly@0.5": 1}')
    assert p.returncode == 0, p.stderr
    c = corpus.load_corpus(out)
    assert "zorbly@0.5" in c.vocab["metrics"]
    assert c.manifest["data_config"]["direction_overrides"] == {"zorbly@0.5": 1}
    assert prepare.parse_overrides('{"zorbly@0.5": 1}') == {"zorbly@0.5": 1}
    with pytest.raises(cli.UsageError, match="invalid JSON"):
        prepare.parse_overrides("{zorbly: 1}")


def test_prepare_can_be_imported_by_another_command():
    """Commands define flags only on the FlagValues of a call: importing prepare (train.py does,
    to build a missing corpus) after --config is defined globally raises no DuplicateFlagError."""
    code = (
        "from ml_collections import config_flags; config_flags.DEFINE_config_file('config'); "
        "import modellens_jax.prepare as p; assert callable(p.prepare)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_override_beats_the_higher_is_better_column_and_empty_column_is_inferred(tmp_path):
    rows = base_records()
    for r in range(13, 19):  # SST-2 accuracy: direction left empty -> inferred from the name
        _set(rows, r, "higher_is_better", "")
    src = write_leaderboard(tmp_path / "src", records=rows)
    raw = ingest.read_corpus(str(src), report={}, direction_overrides={"top1": -1})
    d = raw.records.groupby("metric")["direction"].unique().to_dict()
    assert list(d["top1"]) == [-1] and list(d["top1 err"]) == [-1] and list(d["accuracy"]) == [1]


# --- the allowed case: a model absent from models.csv ------------------------------------------
def test_model_absent_from_models_csv_is_accepted_and_reported(tmp_path):
    models = [m for m in base_models() if m[0] != "org/net-c"]
    src = write_leaderboard(tmp_path / "src", models=models)
    c = prepare.prepare(data_cfg(src), tmp_path / "out", verbose=False)
    r = c.manifest["report"]
    assert r["models_without_metadata"] == 1
    assert any("org/net-c" in w and "absent from the model metadata" in w for w in r["warnings"])
    i = c.model_names.index("org/net-c")
    assert c.vocab["families"][c["model_family"][i]] == schema.derive_family("org/net-c") == "net"
    assert c["model_size_bucket"][i] == 0 and np.isnan(c["model_params"][i])
    # no release date in models.csv: the earliest record date stands in
    assert c["model_release_day"][i] == (
        np.datetime64("2023-01-03") - np.datetime64("1970-01-01")
    ).astype(int)
    summary = prepare.format_summary(c)
    assert "models without metadata: 1" in summary and "warning: 1 models" in summary


def test_no_models_csv_at_all(tmp_path):
    src = write_leaderboard(tmp_path / "src", models=False, datasets=False)
    c = prepare.prepare(data_cfg(src), tmp_path / "out", verbose=False)
    r = c.manifest["report"]
    assert r["models_without_metadata"] == len(MODELS)
    assert any("no models.csv" in w for w in r["warnings"])
    assert (np.asarray(c["model_size_bucket"]) == 0).all()
    assert c.vocab["modalities"] == ["[UNK]", "unknown"]


# --- the public ModelLens format -----------------------------------------------------------------
def test_modellens_fixture_end_to_end(tmp_path):
    c = prepare.prepare(data_cfg(FIXTURE), tmp_path / "out", verbose=False)
    r = c.manifest["report"]
    data = pd.read_csv(FIXTURE / "data.csv")
    assert r["records_read"] == len(data) == 38
    assert r["duplicates_merged"] == 1  # gpt2 on WikiText-103 twice
    assert r["groups_too_small"] == 1 and r["records_in_small_groups"] == 1  # ImageNet-1k
    assert r["groups"] == 4 and r["records"] == 36
    assert r["models_without_metadata"] == 1  # my-org/CustomNet-v2
    metrics = c.vocab["metrics"]
    group_metric = np.asarray(c["group_metric"])
    off = np.asarray(c["group_offsets"])
    value, raw, z = (np.asarray(c[k], np.float64) for k in ("rec_value", "rec_raw_value", "rec_z"))
    split = np.asarray(c["rec_split"])
    for g in range(c.num_groups):
        sl = slice(off[g], off[g + 1])
        metric = metrics[group_metric[g]]
        sign = -1 if metric in ("perplexity", "WER") else 1
        np.testing.assert_allclose(value[sl], sign * raw[sl], rtol=1e-6)  # oriented
        assert np.all(np.diff(value[sl]) <= 0)  # best first
        train = split[sl] == splits.TRAIN
        assert train.sum() >= 2
        assert abs(z[sl][train].mean()) < 1e-5
        assert abs(z[sl][train].std() - 1) < 1e-5
    # the duplicate is merged as the mean
    i = c.model_names.index("gpt2")
    g_wiki = metrics.index("perplexity")
    g = int(np.flatnonzero(group_metric == g_wiki)[0])
    rows = np.flatnonzero(np.asarray(c["rec_model"])[off[g] : off[g + 1]] == i) + off[g]
    assert len(rows) == 1 and raw[rows[0]] == pytest.approx(37.4)
    # families: model_profile first (lower-cased; "unknown" falls through), then model2family,
    # then derived from the name
    fam = {n: c.vocab["families"][f] for n, f in zip(c.model_names, c["model_family"])}
    m2f = json.loads((FIXTURE / "model2family.json").read_text())
    assert fam["bert-base-uncased"] == "bert"
    assert fam["speechbrain/asr-crdnn"] == "crdnn"
    assert fam["deepspeech2"] == m2f["deepspeech2"] == "deepspeech"
    assert fam["my-org/CustomNet-v2"] == "customnet"
    assert all(fam[m] == f for m, f in m2f.items() if m in fam)
    # sizes: billions bucketed on the paper's edges; "unknown", 0 and absent -> bucket 0
    size = {n: int(b) for n, b in zip(c.model_names, c["model_size_bucket"])}
    assert size["meta-llama/Llama-2-7b-hf"] == 17  # 7 <= 7B < 14
    assert size["gpt2"] == 7  # 0.1 <= 0.124 < 0.15
    assert size["EleutherAI/pythia-1b"] == 15  # 1 <= 1.0 < 3
    assert size["timm/convnext_tiny"] == 0  # "unknown"
    assert size["distilbert-base-uncased"] == 0  # 0
    assert size["deepspeech2"] == 0 and size["my-org/CustomNet-v2"] == 0  # no profile
    # the source column and the texts
    assert c.vocab["sources"] == ["[UNK]", "modellens"]
    assert c.texts["datasets"][c.vocab["datasets"].index("WikiText-103")].startswith(
        "WikiText-103 (Language Modeling). WikiText-103: 103M tokens"
    )


def test_modellens_profile_sizes_as_upstream(tmp_path):
    """Numeric strings are numbers, "Unknown"/null/0 are unknown (upstream's reading)."""
    src = copy_fixture(tmp_path / "src")
    prof = json.loads((src / "model_profile.json").read_text())
    prof["gpt2"]["size"] = "0.124"
    prof["roberta-large"]["size"] = "Unknown"
    prof["bert-base-uncased"]["size"] = None
    (src / "model_profile.json").write_text(json.dumps(prof))
    raw = ingest.read_corpus(str(src), report={})
    p = raw.models.set_index("model")["params"]
    assert p["gpt2"] == pytest.approx(0.124)
    assert math.isnan(p["roberta-large"]) and math.isnan(p["bert-base-uncased"])
    assert math.isnan(p["distilbert-base-uncased"])  # size 0


# --- cleaning ------------------------------------------------------------------------------------
def test_cleaning_duplicates_flip_zscores_small_groups(tmp_path):
    rows = base_records()
    rows.append(list(rows[0]))  # exact duplicate of row 1 (net-a top1 70) ...
    _set(rows, len(rows), "value", "74")  # ... with another value: merged as the mean 72
    rows.append(list(rows[13]))  # and one more, same value
    # a constant group: every model scores 0.1 -> z = 0 (no division by rounding noise)
    rows += [["QA", "SQuAD", m, "EM", "0.1", "", "1", "src", ""] for m in MODELS[:3]]
    # a one-model group, kept out
    rows.append(["QA", "TriviaQA", MODELS[0], "EM", "60", "", "1", "src", ""])
    src = write_leaderboard(tmp_path / "src", records=rows)
    compiled = corpus.build(data_cfg(src))
    r, a, v = compiled.report, compiled.arrays, compiled.vocab
    assert r["records_read"] == 24
    assert r["duplicates_merged"] == 2
    assert r["groups_too_small"] == 1 and r["records_in_small_groups"] == 1
    assert r["groups"] == 4 and r["records"] == 21
    assert r["lower_is_better_flipped"] == 6
    off, value, raw = a["group_offsets"], a["rec_value"], a["rec_raw_value"]
    metric_of = [v["metrics"][m] for m in a["group_metric"]]
    g_top1 = metric_of.index("top1")
    sl = slice(off[g_top1], off[g_top1 + 1])
    first = a["rec_model"][sl] == v["models"].index("org/net-a")
    assert raw[sl][first] == pytest.approx(72.0)
    g_err = metric_of.index("top1 err")
    sl = slice(off[g_err], off[g_err + 1])
    np.testing.assert_allclose(value[sl], -raw[sl])
    assert v["models"][a["rec_model"][sl][0]] == "org/net-f"  # lowest error ranks first
    g_const = metric_of.index("EM")
    assert np.all(a["rec_z"][off[g_const] : off[g_const + 1]] == 0)
    # z inside each (group, partition): mean 0, std 1 where >= 2 distinct values
    part = a["rec_split"].astype(int) * 3 + a["rec_setting"]
    for g in range(len(off) - 1):
        for p in np.unique(part[off[g] : off[g + 1]]):
            idx = np.flatnonzero(part[off[g] : off[g + 1]] == p) + off[g]
            zz = a["rec_z"][idx].astype(np.float64)
            if len(np.unique(value[idx])) >= 2:
                assert abs(zz.mean()) < 1e-5 and abs(zz.std() - 1) < 1e-5
            else:
                assert np.all(zz == 0)


def test_group_of_exactly_min_group_models_is_kept(tmp_path):
    """Kills the mutant ``size <= min_group_models`` (corpus.py small-group filter): a group
    with exactly ``min_group_models`` models is kept, one with fewer is dropped."""
    rows = base_records()
    rows += [
        ["QA", "SQuAD", m, "EM", f"{50 + i}", "", "1", "src", ""] for i, m in enumerate(MODELS[:2])
    ]
    rows.append(["QA", "TriviaQA", MODELS[0], "EM", "60", "", "1", "src", ""])
    src = write_leaderboard(tmp_path / "src", records=rows)
    compiled = corpus.build(data_cfg(src))  # configs/default.py: min_group_models = 2
    r, a, v = compiled.report, compiled.arrays, compiled.vocab
    assert r["groups_too_small"] == 1 and r["records_in_small_groups"] == 1
    assert r["groups"] == 4 and r["records"] == 20
    sizes = {
        (v["datasets"][a["group_dataset"][g]], v["metrics"][a["group_metric"][g]]): int(
            a["group_offsets"][g + 1] - a["group_offsets"][g]
        )
        for g in range(len(a["group_offsets"]) - 1)
    }
    assert sizes[("SQuAD", "EM")] == 2
    assert ("TriviaQA", "EM") not in sizes
    # and the threshold is the configured one: with 3 the 2-model group goes too
    r3 = corpus.build(data_cfg(src, min_group_models=3)).report
    assert r3["groups_too_small"] == 2 and r3["groups"] == 3 and r3["records"] == 18


# --- metric directions ---------------------------------------------------------------------------
LOWER = ["loss", "val_loss", "error", "Top-1 Error", "WER", "WER (clean)", "CER", "perplexity",
         "PPL", "FID", "FID50k", "rank", "mean rank", "MAE", "RMSE", "EPE", "bits per dim",
         "latency (ms)", "Fl-all"]  # fmt: skip
HIGHER = ["accuracy", "top1", "top-5 acc", "F1", "macro-F1", "BLEU", "BLEU-4", "mAP", "box AP",
          "NDCG", "NDCG@10", "per-class accuracy", "ROUGE-L", "pass@1", "win_rate",
          "discrete_win_rate", "Spearman", "mIoU", "PSNR"]  # fmt: skip


@pytest.mark.parametrize("metric", LOWER)
def test_lower_is_better_examples(metric):
    assert schema.infer_direction(metric) == -1


@pytest.mark.parametrize("metric", HIGHER)
def test_higher_is_better_examples(metric):
    assert schema.infer_direction(metric) == 1


def test_direction_unknown_and_overrides():
    assert schema.infer_direction("zorbly") is None
    assert schema.infer_direction("bitmap") is None  # "map" only as a whole word
    assert schema.infer_direction("zorbly", {"zorbly": -1}) == -1
    assert schema.infer_direction("accuracy", {"accuracy": -1}) == -1  # override wins


def test_direction_table_agrees_with_the_shipped_corpus():
    rec = pd.read_csv(SHIPPED / "records.csv.gz", usecols=["metric", "higher_is_better"], dtype=str)
    per_metric = rec.groupby("metric")["higher_is_better"].agg(lambda s: sorted(set(s)))
    inferred = 0
    for metric, hib in per_metric.items():
        d = schema.infer_direction(metric)
        if d is None:
            continue
        inferred += 1
        assert hib == ["1" if d > 0 else "0"], (metric, hib, d)
    assert inferred >= 0.9 * len(per_metric)


# --- name tokens, hashing, size buckets, families -----------------------------------------------
@pytest.mark.parametrize(
    "name, tokens",
    [
        ("meta-llama/Llama-2-7b-hf",
         ["meta-llama/llama-2-7b-hf", "llama-2-7b-hf", "meta", "llama", "2", "7b", "hf"]),
        ("resnet50.a1_in1k", ["resnet50.a1_in1k", "resnet50.a1", "in1k"]),  # "." is no separator
        (" BERT base ", ["bert base", "bert", "base"]),
        ("org/sub/Model_X--v2",
         ["org/sub/model_x--v2", "model_x--v2", "org", "sub", "model", "x", "v2"]),
        ("gpt2", ["gpt2"]),
        ("", []),
    ],
)  # fmt: skip
def test_name_tokens_upstream_rule(name, tokens):
    assert schema.name_tokens(name) == tokens


def test_token_buckets_are_md5_mod_buckets():
    for tok, pinned in [("meta-llama/llama-2-7b-hf", 5500), ("llama", 4429), ("7b", 6852),
                        ("resnet50.a1_in1k", 1185), ("bert", 1008)]:  # fmt: skip
        expected = int(hashlib.md5(tok.encode("utf-8")).hexdigest(), 16) % 10000
        assert schema.token_bucket(tok, 10000) == expected == pinned
    ids, mask = schema.name_token_array(["meta-llama/Llama-2-7b-hf", "", "gpt2"], 10000, 4)
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (3, 4)
    assert ids[0].tolist() == [5500, 1671, 8848, 4429] and mask[0].all()  # truncated to 4
    assert not mask[1].any() and (ids[1] == 0).all()  # empty name -> no tokens
    assert mask[2].tolist() == [True, False, False, False]


def test_size_buckets_on_the_paper_edges():
    edges = tuple(default_config().data.size_edges)
    assert edges[0] == 0.001 and edges[-1] == 1000 and len(edges) == 21
    params = [np.nan, 0.0, -1.0, np.inf, 0.0005, 0.001, 0.0029, 0.003, 0.124, 0.5, 1.0, 7.0,
              13.9, 14.0, 70.0, 999.0, 1000.0, 5000.0]  # fmt: skip
    expected = [0, 0, 0, 0, 1, 2, 2, 3, 7, 12, 15, 17, 17, 18, 20, 21, 22, 22]
    assert schema.size_bucket(np.array(params), edges).tolist() == expected


def test_log_size_is_clipped_log10_and_zero_when_unknown():
    params = np.array([np.nan, 0.0, -1.0, np.inf, 1e-6, 0.001, 1.0, 7.0, 1e5])
    expected = [0, 0, 0, 0, -4, -3, 0, np.log10(7.0), 4]
    np.testing.assert_allclose(schema.log_size(params), expected, rtol=1e-6)
    assert schema.log_size(params).dtype == np.float32


@pytest.mark.parametrize(
    "name, family",
    [("meta-llama/Llama-2-7b-hf", "llama"), ("resnet50.a1_in1k", "resnet"),
     ("eva02_large_patch14_448", "eva"), ("org/7b-xl", "xl"), ("123", "unknown")],
)  # fmt: skip
def test_derive_family(name, family):
    assert schema.derive_family(name) == family


# --- the shipped corpus: prepare twice, summary, fingerprint -------------------------------------
def test_shipped_corpus_prepare_twice_same_fingerprint(tmp_path):
    out = tmp_path / "corpus"
    p = run_cli("leaderboard-v1", out)  # 1st: the real command into a fresh directory
    assert p.returncode == 0, p.stderr
    first = corpus.load_corpus(out)
    r = first.manifest["report"]
    assert r["records_read"] == 134_886  # every row of records.csv.gz read, none rejected
    assert not r.get("rejected")
    for text in (
        f"records {r['records']:,} (read 134,886",
        f"models {r['models']:,}  datasets {r['datasets']:,}  groups {r['groups']:,}",
        f"groups kept out (< min models): {r['groups_too_small']}",
        "rejected rows: none",
        "size buckets {'0': ",
        f"fingerprint {first.fingerprint[:16]}",
    ):
        assert text in p.stdout, (text, p.stdout)
    assert r["records"] > 100_000 and r["models"] > 5_000 and r["groups"] > 1_500
    assert r["lower_is_better_flipped"] > 0
    # 2nd: in-process, replacing the first corpus atomically: same fingerprint
    second = prepare.prepare(data_cfg("leaderboard-v1"), out, verbose=False)
    assert second.fingerprint == first.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temp or old dirs
    # the compiled corpus is self-consistent
    off = np.asarray(second["group_offsets"])
    assert off[0] == 0 and off[-1] == r["records"] and np.all(np.diff(off) >= 2)
    assert np.all(
        np.asarray(second["rec_group"]) == np.repeat(np.arange(len(off) - 1), np.diff(off))
    )
    assert np.isfinite(np.asarray(second["rec_z"])).all()


# --- atomic writes -------------------------------------------------------------------------------
def _failing_np_save(monkeypatch, after: int):
    real = np.save
    calls = {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus.np, "save", save)


def test_crash_while_writing_keeps_the_previous_corpus(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    before = prepare.prepare(data_cfg(FIXTURE), out, verbose=False)
    src = write_leaderboard(tmp_path / "src")
    _failing_np_save(monkeypatch, after=3)
    with pytest.raises(OSError, match="simulated"):
        prepare.prepare(data_cfg(src), out, verbose=False)
    monkeypatch.undo()
    again = corpus.load_corpus(out)
    assert again.fingerprint == before.fingerprint
    assert again.model_names == before.model_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "src"]


def test_crash_while_writing_a_new_corpus_leaves_nothing(tmp_path, monkeypatch):
    src = write_leaderboard(tmp_path / "src")
    out = tmp_path / "new" / "corpus"
    _failing_np_save(monkeypatch, after=2)
    with pytest.raises(OSError, match="simulated"):
        prepare.prepare(data_cfg(src), out, verbose=False)
    assert_no_output(out)


def test_failed_final_rename_restores_the_previous_corpus(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    before = prepare.prepare(data_cfg(FIXTURE), out, verbose=False)
    real = corpus.os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".corpus.tmp-"):
            raise OSError("rename failed (simulated)")
        return real(src, dst)

    monkeypatch.setattr(corpus.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        prepare.prepare(data_cfg(write_leaderboard(tmp_path / "src")), out, verbose=False)
    monkeypatch.undo()
    assert corpus.load_corpus(out).fingerprint == before.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "src"]


def test_written_corpus_round_trips(tmp_path):
    compiled = corpus.build(data_cfg(FIXTURE))
    fp = corpus.write_corpus(compiled, tmp_path / "c", config={"x": 1})
    c = corpus.load_corpus(tmp_path / "c")
    assert c.fingerprint == fp == corpus.fingerprint(c.arrays, c.vocab, c.texts)
    assert set(c.arrays) == set(compiled.arrays)
    for k, v in compiled.arrays.items():
        assert c[k].dtype == v.dtype and np.array_equal(c[k], v, equal_nan=v.dtype.kind == "f"), k
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755
