"""The MLX builders match the torch spec name by name; weights convert both ways."""

import mlx.core as mx
import numpy as np
import pytest
import torch

import cifar_lightning.models as torch_models
import cifar_mlx_adapter.models as mlx_models
from cifar_lightning import MODEL_NAMES
from cifar_lightning.core.weights import WeightsMismatchError
from cifar_mlx_adapter import build_model, count_parameters, load_weights, mlx_state, mlx_to_torch, torch_to_mlx


def test_registries_are_the_same():
    assert set(torch_models._BUILDERS) == set(mlx_models._BUILDERS) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_names_and_shapes_up_to_conv_layout(name):
    t = torch_models.build_model(name, 10)
    m = build_model(name, 10)
    torch_shapes = {k: tuple(v.shape) for k, v in t.state_dict().items() if not k.endswith("num_batches_tracked")}
    mlx_shapes = {k: tuple(v.shape) for k, v in mlx_state(m).items()}
    assert torch_shapes.keys() == mlx_shapes.keys()
    for key, shape in torch_shapes.items():
        expected = (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape
        assert mlx_shapes[key] == expected, key
    assert count_parameters(m) == torch_models.count_parameters(t)


@pytest.mark.parametrize("name", ["small_cnn", "fast"])
def test_weights_round_trip_exactly(name):
    t = torch_models.build_model(name, 10)
    for module in t.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    m = build_model(name, 10)
    load_weights(m, torch_to_mlx(t.state_dict(), m))
    back = mlx_to_torch(mlx_state(m), t)
    for key, value in t.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key


def test_mismatch_names_first_key_and_both_shapes():
    t = torch_models.build_model("small_cnn", 100)
    with pytest.raises(
        WeightsMismatchError, match=r"'fc2.weight' has shape \(100, 128\), the model expects \(10, 128\)"
    ):
        torch_to_mlx(t.state_dict(), build_model("small_cnn", 10))
    with pytest.raises(WeightsMismatchError, match="missing key 'conv1.weight'"):
        torch_to_mlx(torch_models.build_model("fast").state_dict(), build_model("small_cnn"))
    extra = {**mlx_state(build_model("small_cnn")), "head.weight": mx.zeros((10, 256))}
    with pytest.raises(WeightsMismatchError, match="unexpected key 'head.weight'"):
        mlx_to_torch(extra, torch_models.build_model("small_cnn"))


def test_fast_net_identity_init_and_frozen_parts():
    m = build_model("fast")
    w = np.array(m.block1.conv1.weight)  # (64, 3, 3, 24): dirac on the first 24 outputs
    assert w[5, 1, 1, 5] == 1 and w[5, 1, 1, 6] == 0 and w[5, 0, 1, 5] == 0
    trainable = {
        k for k, _ in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(m.trainable_parameters())
    }
    assert "whiten.bias" in trainable and "whiten.weight" not in trainable
    assert "block1.norm1.bias" in trainable and "block1.norm1.weight" not in trainable


def test_max_pool_for_export_equals_the_training_pool():
    """The export's max-pool (no slice: a 0/1 selection matmul drops the rows and columns a
    floor-mode pool leaves out) gives exactly the training pool's values, on sizes that
    divide and that do not (the fast net pools 31, 15 and 7 pixels), and the fast net's
    logits are bit-identical with every pool switched."""
    import numpy as np

    from cifar_mlx_adapter.models import FastNet, MaxPool2d

    rng = np.random.default_rng(0)
    for kernel, shape in ((2, (2, 31, 31, 4)), (2, (2, 5, 7, 3)), (3, (2, 4, 4, 8)), (2, (1, 8, 8, 2))):
        x = mx.array(rng.normal(size=shape).astype(np.float32))
        pool = MaxPool2d(kernel)
        plain = np.array(pool(x))
        pool.shapeless = True
        assert np.array_equal(np.array(pool(x)), plain), (kernel, shape)
    net = FastNet()
    net.eval()
    x = mx.array(rng.normal(size=(3, 32, 32, 3)).astype(np.float32))
    plain = np.array(net(x))
    for _, layer in net.named_modules():
        if isinstance(layer, MaxPool2d):
            layer.shapeless = True
    assert np.array_equal(np.array(net(x)), plain)
