"""tdjax.envs.procgen_id: ProcGen game names to envpool task ids, one rule for the whole project."""

import pytest

from tdjax.envs import PROCGEN_GAMES, procgen_id


def test_names_become_envpool_ids():
    assert procgen_id("bigfish") == "BigfishEasy-v0"
    assert procgen_id("Heist", "HARD") == "HeistHard-v0"
    assert procgen_id("caveflyer", "memory") == "CaveflyerMemory-v0"
    assert procgen_id("MinerEasy-v0") == "MinerEasy-v0"  # an id passes through
    assert len(PROCGEN_GAMES) == 16 and all("easy" in modes for modes in PROCGEN_GAMES.values())


def test_ids_are_envpools_own():
    envpool = pytest.importorskip("envpool")
    ids = set(envpool.list_all_envs())
    assert {procgen_id(g, m) for g, modes in PROCGEN_GAMES.items() for m in modes} <= ids


def test_unknown_game_or_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="not a ProcGen game.*bigfish.*starpilot"):
        procgen_id("pong")
    with pytest.raises(ValueError, match="Breakout-MinAtar"):
        procgen_id("Breakout-MinAtar")
    with pytest.raises(ValueError, match="no distribution mode 'memory'.*easy, hard"):
        procgen_id("bigfish", "memory")
