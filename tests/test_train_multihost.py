"""Many hosts through jax.distributed: a two-process run equals the one-process run.

Two local CPU processes (one device each, JAX's gloo CPU collectives) run one data-parallel DQN run
(num_devices=2, the global batch split over the processes). Their final parameters must equal those
of the same config run by ONE process with two devices (tests/data/golden_loops.npz, "dqn_2dev";
tests/test_train_golden.py checks that the one-process run still gives those numbers).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_equals_one_process_run(tmp_path):
    port, out = str(_free_port()), tmp_path / "params.npz"
    env = dict(os.environ)  # one CPU device per process: no fake-device flag (make test's -O0 is kept)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    procs = [subprocess.Popen([sys.executable, str(HERE / "_multihost_worker.py"), str(i), port, str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        finally:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    golden = np.load(HERE / "data" / "golden_loops.npz")
    got = np.load(out)
    assert len(got.files) >= 3
    for k in got.files:
        np.testing.assert_allclose(got[k], golden[k], rtol=2e-5, atol=2e-6, err_msg=k)
