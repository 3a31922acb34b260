"""Every command that takes a config validates it first: one line naming the key, exit 2,
nothing written. ``train.steps`` is in the resume hash (it sets the cosine schedule)."""

from __future__ import annotations

import shutil

import pytest

from modellens_jax import checkpointing, config_check, train
from tests.faults import common
from tests.faults.conftest import long_only

# (dotted key, bad value, what the message says): the 26 values of issue 16 and a few more.
BAD = [
    ("input.list_size", 0, "must be > 0"),
    ("input.groups_per_batch", 0, "must be > 0"),
    ("train.checkpoint_every", 0, "must be > 0"),
    ("train.log_every", 0, "must be > 0"),
    ("train.eval_every", 0, "must be > 0"),
    ("train.judge", "foo", "expected one of"),
    ("optim.decay", "linear", "expected one of cosine, constant"),
    ("loss.pl_reduction", "max", "expected one of mean, sum"),
    ("loss.pl_ties", "random", "expected one of"),
    ("loss.bpr_weighting", "rank", "expected one of none, zgap"),
    ("model.compute_dtype", "float8", "expected one of float32, bfloat16"),
    ("model.hidden_dim", 0, "must be > 0"),
    ("train.steps", 0, "must be > 0"),
    ("train.steps", -5, "must be > 0"),
    ("optim.learning_rate", -1.0, "must be >= 0"),
    ("optim.learning_rate", float("nan"), "finite"),
    ("model.dropout", 1.5, r"must be in \[0, 1\)"),
    ("model.dropout", 1.0, r"must be in \[0, 1\)"),
    ("model.model_id_dropout", -0.1, r"must be in \[0, 1\)"),
    ("model.dataset_id_dropout", 2.0, r"must be in \[0, 1\)"),
    ("input.groups_per_batch", 7, "divisible by the mesh data axis"),
    ("input.max_models_per_batch", 13, "divisible by the mesh data axis"),
    ("mesh.data", 0, "must be -1"),
    ("mesh.model", 3, "does not divide"),
    ("mesh.data", 16, "more than the 8 devices"),
    ("train.keep_latest", 0, "must be > 0"),
    ("optim.warmup_steps", -1, "must be >= 0"),
    ("optim.weight_decay", -0.1, "must be >= 0"),
    ("model.init_temperature", 0.0, "must be > 0"),
    ("train.steps", 2.5, "expected an integer"),
    ("input.list_size", True, "expected an integer"),
    ("data.format", "parquet", "expected one of"),
    ("embed.dtype", "int8", "expected one of"),
]


def _set(c, key, value):
    *path, last = key.split(".")
    node = c
    for p in path:
        node = node[p]
    with node.unlocked() if hasattr(node, "unlocked") else _null():
        node._fields[last] = value  # bypass the type lock: the validator sees raw values


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass


@pytest.mark.parametrize("key,value,why", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_refused(key, value, why):
    c = common.tiny_config()
    _set(c, key, value)
    with pytest.raises(config_check.ConfigError, match=rf"config {key}=.*{why}"):
        config_check.validate(c, device_count=8)


def test_defaults_and_presets_pass():
    m = common.config_module()
    for preset in (None, "tiny", "paper", "reference"):
        config_check.validate(m.get_config(preset), device_count=8)


def test_command_refuses_before_anything(tmp_path):
    wd = tmp_path / "never"
    p = common.run_train(wd, "--config.input.list_size=0")
    assert p.returncode == 2, p.stderr[-2000:]
    lines = common.error_lines(p.stderr)
    assert lines == ["error: config input.list_size=0: must be > 0"], lines
    assert not wd.exists()


@long_only
def test_other_steps_on_resume_announced_and_recorded(no_eval, straight, workdir, capsys):
    shutil.copytree(straight[0] / "checkpoints", workdir / "checkpoints")
    res = train.train_and_evaluate(common.tiny_config(train__steps=9), workdir, verbose=False)
    assert res.step == 9
    err = capsys.readouterr().err
    assert "warning: train.steps changed from 6 to 9 on resume at step 6" in err
    assert "cosine learning-rate schedule" in err
    with checkpointing.Checkpointer(workdir / "checkpoints") as ckpt:
        meta = ckpt.read_meta(9)
    assert meta["steps_changes"] == [{"at_step": 6, "from": 6, "to": 9}]
