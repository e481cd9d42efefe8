"""How the executor sizes Ray operators for the cluster it finds.  Unit tests (no Ray started)."""

from pipeline.config import load_config
from pipeline.executor import build_stages, fit_to_cluster, groups


def _resources(overrides):
    return [g[0].resources for g in groups(build_stages(load_config(profile="offline-fast", overrides=overrides)))]


def test_a_pipeline_that_fits_is_left_alone():
    res = _resources({"iqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": 1}}})
    assert [r.num_cpus for r in fit_to_cluster(res, 2.0)] == [r.num_cpus for r in res]


def test_actor_pools_never_leave_the_tasks_without_a_cpu():
    """With one CPU, a 0.5-CPU actor pool and 1-CPU tasks would wait for ever; scaled, the actors
    hold at most half the cluster and the largest task fits beside them."""
    res = _resources({"iqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": 1}},
                      "fiqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": [1, 2]}}})
    for cpus in (1.0, 0.5, 1.5):
        fit = fit_to_cluster(res, cpus)
        reserved = sum(r.num_cpus for r in fit if r.uses_actors)
        largest_task = max(r.num_cpus for r in fit if not r.uses_actors)
        assert reserved <= cpus / 2 + 1e-9 and reserved + largest_task <= cpus + 1e-9
        assert all(r.num_cpus > 0 for r in fit)
