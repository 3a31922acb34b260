"""Malformed inputs: serving CSVs as strict as ``prepare``; prepare's new refusals; and the
fuzzer (>= 50 malformed corpora, serving CSVs, queries and configs: one line each, nothing
written)."""

from __future__ import annotations

import os
import stat

import pytest

from modellens_jax.serving import recommend, recommender, score
from tests.faults import fuzz


def _w(path, text):
    path.write_text(text)
    return path


def test_unbalanced_quote_is_an_error_not_one_model(tmp_path):
    f = _w(tmp_path / "c.csv", 'model,params\n"foo,7\nbar,3\n')
    with pytest.raises(
        recommender.InputError, match=r"c\.csv row 1 \(line 2\): malformed CSV .*quote"
    ):
        recommender.read_csv(f, ["model"])


def test_extra_fields_refused(tmp_path):
    f = _w(tmp_path / "c.csv", "model,params\nfoo,7,surplus\n")
    with pytest.raises(
        recommender.InputError, match=r"row 1 \(line 2\): malformed CSV: expected 2"
    ):
        recommender.read_csv(f, ["model"])


@pytest.mark.parametrize(
    "v,why", [("-5", "negative"), ("inf", "finite"), ("nan", "finite"), ("1e308", "out of range")]
)
def test_bad_params_refused(v, why):
    with pytest.raises(recommender.InputError, match=f"field 'params'.*{why}"):
        recommender._params("c.csv row 1 (line 2)", v)


@pytest.mark.parametrize("argv,msg", [
    (["--top_k=-3"], "--top_k=-3: must be a whole number >= 0"),
    (["--min_params=100", "--max_params=1"], "no model can match"),
    (["--out=/tmp"], "is a directory"),
])  # fmt: skip
def test_recommend_query_errors_are_one_line(argv, msg, tmp_path, capsys):
    rc = recommend.main([f"--bundle={tmp_path / 'nope'}", "--dataset=x", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err


def test_score_out_directory_and_mode(tmp_path, capsys):
    rc = score.main([f"--bundle={tmp_path}", f"--pairs={tmp_path / 'p.csv'}", f"--out={tmp_path}"])
    assert rc == 2 and "is a directory" in capsys.readouterr().err
    old = os.umask(0o022)
    try:
        out = tmp_path / "s.csv"
        score.write_scores([{"dataset": "d", "task": "t", "metric": "m", "model": "x",
                             "score": 1.0, "prior": 0.0, "residual": 1.0}], out)  # fmt: skip
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.csv")]


def test_long_description_accepted(tmp_path):
    desc = "word " * 42_000  # 210 KB in one field
    f = _w(tmp_path / "c.csv", f'model,model_desp\nfoo,"{desc}"\n')
    rows = recommender.read_csv(f, ["model"])
    assert len(rows) == 1 and len(rows[0][1]["model_desp"]) > 200_000


def test_prepare_accepts_a_210kb_description(tmp_path):
    from modellens_jax import prepare
    from tests.faults.common import config_module

    src = tmp_path / "src"
    src.mkdir()
    models = fuzz._models()
    models[0][3] = "long " * 42_000
    fuzz._write(src / "records.csv", fuzz._csv_text(fuzz.RECORD_HEADER, fuzz._records()))
    fuzz._write(src / "models.csv", fuzz._csv_text(fuzz.MODEL_HEADER, models))
    fuzz._write(src / "datasets.csv", fuzz._csv_text(fuzz.DATASET_HEADER, fuzz._datasets()))
    cfg = config_module().get_config("tiny").data
    cfg.source = str(src)
    c = prepare.prepare(cfg, tmp_path / "out", verbose=False)
    assert len(c.model_names) == len(fuzz.MODELS)


def _prepare(tmp_path, records):
    from modellens_jax import prepare
    from tests.faults.common import config_module

    src = tmp_path / "src"
    src.mkdir()
    fuzz._write(src / "records.csv", fuzz._csv_text(fuzz.RECORD_HEADER, records))
    cfg = config_module().get_config("tiny").data
    cfg.source = str(src)
    return prepare.prepare(cfg, tmp_path / "out", verbose=False)


def test_prepare_refuses_float32_overflow(tmp_path):
    from modellens_jax.data.ingest import CorpusError

    rows = fuzz._records()
    rows[4][4] = "1e308"
    with pytest.raises(CorpusError, match=r"records\.csv row 5 \(line 6\), field 'value': "
                       r"'1e308' is out of range"):  # fmt: skip
        _prepare(tmp_path, rows)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_conflicting_duplicates_but_merges_close_ones(tmp_path):
    from modellens_jax.data.ingest import CorpusError

    rows = fuzz._records()
    rows[0][4] = "90"
    rows.append([*rows[0][:4], "-5000", *rows[0][5:]])
    (tmp_path / "a").mkdir()
    with pytest.raises(CorpusError, match=r"conflicting duplicate records .*90 \(row 1, line 2\)"
                       r", -5000 \(row 19, line 20\)"):  # fmt: skip
        _prepare(tmp_path / "a", rows)
    rows[-1][4] = "92"  # sources that round differently: merged as the mean, as before
    (tmp_path / "b").mkdir()
    c = _prepare(tmp_path / "b", rows)
    assert c.manifest["report"]["duplicates_merged"] == 1


FUZZ_N = int(os.environ.get("MODELLENS_FUZZ_N", "56"))


@pytest.mark.parametrize("case", list(fuzz.cases(FUZZ_N, seed=16)), ids=lambda c: c[0])
def test_fuzz_malformed_input_refused(case, tmp_path):
    _, build = case
    msg = build(tmp_path)()
    assert msg and "\n" not in msg
