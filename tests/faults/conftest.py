"""Fixtures of the fault tests: the address of the shared local Ray their CLI drivers join."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_address(local_ray) -> str:
    import ray

    return ray.get_runtime_context().gcs_address
