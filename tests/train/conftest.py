import pytest

from compatctl.train import train_model
from tests.train.helpers import config


@pytest.fixture(scope="session")
def old_model(tmp_path_factory):
    """An old model on the first half of the classes, trained once for all train tests."""
    return train_model(config("classes=first_half"), out_dir=tmp_path_factory.mktemp("old"))
