import pytest
import torch

from cifar_lightning import MODEL_NAMES, build_model, count_parameters


@pytest.mark.parametrize("name,expected", [("small_cnn", 573_194), ("resnet18", 11_173_962)])
def test_parameter_counts_match_the_original_project(name, expected):
    assert count_parameters(build_model(name, 10)) == expected


def test_fast_net_is_airbench_sized():
    model = build_model("fast", 10)
    assert 1.9e6 < count_parameters(model) < 2.1e6
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "whiten.weight" in frozen and "block1.norm1.weight" in frozen
    assert model.whiten.weight.shape == (24, 3, 2, 2)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("classes", [10, 100])
def test_output_shapes(name, classes):
    model = build_model(name, classes).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*small_cnn"):
        build_model("vgg")


def test_channels_last_computes_the_same_logits():
    from cifar_lightning import CIFARClassifier

    torch.manual_seed(0)
    plain = CIFARClassifier("fast", 10).eval()
    nhwc = CIFARClassifier("fast", 10, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.model.block1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)
