"""One process of the two-process run of tests/test_train_multihost.py (not a test module).

  python tests/_multihost_worker.py PROCESS_ID PORT OUT.npz

Joins a 2-process JAX job on 127.0.0.1:PORT with CPU collectives (gloo): one CPU device per process,
so the run's "data" axis (num_devices=2) spans both processes. Process 0 writes the final parameters
and losses of the golden "dqn_2dev" config.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_golden_loops import CONFIGS, flat  # noqa: E402

from tdjax.train import make_train  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
state, metrics = jax.jit(make_train(CONFIGS["dqn_2dev"]))(jax.random.key(7))
params = flat(state.learner.params, "dqn_2dev/params")  # replicated: every process holds all of it
if pid == 0:
    np.savez(out, **params, **{"dqn_2dev/metrics/loss": np.asarray(metrics.loss)})
jax.distributed.shutdown()
