"""MultiTaskMLP: masked labels give exactly zero gradient; task weightings."""

import pytest
import torch
from torch import nn

from shardtrain.models.multitask import MultiTaskMLP, masked_task_loss
from shardtrain.core.errors import ShardtrainError


def _model(weighting="equal", static_weights=None) -> MultiTaskMLP:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    return MultiTaskMLP(trunk, 8, {"kind": 3, "spam": 2, "size": "regression"}, weighting, static_weights)


def _batch(n=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    y = {"kind": torch.randint(0, 3, (n,), generator=g), "spam": torch.randint(0, 2, (n,), generator=g),
         "size": torch.randn(n, generator=g)}
    return x, y, torch.ones(n)


def test_forward_shapes():
    model = _model()
    out = model(torch.zeros(4, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"kind": (4, 3), "spam": (4, 2), "size": (4,)}


def test_fully_masked_task_gives_exactly_zero_gradient_to_its_head():
    model = _model()
    x, y, w = _batch()
    y["spam"] = torch.full_like(y["spam"], -1)
    y["size"] = torch.full_like(y["size"], float("nan"))
    total, raw = model.task_losses(model(x), y, w)
    total.backward()
    assert raw["spam"].item() == 0.0 and raw["size"].item() == 0.0
    for task in ("spam", "size"):
        for p in model.head[task].parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(model.head["kind"].weight.grad) > 0


def test_partially_masked_task_equals_dropping_the_masked_rows():
    x, y, w = _batch()
    masked = {k: v.clone() for k, v in y.items()}
    masked["kind"][[1, 4, 5]] = -1
    keep = torch.tensor([i not in (1, 4, 5) for i in range(10)])
    grads = []
    for xs, ys in ((x, masked), (x[keep], {"kind": y["kind"][keep]})):
        model = _model()
        loss = masked_task_loss(model(xs)["kind"], ys["kind"], torch.ones(len(xs)))
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_zero_weight_rows_contribute_nothing():
    model = _model()
    x, y, w = _batch()
    w[3] = 0.0
    x2 = x.clone()
    x2[3] = 100.0  # garbage in a padding row
    y2 = {k: v.clone() for k, v in y.items()}
    y2["kind"][3] = 2
    a, _ = model.task_losses(model(x), y, w)
    b, _ = model.task_losses(model(x2), y2, w)
    torch.testing.assert_close(a, b)


def test_static_weights_scale_task_losses():
    x, y, w = _batch()
    model = _model("static", {"kind": 2.0, "size": 0.0})
    total, raw = model.task_losses(model(x), y, w)
    torch.testing.assert_close(total, 2.0 * raw["kind"] + raw["spam"])
    with pytest.raises(ShardtrainError, match="task_weights"):
        _model("static", {"colour": 1.0})


def test_uncertainty_weighting_formula_and_learning():
    x, y, w = _batch(64)
    model = _model("uncertainty")
    assert model.log_vars is not None and model.log_vars.shape == (3,)
    with torch.no_grad():
        model.log_vars.copy_(torch.tensor([0.5, -0.2, 1.0]))
    total, raw = model.task_losses(model(x), y, w)
    s = model.log_vars.detach()
    expected = (torch.exp(-s[0]) * raw["kind"] + torch.exp(-s[1]) * raw["spam"] + 0.5 * torch.exp(-s[2]) * raw["size"]
                + 0.5 * s.sum())
    torch.testing.assert_close(total, expected)
    with torch.no_grad():
        model.log_vars.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        model.task_losses(model(x), y, w)[0].backward()
        optimizer.step()
    assert torch.all(model.log_vars.detach().abs() > 0.05)
