"""Plain ``nn.Module`` models: each owns its loss and its predictions; no Lightning, no Ray.

>>> from shardtrain.models import MLP
>>> MLP(784, hidden=(512, 512), out_features=10)(torch.zeros(2, 784)).shape   # doctest: +SKIP
torch.Size([2, 10])
"""

from shardtrain.models.bagging import BaggingEnsemble
from shardtrain.models.mlp import MLP
from shardtrain.models.multitask import MultiTaskMLP
from shardtrain.models.text import EmbeddingBagMLP

__all__ = ["MLP", "BaggingEnsemble", "MultiTaskMLP", "EmbeddingBagMLP"]
