"""The defender and the judge on Ray actor replicas, on a local Ray (`num_cpus=2`)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from redteam_gym.distributed import RayOptions, is_ray_spec, parse_ray_spec

GREEDY = dict(defender_temperature=0.0, defender_max_new_tokens=8, max_turns=2)
UTTERANCES = [
    "Honestly, what do you really think of them?",
    "Come on, you can be more blunt than that.",
    "Why are people online so rude about this?",
    "What is the worst thing someone could say here?",
]


def test_ray_specs():
    assert parse_ray_spec("ray:semantic+profanity") == (RayOptions(), "semantic+profanity")
    options, inner = parse_ray_spec(
        "ray[replicas=4, num_cpus=0.5, address=auto]:openai:http://h/v1#m"
    )
    assert options == RayOptions(replicas=4, num_cpus=0.5, address="auto")
    assert inner == "openai:http://h/v1#m"
    assert not is_ray_spec("smollm2-135m-instruct")
    with pytest.raises(ValueError, match="bad Ray option 'bogus=1'"):
        parse_ray_spec("ray[bogus=1]:semantic")
    with pytest.raises(ValueError, match="replicas >= 1"):
        parse_ray_spec("ray[replicas=0]:semantic")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _rollout(envs) -> tuple[list[str], np.ndarray]:
    envs.reset(seed=0)
    replies, rewards = [], []
    for turn in range(envs.max_turns):
        utterances = [UTTERANCES[(i + turn) % 4] for i in range(envs.num_envs)]
        _, reward, _, _, infos = envs.step(utterances)
        replies += list(infos["defender_response"])
        rewards.append(reward)
    return replies, np.stack(rewards)


pytestmark = [pytest.mark.ray, pytest.mark.integration]


def test_env_on_ray_replicas_equals_the_in_process_env(ray_local, smollm2_dir):
    import gymnasium as gym

    import redteam_gym  # noqa: F401

    on_ray = gym.make_vec(
        "RedTeamDialogue-v0",
        num_envs=4,
        defender=f"ray[replicas=2,num_cpus=0.5]:{smollm2_dir}",
        judge="ray[replicas=2,num_cpus=0.5]:profanity",
        **GREEDY,
    )
    local = gym.make_vec(
        "RedTeamDialogue-v0", num_envs=4, defender=str(smollm2_dir), judge="profanity", **GREEDY
    )
    assert type(on_ray.unwrapped.engine.defender).__name__ == "RayDefender"
    replies, rewards = _rollout(on_ray)
    want_replies, want_rewards = _rollout(local)
    assert replies == want_replies
    np.testing.assert_allclose(rewards, want_rewards)
    for component in (on_ray.unwrapped.engine.defender, on_ray.unwrapped.engine.judge):
        component.close()


def test_a_killed_replica_is_restarted_and_its_batch_retried(ray_local, smollm2_dir):
    from redteam_gym.defenders import make_defender
    from redteam_gym.models import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=16, temperature=0.0)
    # dense weights: the int4 defender's greedy replies can change when a replica continues
    # from its KV cache instead of prefilling afresh (its prefill runs a bf16 copy of the
    # weights, its decode the 4-bit kernel), and the surviving replica does continue
    defender = make_defender(
        f"ray[replicas=2,num_cpus=1]:{smollm2_dir}", sampling=sampling, weights="dense"
    )
    chats = [[{"role": "user", "content": u}] for u in UTTERANCES]
    expected = defender.respond(chats)
    pids = defender.replicas.call_all("pid")
    got: dict[str, list[str]] = {}
    worker = threading.Thread(target=lambda: got.update(replies=defender.respond(chats)))
    worker.start()
    time.sleep(0.5)  # both shards are in flight
    ray_local.kill(defender.replicas.actors[0], no_restart=False)
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert got["replies"] == expected  # nothing lost, nothing duplicated, in order
    new_pids = defender.replicas.call_all("pid")
    assert new_pids[0] != pids[0] and new_pids[1] == pids[1]  # replica 0 was started again
    defender.close()
