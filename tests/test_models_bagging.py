"""Bagging ensemble: stacked members equal separate ones (outputs and gradients); bootstrap weights."""

import math

import pytest
import torch

from shardtrain.models.bagging import BaggingEnsemble, bootstrap_weights, ensemble_probs
from shardtrain.models.inputs import SparseBatch
from shardtrain.models.mlp import MLP
from shardtrain.models.text import EmbeddingBagMLP
from shardtrain.core.errors import ShardtrainError

K = 4


def _ensemble(impl: str, **mlp_kwargs) -> BaggingEnsemble:
    return BaggingEnsemble(lambda: MLP(12, (16, 8), 5, **mlp_kwargs), members=K, seed=3, impl=impl)


@pytest.mark.parametrize("impl", ["vmap", "bmm", "sequential", "auto"])
@pytest.mark.parametrize("mlp_kwargs", [{}, {"activation": "tanh", "bias": False, "output_activation": "sigmoid"}])
def test_stacked_members_match_separate_members_outputs_and_grads(impl, mlp_kwargs):
    ens = _ensemble(impl, **mlp_kwargs)
    members = [ens.member(k) for k in range(K)]  # standalone copies of the same weights
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(0))
    target = torch.randn(K, 7, 5, generator=torch.Generator().manual_seed(1))

    out = ens(x)  # (K, B, C)
    assert out.shape == (K, 7, 5)
    ((out - target) ** 2).sum().backward()
    for k, member in enumerate(members):
        ref = member(x)
        torch.testing.assert_close(out[k], ref, rtol=1e-5, atol=1e-6)
        ((ref - target[k]) ** 2).sum().backward()
        for name, p in member.named_parameters():
            stacked = getattr(ens, name.replace(".", "__"))
            torch.testing.assert_close(stacked.grad[k], p.grad, rtol=1e-4, atol=1e-6)


def test_parameters_are_registered_and_members_differ():
    ens = _ensemble("vmap")
    names = [n for n, _ in ens.named_parameters()]
    assert names == ["net__0__weight", "net__0__bias", "net__2__weight", "net__2__bias", "net__4__weight", "net__4__bias"]
    assert all(isinstance(p, torch.nn.Parameter) and p.shape[0] == K for p in ens.parameters())
    w = ens.net__0__weight
    assert not torch.equal(w[0], w[1])  # members start from different inits
    assert torch.equal(w, _ensemble("vmap").net__0__weight)  # ... reproducibly from the seed
    optimizer = torch.optim.SGD(ens.parameters(), lr=0.1)
    ens(torch.randn(3, 12)).sum().backward()
    before = w.detach().clone()
    optimizer.step()
    assert not torch.equal(before, w.detach())


def test_dropout_masks_differ_between_members_and_vanish_in_eval():
    ens = BaggingEnsemble(lambda: MLP(10, (64,), 3, dropout=0.5), members=2, impl="vmap")
    with torch.no_grad():  # make both members identical: only dropout can tell them apart
        for p in ens.parameters():
            p.copy_(p[:1].expand_as(p))
    x = torch.randn(4, 10)
    for impl in ("vmap", "bmm", "sequential"):
        ens.impl = impl
        out = ens.train()(x)
        assert not torch.allclose(out[0], out[1]), impl
        out = ens.eval()(x)
        torch.testing.assert_close(out[0], out[1])


def test_sparse_members_run_under_vmap():
    ens = BaggingEnsemble(lambda: EmbeddingBagMLP(30, 4, (), 2), members=3, impl="auto")
    batch = SparseBatch.from_rows([[1, 2], [29]], [[1.0, 0.5], [2.0]])
    assert ens.resolved_impl(batch) == "vmap"
    out = ens(batch)
    for k in range(3):
        torch.testing.assert_close(out[k], ens.member(k)(batch))


def test_bmm_refuses_non_mlp_members_and_unknown_options():
    with pytest.raises(ShardtrainError, match="model.impl"):
        BaggingEnsemble(lambda: EmbeddingBagMLP(30, 4, (), 2), members=2, impl="bmm")
    with pytest.raises(ShardtrainError, match="model.bootstrap"):
        BaggingEnsemble(lambda: MLP(3, (), 2), members=2, bootstrap="exact")


def test_bootstrap_weights_do_not_depend_on_batching_or_rank():
    ids = torch.randperm(1000, generator=torch.Generator().manual_seed(0)) * 7 + 11
    members = torch.arange(5)
    whole = bootstrap_weights(42, members, ids)  # (K, N)
    assert whole.shape == (5, 1000) and whole.dtype == torch.float32
    # two "ranks" each see a different interleaved half, batched differently
    for rank in range(2):
        part = ids[rank::2]
        chunks = [bootstrap_weights(42, members, c) for c in part.split(33)]
        torch.testing.assert_close(torch.cat(chunks, 1), whole[:, rank::2], rtol=0, atol=0)
    assert torch.equal(bootstrap_weights(42, members, ids), whole)  # every epoch / call
    assert not torch.equal(bootstrap_weights(43, members, ids), whole)  # the seed matters
    assert not torch.equal(whole[0], whole[1])  # so does the member


def test_bootstrap_weights_are_poisson_one():
    w = bootstrap_weights(0, torch.arange(8), torch.arange(50_000))
    assert torch.all(w == w.round()) and w.min() == 0
    assert w.mean().item() == pytest.approx(1.0, abs=0.01)
    assert w.var().item() == pytest.approx(1.0, abs=0.03)
    assert (w == 0).float().mean().item() == pytest.approx(math.exp(-1), abs=0.005)  # out-of-bag share
    assert torch.equal(bootstrap_weights(0, torch.arange(2), torch.arange(5), "none"), torch.ones(2, 5))


def test_ensemble_probs_is_mean_of_member_softmax():
    logits = torch.randn(3, 4, 5)
    probs = ensemble_probs(logits)
    torch.testing.assert_close(probs, sum(torch.softmax(logits[k], -1) for k in range(3)) / 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
