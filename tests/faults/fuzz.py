"""A fuzzer of malformed inputs: corpora for ``prepare``, serving CSVs for ``recommend`` /
``score`` and training configs. Every case is malformed by construction (a random row, field or
value of one of the kinds below); each must be refused with one line naming the file / row /
field (or the config key), and nothing written.

``cases(n, seed)`` yields ``(kind, build)`` where ``build(tmp_dir)`` makes the input and returns
``check()`` -> the error message (raising AssertionError if the case was not refused cleanly).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path

RECORD_HEADER = ["task", "dataset", "model", "metric", "value", "dataset_desp",
                 "higher_is_better", "source", "date"]  # fmt: skip
MODEL_HEADER = ["model", "family", "params", "model_desp", "release_date", "source"]
DATASET_HEADER = ["dataset", "task", "dataset_desp", "modality", "source"]
GROUPS = [("Image Classification", "ImageNet", "top1", "1"), ("QA", "SQuAD", "F1", "1"),
          ("LM", "WikiText", "perplexity", "0")]  # fmt: skip
MODELS = [f"org/net-{c}" for c in "abcdef"]


def _records() -> list[list[str]]:
    rows = []
    for gi, (task, ds, metric, hib) in enumerate(GROUPS):
        for mi, m in enumerate(MODELS):
            v = 70.0 + 3 * mi + gi if hib == "1" else 30.0 - 3 * mi
            rows.append([task, ds, m, metric, f"{v:g}", f"{ds} test set", hib, "src",
                         f"2023-01-0{mi + 1}"])  # fmt: skip
    return rows


def _models() -> list[list[str]]:
    return [[m, "net", f"{0.1 * (i + 1):g}", f"model {m}", "2022-05-01", "src"]
            for i, m in enumerate(MODELS)]  # fmt: skip


def _datasets() -> list[list[str]]:
    return [[ds, task, f"{ds} dataset", "text", "src"] for task, ds, _, _ in GROUPS]


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


# --- corpus mutations: (file stem, mutate(rng, header, rows) -> text or bytes) -------------------
def _row_text(header, rows, i, line: str) -> str:
    lines = _csv_text(header, rows).splitlines()
    lines[i + 1] = line
    return "\n".join(lines) + "\n"


def m_unbalanced_quote(rng, header, rows):
    i = rng.randrange(len(rows))
    line = _csv_text(header, [rows[i]]).splitlines()[1]
    return _row_text(header, rows, i, line.replace(",", ',"', 1))


def m_extra_field(rng, header, rows):
    i = rng.randrange(len(rows))
    rows = [list(r) for r in rows]
    rows[i].append("surplus")
    return _csv_text(header, rows)


def m_missing_field(rng, header, rows):
    i = rng.randrange(len(rows))
    rows = [list(r) for r in rows]
    rows[i] = rows[i][:-1]
    return _csv_text(header, rows)


def m_missing_column(rng, header, rows, required=("model",)):
    j = header.index(rng.choice(list(required)))
    return _csv_text([h for k, h in enumerate(header) if k != j],
                     [[x for k, x in enumerate(r) if k != j] for r in rows])  # fmt: skip


def m_duplicate_header(rng, header, rows):
    j = rng.randrange(1, len(header))
    return _csv_text([*header[:j], header[0], *header[j + 1 :]], rows)


def m_not_utf8(rng, header, rows):
    i = rng.randrange(len(rows))
    text = _csv_text(header, rows).encode()
    lines = text.split(b"\n")
    lines[i + 1] = lines[i + 1].replace(b"src", b"\xff\xfesrc", 1)
    return b"\n".join(lines)


def m_empty(rng, header, rows):
    return ""


def m_header_only(rng, header, rows):
    return _csv_text(header, [])


def _set_field(rng, header, rows, field, values):
    i = rng.randrange(len(rows))
    rows = [list(r) for r in rows]
    rows[i][header.index(field)] = rng.choice(values)
    return _csv_text(header, rows)


def m_bad_value(rng, header, rows):
    return _set_field(rng, header, rows, "value", ["abc", "nan", "inf", "-inf", "1e308", "-1e39",
                                                   "", "1,5", "0x1g"])  # fmt: skip


def m_bad_direction(rng, header, rows):
    return _set_field(rng, header, rows, "higher_is_better", ["2", "yes", "-1", "true"])


def m_empty_model(rng, header, rows):
    return _set_field(rng, header, rows, "model", ["", "   "])


def m_bad_params(rng, header, rows):
    return _set_field(rng, header, rows, "params", ["-5", "inf", "nan", "big", "1e308"])


def m_bad_date(rng, header, rows):
    return _set_field(rng, header, rows, "date", ["2023-13-45", "yesterday", "01/02/2023x"])


def m_conflicting_duplicate(rng, header, rows):
    i = rng.randrange(len(rows))
    rows = [list(r) for r in rows]
    dup = list(rows[i])
    dup[header.index("value")] = "-5000"
    rows.append(dup)
    return _csv_text(header, rows)


CORPUS_MUTATIONS: list[tuple[str, Callable]] = [
    ("records", m_unbalanced_quote), ("records", m_extra_field), ("records", m_missing_field),
    ("records", lambda r, h, x: m_missing_column(r, h, x, ("task", "dataset", "model", "value"))),
    ("records", m_duplicate_header), ("records", m_not_utf8), ("records", m_empty),
    ("records", m_header_only), ("records", m_bad_value), ("records", m_bad_direction),
    ("records", m_empty_model), ("records", m_bad_date), ("records", m_conflicting_duplicate),
    ("models", m_unbalanced_quote), ("models", m_extra_field), ("models", m_bad_params),
    ("models", m_duplicate_header),
]  # fmt: skip


def corpus_case(rng: random.Random, k: int):
    stem, mutate = CORPUS_MUTATIONS[k % len(CORPUS_MUTATIONS)]
    name = getattr(mutate, "__name__", "mutation").removeprefix("m_")
    if name == "<lambda>":
        name = "missing_column"

    def build(tmp: Path):
        src = tmp / "src"
        src.mkdir(parents=True)
        tables = {"records": (RECORD_HEADER, _records()), "models": (MODEL_HEADER, _models()),
                  "datasets": (DATASET_HEADER, _datasets())}  # fmt: skip
        for s, (h, rows) in tables.items():
            body = mutate(rng, h, rows) if s == stem else _csv_text(h, rows)
            _write(src / f"{s}.csv", body)
        out = tmp / "out"

        def check() -> str:
            from modellens_jax import prepare
            from modellens_jax.data.ingest import CorpusError
            from tests.faults.common import config_module

            cfg = config_module().get_config("tiny").data
            cfg.source = str(src)
            try:
                prepare.prepare(cfg, out, verbose=False)
            except CorpusError as e:
                msg = str(e)
                assert "\n" not in msg, msg
                assert f"{stem}.csv" in msg or str(src) in msg, msg
                assert not out.exists(), "output written"
                assert not [p for p in tmp.iterdir() if p.name.startswith(".out")], "temp left"
                return msg
            raise AssertionError("accepted")

        return check

    return f"corpus/{stem}/{name}", build


def corpus_both_gz_case(rng, k):
    def build(tmp: Path):
        src = tmp / "src"
        src.mkdir(parents=True)
        _write(src / "records.csv", _csv_text(RECORD_HEADER, _records()))
        _write(src / "records.csv.gz", _csv_text(RECORD_HEADER, _records()[:9]))
        out = tmp / "out"

        def check():
            from modellens_jax import prepare
            from modellens_jax.data.ingest import CorpusError
            from tests.faults.common import config_module

            cfg = config_module().get_config("tiny").data
            cfg.source = str(src)
            try:
                prepare.prepare(cfg, out, verbose=False)
            except CorpusError as e:
                assert "both records.csv and records.csv.gz" in str(e) and not out.exists()
                return str(e)
            raise AssertionError("accepted")

        return check

    return "corpus/records/both_csv_and_gz", build


# --- serving CSVs ---------------------------------------------------------------------------
SERVING_MUTATIONS = [m_unbalanced_quote, m_extra_field, m_missing_field, m_duplicate_header,
                     m_not_utf8, m_empty, m_header_only, m_bad_params, m_missing_column]  # fmt: skip


def serving_case(rng: random.Random, k: int):
    mutate = SERVING_MUTATIONS[k % len(SERVING_MUTATIONS)]
    gz = rng.random() < 0.3

    def build(tmp: Path):
        f = tmp / ("candidates.csv.gz" if gz else "candidates.csv")
        _write(f, mutate(rng, MODEL_HEADER, _models()))

        def check():
            from modellens_jax.serving import recommender

            try:
                rows = recommender.read_csv(f, ["model"], nonempty=["model"])
                for where, row in rows:
                    recommender._params(where, row.get("params", ""))
            except recommender.InputError as e:
                msg = str(e)
                assert "\n" not in msg and f.name in msg, msg
                return msg
            raise AssertionError("accepted")

        return check

    return f"serving/candidates{'.gz' if gz else ''}/{mutate.__name__.removeprefix('m_')}", build


QUERY_CASES = [dict(top_k=-3), dict(top_k=-1), dict(min_params=100.0, max_params=1.0),
               dict(min_params=-1.0), dict(max_params=float("inf")),
               dict(max_params=float("nan"))]  # fmt: skip


def query_case(rng, k):
    kw = QUERY_CASES[k % len(QUERY_CASES)]

    def build(tmp):
        def check():
            from modellens_jax.serving import recommender

            args = {"top_k": 10, "min_params": None, "max_params": None, **kw}
            try:
                recommender.check_query(**args)
            except recommender.InputError as e:
                assert "\n" not in str(e)
                return str(e)
            raise AssertionError("accepted")

        return check

    return f"serving/query/{','.join(f'{a}={b}' for a, b in kw.items())}", build


# --- configs ----------------------------------------------------------------------------------
def config_case(rng, k):
    from tests.faults.test_config import BAD

    key, value, why = BAD[k % len(BAD)]

    def build(tmp):
        def check():
            import re

            from modellens_jax import config_check
            from tests.faults.common import tiny_config
            from tests.faults.test_config import _set

            c = tiny_config()
            _set(c, key, value)
            try:
                config_check.validate(c, device_count=8)
            except config_check.ConfigError as e:
                assert re.search(rf"config {re.escape(key)}=.*{why}", str(e)), str(e)
                return str(e)
            raise AssertionError("accepted")

        return check

    return f"config/{key}={value!r}", build


def cases(n: int, seed: int = 0) -> Iterator[tuple[str, Callable]]:
    """``n`` malformed inputs cycling over the families (corpora, serving CSVs, queries,
    configs), each with its own random row / field / value."""
    rng = random.Random(seed)
    families = [corpus_case] * 3 + [serving_case] * 2 + [query_case, config_case]
    counters = dict.fromkeys(families, 0)
    yield corpus_both_gz_case(rng, 0)
    for i in range(n - 1):
        f = families[i % len(families)]
        yield f(rng, counters[f])
        counters[f] += 1
