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

from trained_bundle import bundle, compiled_corpus, trained, trained_ensemble  # noqa: E402, F401
