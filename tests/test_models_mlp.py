"""MLP, SparseBatch and EmbeddingBagMLP: shapes, parameter counts, activations, dense equivalence."""

import pytest
import torch
from torch import nn

from shardtrain.models.inputs import SparseBatch
from shardtrain.models.mlp import MLP
from shardtrain.models.text import EmbeddingBagMLP
from shardtrain.core.errors import ShardtrainError


def test_default_mlp_is_the_course_network():
    model = MLP(784)
    kinds = [type(m) for m in model.net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in model.net if isinstance(m, nn.Linear)] == [
        (784, 512), (512, 512), (512, 10)]
    assert sum(p.numel() for p in model.parameters()) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10 == 669_706
    assert model(torch.zeros(3, 28, 28)).shape == (3, 10)  # images are flattened


@pytest.mark.parametrize("name,fn", [("relu", torch.relu), ("softplus", nn.functional.softplus),
                                     ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)])
def test_activation_is_applied_between_layers(name, fn):
    torch.manual_seed(0)
    model = MLP(4, hidden=(3,), out_features=2, activation=name)
    x = torch.randn(5, 4)
    first, last = model.net[0], model.net[2]
    torch.testing.assert_close(model(x), last(fn(first(x))))


def test_dropout_follows_each_hidden_activation_and_only_trains():
    model = MLP(6, hidden=(5, 4), out_features=3, dropout=0.5)
    assert [type(m) for m in model.net] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    x = torch.randn(8, 6)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_no_hidden_layer_is_one_linear_and_output_activation_applies():
    model = MLP(2, hidden=(), out_features=1, bias=False, output_activation="sigmoid")
    assert [type(m) for m in model.net] == [nn.Linear, nn.Sigmoid]
    assert model.linear_names() == ["net.0"]
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
    assert model(torch.tensor([[0.5, 1.0]])).item() == pytest.approx(torch.sigmoid(torch.tensor(2.5)).item())


def test_bad_arguments_raise_shardtrain_error():
    with pytest.raises(ShardtrainError, match="model.activation"):
        MLP(4, activation="gelu-ish")
    with pytest.raises(ShardtrainError, match="model.dropout"):
        MLP(4, dropout=1.0)


def test_sparse_batch_round_trip_and_dense_view():
    batch = SparseBatch.from_rows([[1, 3, 1], [], [0]], [[0.5, 2.0, 0.25], [], [1.0]])
    assert batch.batch_size == 3
    assert batch.offsets.tolist() == [0, 3, 3]
    dense = batch.to_dense(4)
    assert dense.tolist() == [[0.0, 0.75, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_embedding_bag_mlp_equals_dense_mlp_on_the_dense_vector():
    torch.manual_seed(0)
    model = EmbeddingBagMLP(50, embed_dim=6, hidden=(5,), out_features=3, activation="tanh")
    with torch.no_grad():
        model.embed_bias.normal_()
    dense_model = MLP(50, hidden=(6, 5), out_features=3, activation="tanh")
    with torch.no_grad():  # EmbeddingBag table (N, D) is the first Linear's weight transposed
        dense_model.net[0].weight.copy_(model.embed.weight.t())
        dense_model.net[0].bias.copy_(model.embed_bias)
        for (_, a), (_, b) in zip(list(dense_model.named_parameters())[2:], model.mlp.named_parameters()):
            a.copy_(b)
    batch = SparseBatch.from_rows([[1, 7, 7], [], [49, 0]], [[0.3, 0.5, 0.2], [], [1.0, -1.0]])
    torch.testing.assert_close(model(batch), dense_model(batch.to_dense(50)))
