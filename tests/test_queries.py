"""The README's query table promise: for a query on a known task, every model the default pool
ranks in the top 10 has records on that task (checked against the training corpus itself)."""

from __future__ import annotations

import numpy as np

from modellens_jax.serving import recommender


def test_known_task_top10_all_have_records_on_the_task(bundle, trained) -> None:
    rec = recommender.Recommender.load(bundle)
    c = trained["corpus"]
    tasks, metrics = c.vocab["tasks"], c.vocab["metrics"]
    rec_group = np.asarray(c["rec_group"])
    rec_task = np.asarray(c["group_task"])[rec_group]
    rec_metric = np.asarray(c["group_metric"])[rec_group]
    names = np.asarray(c.model_names, dtype=object)[np.asarray(c["rec_model"])]
    counts = np.bincount(rec_task, minlength=len(tasks))
    # every task with records, widest first, plus the narrowest ones (pools under 10 models)
    order = [int(t) for t in np.argsort(-counts, kind="stable") if counts[t] and t]
    picked = order[:8] + order[-3:]
    assert len(picked) >= 10
    outsiders = 0
    for t in picked:
        have = set(names[rec_task == t])
        metric = metrics[int(np.bincount(rec_metric[rec_task == t]).argmax())]
        res = rec.rank(dataset_desc="A new benchmark for this task.", task=tasks[t], metric=metric,
                       top_k=10)  # fmt: skip
        assert len(res) == min(10, len(have)), tasks[t]
        assert {r.model for r in res} <= have, (tasks[t], {r.model for r in res} - have)
        assert all(r.pool == f"records on {tasks[t]}" for r in res)
        # not vacuous: ranked over all models, some without records on the task rank in the
        # top 10 (the default pool is what keeps them out)
        wide = rec.rank(dataset_desc="A new benchmark for this task.", task=tasks[t],
                        metric=metric, top_k=10, pool="all")  # fmt: skip
        outsiders += sum(r.model not in have for r in wide)
    assert outsiders > 0
