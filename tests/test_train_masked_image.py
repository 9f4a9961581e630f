"""The existing value-based (Double DQN) and actor-critic (REINFORCE) loops on the masked-image task,
vmapped over two seeds, with Bengio's conv net sized from the config."""

import jax
import numpy as np

from tdjax.train import ActorCriticConfig, ValueConfig, make_agent, make_train

N_T = (("num_images", 10),)


def test_double_dqn_on_masked_digits_two_seeds():
    c = ValueConfig(env="MaskedImage-digits", env_options=N_T, algo="double_dqn", cnn_width=2, cnn_extra_layers=1,
                    num_envs=2, total_steps=120, buffer_size=60, batch_size=8, learning_starts=40,
                    target_update_interval=10, eps_decay_steps=60)
    agent = make_agent(c)
    assert agent.env.obs_shape == (32, 32, 2) and agent.env.num_actions == 40
    params = jax.eval_shape(agent.spec.network.init, jax.random.key(0), np.zeros((32, 32, 2), np.float32))
    # n_h = 2, n_L = 1 on 2 input channels, then the Q head of 40 actions (hand count, see test_networks_bengio)
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == 102 + 76 + 296 + 584 + 6408 + 360
    _, m = jax.jit(jax.vmap(make_train(c)))(jax.random.split(jax.random.key(0), 2))
    assert m.loss.shape == (2, 60)
    learned = np.asarray(m.learned)
    assert learned[:, 20:].all() and not learned[:, :20].any()
    assert np.isfinite(np.asarray(m.loss)[learned]).all() and np.isfinite(np.asarray(m.q_mean)[learned]).all()
    n, s = np.asarray(m.return_count).sum(1), np.asarray(m.return_sum).sum(1)
    assert (n > 0).all()
    # every return lies in [-0.1 * 19 + 1, 1] (solved) or is -0.1 * 20 (time limit)
    assert (s / n <= 1.0).all() and (s / n >= -2.0).all()
    assert not np.array_equal(np.asarray(m.loss)[0], np.asarray(m.loss)[1])  # the seeds differ


def test_reinforce_on_masked_digits_two_seeds_with_held_out_images():
    c = ActorCriticConfig(env="MaskedImage-digits", env_options=N_T, algo="reinforce", cnn_width=2, num_envs=2,
                          num_steps=20, total_steps=120, eval_interval=2, eval_num_envs=2, eval_steps=20)
    agent = make_agent(c)
    assert agent.test_env.env.num_images == 297 and agent.env.env.num_images == 10
    _, m = jax.jit(jax.vmap(make_train(c)))(jax.random.split(jax.random.key(1), 2))
    assert m.loss.shape == (2, 3)
    assert np.isfinite(np.asarray(m.policy_loss)).all() and np.isfinite(np.asarray(m.value_loss)).all()
    assert (np.asarray(m.return_count).sum(1) > 0).all() and (np.asarray(m.test_return_count).sum(1) > 0).all()
    assert np.asarray(m.evaluated)[:, ::2].all()
