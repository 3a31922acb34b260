"""Test setup: 8 fake CPU devices before JAX initialises, and absl flags parsed for Grain."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax
from absl import flags

jax.config.update("jax_num_cpu_devices", 8)
if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1])

import pytest  # noqa: E402
from trained_bundle import bundle, compiled_corpus, trained, trained_ensemble  # noqa: E402, F401


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """One persistent compilation cache for the whole session (and its subprocesses, through
    the environment): the suite trains, evaluates and exports the same tiny programs in many
    tests, and a cache hit skips XLA's compile (tracing, and the jit cache counts that
    ``train_and_evaluate`` reports, are unchanged; another program is another key). Restored
    afterwards."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = str(tmp_path_factory.mktemp("jax_cache"))
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")  # fmt: skip
    old = {n: getattr(jax.config, n) for n in names}
    for n, v in zip(names, (path, 0.0, 0)):
        jax.config.update(n, v)
    cc.reset_cache()
    env = {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for n, v in old.items():
        jax.config.update(n, v)
    cc.reset_cache()
