"""Executors: they walk the pipeline (:data:`pipeline.stages.STAGES`) and nothing else.

- :func:`ray_dataset`: the lazy Ray Data dataset of a listing table.  Consecutive stages that run
  as tasks with equal resources become one Ray task (the batch goes from stage to stage without
  becoming a Ray block in between); a stage that asks for actors (or a GPU) becomes an actor pool
  of its own.  Each stage is set up once per worker process (tasks) or per actor.
- :class:`LocalExecutor`: the same stage objects in this process, for ``faceqc explain``, the
  benchmark's baseline loop and tests that score in-memory images.

Neither knows what any stage does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import math
import os
from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from .config import Config, Resources
from .errors import MissingDependency
from .io.listing import Entry, entries_table
from .registry import models_for
from .schema import conform, output_schema
from .stages import STAGES
from .stages.base import Batch, Output, Stage, objarray


def build_stages(cfg: Config) -> List[Stage]:
    return [cls(cfg) for cls in STAGES]


def as_batch(out: Output) -> Batch:
    """A stage's output as the next stage's input (Ray does this itself between operators)."""
    if isinstance(out, pa.Table):
        return {c: out.column(c).to_numpy(zero_copy_only=False) for c in out.column_names}
    return out


def iter_stages(stages: Sequence[Stage], batch: Batch) -> Iterator[Output]:
    """Every output of ``stages`` over one batch, as a generator: a stage that returns a
    generator of batches (a video's frames) feeds each batch to the stages after it as it comes,
    so that no more than one of them is in memory at a time."""
    if not stages:
        yield batch
        return
    out = stages[0].process(as_batch(batch))
    if isinstance(out, (dict, pa.Table)):
        yield from iter_stages(stages[1:], out)
        return
    for part in out:
        yield from iter_stages(stages[1:], part)


def concat_outputs(outs: List[Output]) -> Output:
    """Several outputs of one stage as one (tables, or dicts of equally long columns)."""
    if len(outs) == 1:
        return outs[0]
    if all(isinstance(o, pa.Table) for o in outs):
        return pa.concat_tables(outs, promote_options="permissive")
    batches = [as_batch(o) for o in outs]
    cols = {}
    for k in batches[0]:
        items = [x for b in batches for x in b[k]]
        if batches[0][k].dtype == object:
            cols[k] = objarray(items)
        else:
            cols[k] = np.concatenate([np.asarray(b[k]) for b in batches])
    return cols


def run_stages(stages: Sequence[Stage], batch: Batch) -> Output:
    """The stages' output over one batch, in one piece."""
    outs = list(iter_stages(stages, batch))
    return concat_outputs(outs) if outs else batch


# ------------------------------------------------------------------------------ Ray
class _DropIdleCpuFalseAlarm(logging.Filter):
    """Ray Data warns that a cluster "does not have any available CPUs" when a snapshot of the
    cluster's free CPUs, taken as a dataset starts or ends, still counts tasks that just finished.
    On a local Ray that faceqc started itself the warning is always that false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


def _quiet_ray_logging() -> logging.handlers.MemoryHandler:
    """Ray's own console output goes to files in its session folder: Ray Data keeps only its file
    handler (``logs/ray-data/ray-data.log``), and the "ray" logger (start-up lines, the token
    authentication notice) is buffered until the session folder exists (see :func:`init_ray`)."""
    import ray.data  # noqa: F401 - configures Ray Data's loggers on import

    data_logger = logging.getLogger("ray.data")
    for h in list(data_logger.handlers):
        if h.get_name() == "console":
            data_logger.removeHandler(h)
    ray_logger = logging.getLogger("ray")
    for h in list(ray_logger.handlers):
        ray_logger.removeHandler(h)
    buf = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    ray_logger.addHandler(buf)
    return buf


RAY_PIN = "2.60.0"


def check_ray(address: Optional[str] = None) -> None:
    """Ray Data, and Ray Client for ``ray://`` addresses, are importable (MissingDependency, one
    line naming what to install, otherwise): checked before any work."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise MissingDependency(f'faceqc runs on Ray, which is not installed: pip install "ray[data]=={RAY_PIN}"')
    try:
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"Ray Data cannot be imported ({e}): pip install \"ray[data]=={RAY_PIN}\"") from e
    if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise MissingDependency(f"--address {address} connects through Ray Client, which is not installed: "
                                f"pip install \"ray[client]=={RAY_PIN}\"")


def init_ray(address: Optional[str] = None) -> Optional[str]:
    """Join the cluster at ``address``, or start a private local Ray on this machine (never a
    stray cluster some other program left running); return the folder of Ray's own logs, where
    its console output goes instead (``driver.log`` there, and Ray Data's ``ray-data/``).

    ``FACEQC_RAY_NUM_CPUS`` limits a local Ray's CPUs (tests run with 1 to prove they do not
    depend on parallelism)."""
    import ray

    if ray.is_initialized():
        return ray_log_dir()
    buf = _quiet_ray_logging()
    kw: dict = {"ignore_reinit_error": True, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            if os.environ.get("FACEQC_RAY_NUM_CPUS"):
                kw["num_cpus"] = int(os.environ["FACEQC_RAY_NUM_CPUS"])
            ray.init(address="local", include_dashboard=False, **kw)
            logging.getLogger("ray.data.dataset").addFilter(_DropIdleCpuFalseAlarm())
    except Exception:
        logging.getLogger("ray").removeHandler(buf)
        for record in buf.buffer:  # what Ray said before it failed belongs on the console
            logging.getLogger("faceqc").warning("ray: %s", record.getMessage())
        raise
    logs = ray_log_dir()
    target = logging.FileHandler(os.path.join(logs, "driver.log")) if logs else logging.NullHandler()
    target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    buf.setTarget(target)
    buf.flush()
    ray_logger = logging.getLogger("ray")
    ray_logger.removeHandler(buf)
    ray_logger.addHandler(target)
    buf.close()
    return logs


def ray_log_dir() -> Optional[str]:
    """``<session>/logs`` of the Ray instance this process is connected to."""
    try:
        import ray

        rc = ray.get_runtime_context()
        d = os.path.join(rc.get_temp_dir(), rc.get_session_name(), "logs")
        return d if os.path.isdir(d) else None
    except Exception:  # noqa: BLE001 - informative only
        return None


_READY: dict = {}  # per worker process: chain key -> its set-up stages


class TaskChain:
    """What one Ray task runs: a chain of stages, set up once per worker process.  Ray ships a
    fresh copy of this object with every task; the set-up stages are found again by ``key``, a
    digest of the full configuration computed once on the driver."""

    def __init__(self, stages: Sequence[Stage], cfg: Config, counter=None):
        self.stages = list(stages)
        self.counter = counter
        text = json.dumps([cfg.to_dict(redact=False), [s.name for s in stages]], sort_keys=True, default=str)
        self.key = hashlib.sha256(text.encode()).hexdigest()

    def __call__(self, batch: Batch) -> Iterator[Output]:
        _count_started(self.counter, batch)
        ready = _READY.get(self.key)
        if ready is None:
            for st in self.stages:
                st.setup()
            if len(_READY) > 16:
                _READY.clear()
            ready = _READY[self.key] = self.stages
        return iter_stages(ready, batch)  # a generator: Ray Data passes on each output as it comes


class ActorStage:
    """What one actor of an actor pool runs: one stage, set up when the actor starts."""

    def __init__(self, stage: Stage, counter=None):
        self.stage, self.counter = stage, counter
        stage.setup()

    def __call__(self, batch: Batch) -> Output:
        _count_started(self.counter, batch)
        return self.stage.process(batch)


def _count_started(counter, batch: Batch) -> None:
    """Tell the run's :class:`WorkCounter` that this batch's rows start (again, if a lost node's
    task is redone): fire and forget."""
    if counter is None:
        return
    try:
        counter.add.remote(len(batch["uri"]))
    except Exception:  # noqa: BLE001 - informative only
        pass


class WorkCounter:
    """Rows the first stage started, every execution counted: what a run redid after a lost
    node or worker = started - written.  A zero-CPU actor on the driver's node (made by
    :func:`work_counter`)."""

    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += int(n)

    def total(self) -> int:
        return self.rows


def work_counter():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    # on the driver's node (hard affinity): a lost worker node never takes the count with it
    return ray.remote(num_cpus=0, max_restarts=0)(WorkCounter).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()


def alive_nodes() -> dict:
    """{node id: address} of the Ray nodes alive now."""
    import ray

    try:
        return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in ray.nodes() if n.get("Alive")}
    except Exception:  # noqa: BLE001 - informative only
        return {}


def ray_kwargs(res: Resources, cluster_cpus: float = 0) -> dict:
    """map_batches keyword arguments for a stage's resources.  Actor stages without a set
    concurrency autoscale from 1 to as many actors as the cluster's CPUs hold."""
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    kw: dict = {"num_cpus": res.num_cpus, "batch_size": res.batch_size}
    if res.num_gpus:
        kw["num_gpus"] = res.num_gpus
    c = res.concurrency
    if res.uses_actors:
        if c is None:
            top = max(1, int(cluster_cpus // max(res.num_cpus, 1e-3))) if cluster_cpus else None
            kw["compute"] = ActorPoolStrategy(min_size=1, max_size=top)
        elif isinstance(c, tuple):
            kw["compute"] = ActorPoolStrategy(min_size=c[0], max_size=c[1])
        else:
            kw["compute"] = ActorPoolStrategy(size=c)
    elif c is not None:
        kw["compute"] = TaskPoolStrategy(size=c)
    return kw


def groups(stages: Sequence[Stage]) -> List[List[Stage]]:
    """Stages as Ray operators: each actor stage alone, consecutive task stages with equal
    resources together."""
    out: List[List[Stage]] = []
    for st in stages:
        r = st.resources
        prev = out[-1][-1].resources if out else None
        if not r.uses_actors and prev is not None and not prev.uses_actors and \
                (r.num_cpus, r.num_gpus, r.concurrency) == (prev.num_cpus, prev.num_gpus, prev.concurrency):
            out[-1].append(st)
        else:
            out.append([st])
    return out


def fit_to_cluster(resources: list, cluster_cpus: float) -> list:
    """Each operator's resources, CPUs scaled down where the pipeline would not fit the cluster:
    the actor pools' minimum actors hold their CPUs for the whole run, so with too few CPUs left
    for the largest task the run would wait for ever.  Actor pools then keep at most half the
    cluster, and tasks share what is left (fractions of a CPU are fine to Ray)."""
    def min_actors(r) -> int:
        c = r.concurrency
        return 1 if c is None else (c[0] if isinstance(c, tuple) else int(c))

    reserved = sum(min_actors(r) * r.num_cpus for r in resources if r.uses_actors)
    task_max = max([r.num_cpus for r in resources if not r.uses_actors] or [0.0])
    if not cluster_cpus or reserved + task_max <= cluster_cpus:
        return list(resources)
    scale_a = min(1.0, cluster_cpus / 2 / reserved) if reserved else 1.0
    left = cluster_cpus - reserved * scale_a
    scale_t = min(1.0, left / task_max) if task_max else 1.0
    out = [r.model_copy(update={"num_cpus": math.floor(r.num_cpus * (scale_a if r.uses_actors else scale_t) * 1000) / 1000})
           for r in resources]
    logging.getLogger("faceqc").info("the stages' CPUs were scaled to fit a cluster of %g CPUs: %s", cluster_cpus,
                                     [r.num_cpus for r in out])
    return out


def block_rows(n: int, batch_size: int, cluster_cpus: float) -> int:
    """Rows per input block, which is also rows per committed part file.  Small enough that all
    CPUs are busy from the start (4 blocks per CPU at least) and that a killed run loses (and
    its restart redoes) at most ~5% of the run: one block per CPU in flight, blocks of at most
    n / (20 x CPUs) rows, never under 4.  Large enough (up to 4 batches) that per-task overhead
    stays small."""
    cpus = max(1, int(cluster_cpus))
    per_cpu = -(-n // (cpus * 4))
    return max(1, min(batch_size * 4, per_cpu, max(4, n // (20 * cpus))))


def ray_dataset(table: pa.Table, cfg: Config, counter=None):
    """The lazy Ray dataset of a listing table (uri, size, mtime, extra.*): one output row per
    listed row, in the columns of :func:`pipeline.fusion.fuse_row` (before the sink conforms them)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # faceqc reports progress in images itself (pipeline.progress)
    ctx.print_on_execution_start = False
    cluster_cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    stages = build_stages(cfg)
    step = block_rows(table.num_rows, stages[0].resources.batch_size, cluster_cpus)
    # from_blocks: block boundaries kept as given (one block -> one part file), and no metadata tasks
    ds = ray.data.from_blocks([table.slice(i, step) for i in range(0, max(1, table.num_rows), step)])
    grouped = groups(stages)
    fitted = fit_to_cluster([g[0].resources for g in grouped], cluster_cpus)
    for i, (group, res) in enumerate(zip(grouped, fitted)):
        kw = ray_kwargs(res, cluster_cpus)
        count = counter if i == 0 else None  # rows started = rows the first operator takes
        if group[0].resources.uses_actors:
            actor = type(f"{type(group[0]).__name__}Actor", (ActorStage,), {})
            ds = ds.map_batches(actor, fn_constructor_args=(group[0], count), batch_format="numpy",
                                zero_copy_batch=True, **kw)
        else:
            ds = ds.map_batches(TaskChain(group, cfg, count), batch_format="numpy", zero_copy_batch=True, **kw)
    return ds


# ------------------------------------------------------------------------------ in process
class LocalExecutor:
    """Every stage set up once in this process; batches walk the list in order."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stages = build_stages(cfg)
        for st in self.stages:
            st.setup()

    def run(self, batch: Batch, start: str = "decode") -> Output:
        names = [s.name for s in self.stages]
        return run_stages(self.stages[names.index(start):], batch)

    def iter_run(self, batch: Batch, start: str = "decode") -> Iterator[Output]:
        names = [s.name for s in self.stages]
        return iter_stages(self.stages[names.index(start):], batch)

    def iter_clips(self, table: pa.Table, batch_size: int = 16):
        """(rows, clips) per output of the pipeline over a listing table: the rows that pass
        straight on (images) and the clips completed (:class:`pipeline.video.collect.Clip`)."""
        from .video.collect import ClipAssembler

        assembler = ClipAssembler(self.cfg)
        for off in range(0, table.num_rows, batch_size):
            for out in self.iter_run(as_batch(table.slice(off, batch_size))):
                yield assembler.add(out)
        assembler.check_done()

    def score_table(self, table: pa.Table, batch_size: int = 16) -> pa.Table:
        """Output rows of a listing table (one per file, a video's clip row included), conformed
        to the output schema."""
        from .video.collect import main_rows

        schema = output_schema(table, models_for(self.cfg), self.cfg.profile)
        parts = [main_rows(rows, clips, schema) for rows, clips in self.iter_clips(table, batch_size)]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def score_entries(self, entries: List[Entry], batch_size: int = 16) -> pa.Table:
        return self.score_table(entries_table(entries), batch_size)

    def score_images(self, images: Iterable[np.ndarray], names: Optional[Iterable[str]] = None) -> pa.Table:
        """Score decoded RGB uint8 arrays (reading and decoding skipped)."""
        images = list(images)
        n = len(images)
        names = list(names) if names is not None else [f"image-{i}" for i in range(n)]
        batch = {
            "uri": np.array(names, dtype=object), "size": np.full(n, -1, np.int64),
            "mtime": np.full(n, np.nan), "status": np.full(n, "ok", dtype=object),
            "error": np.full(n, "", dtype=object),
            "width": np.array([im.shape[1] for im in images], np.int32),
            "height": np.array([im.shape[0] for im in images], np.int32),
            "image": objarray(images),
        }
        schema = output_schema(None, models_for(self.cfg), self.cfg.profile)
        from .video.collect import with_media

        return conform(with_media(self.run(batch, start="detect")), schema)
