"""benchmarks/cleanrl_style_ppo_envpool.py (the CleanRL-style PPO baseline) runs on envpool Atari and ProcGen:
finite losses, parameters that move, and the settings it is meant to use. No timing asserts."""

import math
import os
import pathlib
import sys

# Flax's orthogonal initialiser runs LAPACK QR; a multi-threaded OpenBLAS on a loaded 2-core machine
# makes that take tens of seconds. Only effective when this module loads numpy first (run alone).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

pytest.importorskip("envpool", reason="envpool is part of `make test`'s install ('tdjax[envs]')")

_BENCH = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")  # benchmarks/ is not a package
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
import cleanrl_style_ppo_envpool as ppo  # noqa: E402


def _check(res, batch):
    assert res["iterations"] >= 1 and res["env_steps"] == res["iterations"] * batch
    assert all(math.isfinite(x) for x in res["losses"])
    assert math.isfinite(res["last_logs"]["v_loss"]) and math.isfinite(res["last_logs"]["entropy"])
    assert res["param_change"] > 0.0
    assert res["steps_per_s"] > 0.0 and res["compile_s"] > 0.0


def test_defaults_are_cleanrls():
    a = ppo.default_args("Pong-v5")
    assert (a.num_envs, a.num_steps, a.num_minibatches, a.update_epochs) == (8, 128, 4, 4)
    assert (a.learning_rate, a.anneal_lr, a.gamma, a.gae_lambda, a.clip_coef) == (2.5e-4, True, 0.99, 0.95, 0.1)
    assert (a.ent_coef, a.vf_coef, a.max_grad_norm, a.adam_eps, a.network) == (0.01, 0.5, 0.5, 1e-5, "nature")
    p = ppo.default_args("BigfishEasy-v0")
    assert (p.num_envs, p.num_steps, p.num_minibatches, p.update_epochs) == (64, 256, 8, 3)
    assert (p.learning_rate, p.gamma, p.clip_coef, p.ent_coef, p.network) == (5e-4, 0.999, 0.2, 0.01, "impala")
    assert ppo._parse(["--env-id", "Pong-v5", "--procgen-defaults", "on", "--total-timesteps", "99"]).num_envs == 64
    assert ppo._parse(["--env-id", "BigfishEasy-v0", "--num-envs", "4"]).num_envs == 4
    assert ppo._parse([]).env_id == "Pong-v5" and ppo._parse(["--update-unroll"]).update_unroll


# ~40 s of Nature/IMPALA compilations for the benchmark baseline: run with `make test-paper`.
@pytest.mark.paper_scale
def test_pong_and_bigfish_tiny_runs():
    # Pong: CleanRL's Atari settings (4 epochs × 4 minibatches) at 2 envs × 16 steps, one iteration.
    pong = ppo.measure("Pong-v5", 32, num_envs=2, num_steps=16)
    _check(pong, 32)
    # BigfishEasy: the ProcGen settings (IMPALA CNN, γ 0.999, value clipping, reward normalisation) at
    # 2 envs × 16 steps, one iteration; 2 minibatches × 1 epoch to keep the test short.
    fish = ppo.measure("BigfishEasy-v0", 32, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1)
    assert fish["args"]["network"] == "impala" and fish["args"]["gamma"] == 0.999
    _check(fish, 32)
