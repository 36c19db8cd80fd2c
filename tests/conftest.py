"""Every test starts from the same random state (seeded here, per test, not at module level, so a
test's result does not depend on which tests ran before it in the process)."""
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_every_test() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
