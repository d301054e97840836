"""Known-answer tests for the learners' math: advantages, KL estimators/controllers, risk."""

from __future__ import annotations

import math

import pytest
import torch

from agents.common.advantages import (
    compute_gae,
    discounted_returns,
    explained_variance,
    masked_mean,
    masked_var,
    masked_whiten,
)
from agents.common.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k3,
    kl_penalty,
)
from agents.common.risk import (
    cvar,
    select_lowest_returns,
    soft_risk_batch_size,
    soft_risk_level,
)
from redteam_gym.metrics.risk import cvar as metrics_cvar

# ---------------------------------------------------------------- helpers


def _right_padded_mask(lengths: list[int], num_steps: int) -> torch.Tensor:
    return torch.arange(num_steps)[None, :] < torch.tensor(lengths)[:, None]


def _gae_loop(
    rewards: list[float], values: list[float], gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """Textbook GAE for one episode that ends after its last element (SB3 test_gae style)."""
    advantages = [0.0] * len(rewards)
    last = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    returns = [a + v for a, v in zip(advantages, values, strict=True)]
    return advantages, returns


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_and_var_match_plain_torch_on_valid_subset() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = _right_padded_mask([7, 3, 1, 5], 7)
    x_padded = x.masked_fill(~mask, float("nan"))  # padding must never be read
    valid = x[mask]
    torch.testing.assert_close(masked_mean(x_padded, mask), valid.mean())
    torch.testing.assert_close(masked_var(x_padded, mask), valid.var(unbiased=True))
    torch.testing.assert_close(
        masked_var(x_padded, mask, unbiased=False), valid.var(unbiased=False)
    )
    per_row = masked_mean(x_padded, mask, dim=1)
    expected = torch.stack([x[i, : int(mask[i].sum())].mean() for i in range(4)])
    torch.testing.assert_close(per_row, expected)


def test_masked_mean_accepts_float_mask_and_empty_rows_give_zero() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_mean(x, mask).item() == pytest.approx(1.5)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 0.0]))


def test_masked_var_single_entry_and_empty() -> None:
    x = torch.tensor([[3.0, 9.0]])
    assert masked_var(x, torch.tensor([[True, False]])).item() == 0.0
    with pytest.raises(ValueError, match="no entries"):
        masked_var(x, torch.zeros(1, 2, dtype=torch.bool))


@pytest.mark.parametrize("lengths", [[6, 6, 6], [6, 2, 4], [1, 5, 3]])
def test_masked_whiten_matches_plain_torch(lengths: list[int]) -> None:
    gen = torch.Generator().manual_seed(1)
    x = 5.0 + 3.0 * torch.randn(3, 6, generator=gen, dtype=torch.float64)
    mask = _right_padded_mask(lengths, 6)
    x_padded = torch.where(mask, x, torch.full_like(x, 1e6))  # outliers in padding ignored
    whitened = masked_whiten(x_padded, mask)
    valid = x[mask]
    expected = (valid - valid.mean()) / torch.sqrt(valid.var() + 1e-8)
    torch.testing.assert_close(whitened[mask], expected)
    assert whitened[mask].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert whitened[mask].std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(whitened[~mask] == 0)

    scaled = masked_whiten(x_padded, mask, shift_mean=False)
    torch.testing.assert_close(scaled[mask], expected + valid.mean())


# ---------------------------------------------------------------- GAE and returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.95), (0.9, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("lengths", [[1], [5, 5], [8, 3, 1, 6], [24, 7, 17]])
def test_gae_matches_python_loop(gamma: float, lam: float, lengths: list[int]) -> None:
    gen = torch.Generator().manual_seed(len(lengths) * 100 + sum(lengths))
    num_steps = max(lengths) + 2  # always some padding after the longest row
    rewards = torch.randn(len(lengths), num_steps, generator=gen, dtype=torch.float64)
    values = torch.randn(len(lengths), num_steps, generator=gen, dtype=torch.float64)
    mask = _right_padded_mask(lengths, num_steps)
    # Junk in the padding must not leak into valid positions.
    rewards_padded = torch.where(mask, rewards, torch.full_like(rewards, 1e3))
    values_padded = torch.where(mask, values, torch.full_like(values, float("nan")))

    advantages, returns = compute_gae(rewards_padded, values_padded, mask, gamma=gamma, lam=lam)
    assert advantages.shape == returns.shape == rewards.shape
    assert torch.isfinite(advantages).all() and torch.isfinite(returns).all()
    for i, length in enumerate(lengths):
        exp_adv, exp_ret = _gae_loop(
            rewards[i, :length].tolist(), values[i, :length].tolist(), gamma, lam
        )
        torch.testing.assert_close(
            advantages[i, :length], torch.tensor(exp_adv, dtype=torch.float64)
        )
        torch.testing.assert_close(returns[i, :length], torch.tensor(exp_ret, dtype=torch.float64))
        assert torch.all(advantages[i, length:] == 0)
        assert torch.all(returns[i, length:] == 0)


def test_gae_sparse_terminal_reward_by_hand() -> None:
    # RLHF layout: the judge's score sits on the last valid token, values are zero.
    rewards = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    values = torch.zeros(1, 4)
    mask = torch.tensor([[True, True, True, False]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 1.0, 2.0, 0.0]]))
    torch.testing.assert_close(returns, advantages)
    # lam = 1, gamma = 1: advantages are Monte-Carlo return minus value.
    values = torch.tensor([[0.5, 1.0, 1.5, 7.0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.5, 1.0, 0.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.0, 2.0, 0.0]]))


def test_gae_rejects_non_right_padded_mask_and_shape_mismatch() -> None:
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="right-padded"):
        compute_gae(x, x, torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="right-padded"):
        discounted_returns(x, torch.tensor([[False, True, True]]))
    with pytest.raises(ValueError, match="same shape"):
        compute_gae(x, torch.zeros(1, 4), torch.ones(1, 3, dtype=torch.bool))


def test_discounted_returns_by_hand_and_against_loop() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 99.0, 99.0, 99.0]])
    mask = _right_padded_mask([3, 1], 4)
    returns = discounted_returns(rewards, mask, gamma=0.5)
    expected = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(returns, expected)
    # gamma = 1: reward-to-go; equals GAE with lam = 1 and zero values.
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 9, generator=gen, dtype=torch.float64)
    mask = _right_padded_mask([9, 4, 6], 9)
    returns = discounted_returns(rewards, mask)
    gae_returns = compute_gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)[1]
    torch.testing.assert_close(returns, gae_returns)
    for i, length in enumerate([9, 4, 6]):
        row = rewards[i, :length].tolist()
        expected_row = [sum(row[t:]) for t in range(length)]
        torch.testing.assert_close(
            returns[i, :length], torch.tensor(expected_row, dtype=torch.float64)
        )


# ---------------------------------------------------------------- KL


def test_kl_estimators_by_hand() -> None:
    logprobs = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.1)])
    ref_logprobs = torch.tensor([math.log(0.25), math.log(0.2), math.log(0.4)])
    torch.testing.assert_close(kl_k1(logprobs, ref_logprobs), logprobs - ref_logprobs)
    # r = ref / policy = 0.5, 1, 4  ->  k3 = (r - 1) - log r
    expected_k3 = torch.tensor([-0.5 - math.log(0.5), 0.0, 3.0 - math.log(4.0)])
    torch.testing.assert_close(kl_k3(logprobs, ref_logprobs), expected_k3)
    torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, "k1"), logprobs - ref_logprobs)
    torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, "k3"), expected_k3)
    torch.testing.assert_close(
        kl_penalty(logprobs, ref_logprobs, "abs"), (logprobs - ref_logprobs).abs()
    )
    torch.testing.assert_close(
        kl_penalty(logprobs, ref_logprobs, "mse"), 0.5 * (logprobs - ref_logprobs) ** 2
    )
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(logprobs, ref_logprobs, "full")  # type: ignore[arg-type]


def test_k3_non_negative_and_unbiased_for_sampled_tokens() -> None:
    gen = torch.Generator().manual_seed(4)
    logprobs = torch.randn(1000, generator=gen) * 3
    ref_logprobs = torch.randn(1000, generator=gen) * 3
    assert torch.all(kl_k3(logprobs, ref_logprobs) >= 0)
    assert torch.all(kl_k3(logprobs, logprobs + 1e-7) >= 0)
    # With tokens sampled from the policy both k1 and k3 estimate the exact KL.
    policy = torch.softmax(torch.randn(6, generator=gen), dim=0)
    ref = torch.softmax(torch.randn(6, generator=gen), dim=0)
    exact = torch.sum(policy * (policy.log() - ref.log()))
    tokens = torch.multinomial(policy, 200_000, replacement=True, generator=gen)
    k1 = kl_k1(policy.log()[tokens], ref.log()[tokens]).mean()
    k3 = kl_k3(policy.log()[tokens], ref.log()[tokens]).mean()
    assert k1.item() == pytest.approx(exact.item(), abs=0.02)
    assert k3.item() == pytest.approx(exact.item(), abs=0.02)


def test_fixed_kl_controller_is_constant_and_checkpoints() -> None:
    controller = FixedKLController(0.3)
    for kl in (0.0, 100.0, -1.0):
        assert controller.update(kl) == 0.3
    assert controller.value == 0.3
    restored = FixedKLController(0.1)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.3
    with pytest.raises(ValueError, match="value"):
        FixedKLController(-0.1)


def test_adaptive_kl_controller_one_update_by_hand() -> None:
    # KL above target: e = 7/6 - 1 = 1/6 (inside the clip), beta grows.
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    assert controller.update(7.0) == pytest.approx(0.2 * (1 + 0.1 / 6))
    # KL below target: e = 5.4/6 - 1 = -0.1, beta shrinks.
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    assert controller.update(5.4) == pytest.approx(0.2 * (1 - 0.1 * 0.1))
    # Far above / below target: the error is clipped at +-0.2.
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    assert controller.update(600.0) == pytest.approx(0.2 * 1.02)
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    assert controller.update(0.0) == pytest.approx(0.2 * 0.98)
    assert controller.value == pytest.approx(0.196)
    # At target nothing changes.
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0)
    assert controller.update(6.0) == pytest.approx(0.2)
    assert controller.k_beta == pytest.approx(0.0128)  # RA-RLHF Table 7 default


def test_adaptive_kl_controller_state_dict_and_validation() -> None:
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    controller.update(10.0)
    restored = AdaptiveKLController(init_kl_coef=0.2, target=6.0, k_beta=0.1)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value
    assert restored.update(3.0) == controller.update(3.0)
    controller.update(torch.tensor(6.5))  # a 0-dim tensor is accepted
    with pytest.raises(ValueError, match="current_kl"):
        controller.update(float("nan"))
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(target=0.0)
    with pytest.raises(ValueError, match="init_kl_coef"):
        AdaptiveKLController(init_kl_coef=0.0)
    with pytest.raises(ValueError, match="k_beta"):
        AdaptiveKLController(k_beta=-0.1)
    with pytest.raises(ValueError, match="value"):
        restored.load_state_dict({})


# ---------------------------------------------------------------- soft-risk schedule

PAPER = {"alpha": 0.2, "n_warmup": 30, "rho": 0.95, "total_updates": 100}


def test_soft_risk_schedule_paper_defaults_by_hand() -> None:
    # end = ceil(0.95 * 100) = 95, K = 0.8 / (95 - 30) = 0.8 / 65.
    for i in (0, 1, 29):
        assert soft_risk_batch_size(i, 8, **PAPER) == 8
    assert soft_risk_batch_size(30, 8, **PAPER) == 8  # 1 - K * 0 = 1
    assert soft_risk_level(30, **PAPER) == 1.0
    # i = 60: 1 - 0.8 * 30 / 65 = 0.630769...; 8 * that = 5.046 -> 6
    assert soft_risk_level(60, **PAPER) == pytest.approx(1 - 0.8 * 30 / 65)
    assert soft_risk_batch_size(60, 8, **PAPER) == 6
    # i = 80: 1 - 0.8 * 50 / 65 = 0.384615...; 8 * that = 3.077 -> 4
    assert soft_risk_batch_size(80, 8, **PAPER) == 4
    # i = 94: 0.212307...; 8 * that = 1.698 -> 2
    assert soft_risk_batch_size(94, 8, **PAPER) == 2
    # From ceil(rho M) = 95 on: ceil(0.2 * 8) = 2.
    for i in (95, 99, 100, 500):
        assert soft_risk_batch_size(i, 8, **PAPER) == 2
        assert soft_risk_level(i, **PAPER) == 0.2
    sizes = [soft_risk_batch_size(i, 8, **PAPER) for i in range(100)]
    assert sizes == sorted(sizes, reverse=True)  # never grows back


def test_soft_risk_schedule_float_ceil_and_edge_cases() -> None:
    # ceil(0.2 * 5) must be 1, and 0.07 * 100 == 7.000000000000001 must give 7.
    assert soft_risk_batch_size(99, 5, alpha=0.2, n_warmup=0, rho=0.5, total_updates=10) == 1
    assert soft_risk_batch_size(0, 100, alpha=0.07, n_warmup=0, rho=0.0, total_updates=10) == 7
    # end = ceil(0.07 * 100) = 7: the ramp ends exactly at i = 7.
    assert soft_risk_level(7, alpha=0.5, n_warmup=0, rho=0.07, total_updates=100) == 0.5
    assert soft_risk_level(6, alpha=0.5, n_warmup=0, rho=0.07, total_updates=100) == pytest.approx(
        1 - 0.5 * 6 / 7
    )
    # ceil(rho M) <= n: no ramp, alpha right after the warm start.
    kwargs = {"alpha": 0.25, "n_warmup": 30, "rho": 0.2, "total_updates": 100}
    assert soft_risk_batch_size(29, 8, **kwargs) == 8
    assert soft_risk_batch_size(30, 8, **kwargs) == 2
    # alpha = 1 is plain PPO: always the full batch.
    assert all(
        soft_risk_batch_size(i, 8, alpha=1.0, n_warmup=0, rho=0.5, total_updates=10) == 8
        for i in range(20)
    )
    assert soft_risk_batch_size(50, 1, **PAPER) == 1


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"update_idx": -1}, "update_idx"),
        ({"n_warmup": -1}, "n_warmup"),
        ({"rho": 1.1}, "rho"),
        ({"total_updates": 0}, "total_updates"),
    ],
)
def test_soft_risk_schedule_rejects_bad_args(kwargs: dict, name: str) -> None:
    args = {"update_idx": 0, "batch_size": 8, **PAPER, **kwargs}
    with pytest.raises(ValueError, match=name):
        soft_risk_batch_size(**args)


# ---------------------------------------------------------------- selection and CVaR


def test_select_lowest_returns_against_sorted_samples() -> None:
    gen = torch.Generator().manual_seed(5)
    returns = torch.randn(16, generator=gen)
    for k in (0, 1, 5, 16):
        idx = select_lowest_returns(returns, k)
        assert idx.dtype == torch.long and idx.shape == (k,)
        torch.testing.assert_close(returns[idx], torch.sort(returns).values[:k])


def test_select_lowest_returns_ties_broken_by_index() -> None:
    returns = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 1.0])
    assert select_lowest_returns(returns, 3).tolist() == [1, 3, 0]
    assert select_lowest_returns(returns, 4).tolist() == [1, 3, 0, 2]
    assert select_lowest_returns(torch.zeros(5), 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="k"):
        select_lowest_returns(returns, 7)
    with pytest.raises(ValueError, match="NaN"):
        select_lowest_returns(torch.tensor([0.0, float("nan")]), 1)
    with pytest.raises(ValueError, match="1-D"):
        select_lowest_returns(torch.zeros(2, 2), 1)


def test_cvar_against_sorted_samples() -> None:
    returns = torch.tensor([5.0, -1.0, 3.0, 0.0, 2.0, -4.0, 1.0, 4.0, 6.0, 7.0])
    assert cvar(returns, 0.2).item() == pytest.approx((-4.0 - 1.0) / 2)
    assert cvar(returns, 0.25).item() == pytest.approx((-4.0 - 1.0 + 0.0) / 3)  # ceil(2.5) = 3
    assert cvar(returns, 1.0).item() == pytest.approx(returns.mean().item())
    assert cvar(returns, 0.01).item() == -4.0
    assert cvar(torch.tensor([2.0, 2.0, 1.0, 2.0]), 0.5).item() == pytest.approx(1.5)  # ties
    assert cvar(torch.tensor([3, 1, 2]), 0.5).item() == pytest.approx(1.5)  # int input
    gen = torch.Generator().manual_seed(6)
    samples = torch.randn(1000, generator=gen, dtype=torch.float64)
    for alpha in (0.05, 0.2, 0.5):
        k = math.ceil(alpha * 1000)
        torch.testing.assert_close(cvar(samples, alpha), torch.sort(samples).values[:k].mean())
        assert cvar(samples, alpha) <= samples.mean()
    with pytest.raises(ValueError, match="alpha"):
        cvar(returns, 0.0)
    with pytest.raises(ValueError, match="empty"):
        cvar(torch.tensor([]), 0.5)


def test_learner_cvar_is_the_metric_cvar() -> None:
    # RA-RLHF logs risk/cvar, the benchmarks report return_cvar: one estimator for both.
    gen = torch.Generator().manual_seed(7)
    for n in (1, 3, 10, 30, 257):
        returns = torch.randn(n, generator=gen, dtype=torch.float64)
        for alpha in (0.01, 0.1, 0.25, 1 / 3, 0.5, 1.0):
            assert cvar(returns, alpha).item() == metrics_cvar(returns.numpy(), alpha)
    float32 = torch.randn(30, generator=gen)
    assert cvar(float32, 0.1).dtype == torch.float32
    assert cvar(float32, 0.1).item() == pytest.approx(metrics_cvar(float32.tolist(), 0.1))


def test_explained_variance_matches_sklearn_on_valid_tokens():
    from sklearn.metrics import explained_variance_score

    torch.manual_seed(0)
    returns = torch.randn(3, 5)
    values = returns + 0.5 * torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    expected = explained_variance_score(returns[mask].numpy(), values[mask].numpy())
    assert explained_variance(values, returns, mask) == pytest.approx(expected, rel=1e-5)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert math.isnan(explained_variance(values, torch.ones(3, 5), mask))
