import pytest
import torch


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    from vit_helpers import write_tiny_backbone_dir

    return str(write_tiny_backbone_dir(tmp_path_factory.mktemp("backbone")))
