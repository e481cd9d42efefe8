"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for a whole test module (start-up costs seconds), shut down after it."""
    import ray

    from pipeline.runner import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()
