"""The driver of a Ray run: plans the input shards, checks the output folder's run identity,
starts the actor pool, hands out shards and tracks their markers. It never holds a row: the
actors write the shards (:mod:`.worker`), so its memory stays flat whatever the corpus."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from ..errors import DistorchError
from ..library import CROP_CODES
from .inputs import InputShard, list_shards
from .shard_writer import DATA_DIRS, DONE_DIR, Layout
from .storage import Store, is_uri

RUN_FILE = "run.json"
SKIPPED_FILE = "skipped.json"
#: Written into run.json; an output folder of another layout version is refused.
LAYOUT_VERSION = 2
#: The CLI's defaults (``DEFAULT_BATCH_SIZE``, ``DEFAULT_DECODE_THREADS``).
DEFAULT_BATCH_SIZE = 8
DEFAULT_DECODE_THREADS = 2
#: Environment the driver hands the actors (library, graphs, ONNX Runtime, model cache).
FORWARDED_ENV = ("DISTORCH_VISION_LIBRARY", "DISTORCH_GRAPHS_DIR", "ORT_DYLIB_PATH", "DISTORCH_LOG",
                 "DISTORCH_THREADS", "COMFYUI_PATH", "DISTORCH_MODEL_CACHE", "DISTORCH_OPENVINO_EP")
#: -q / -v / -vv / -vvv as the library's log filter (the CLI's flags).
LOG_FILTERS = {-1: "error", 1: "info", 2: "debug", 3: "trace"}
#: Shards queued on an actor at once: the next one starts as soon as one finishes.
IN_FLIGHT_PER_ACTOR = 2
#: Tries of a shard whose actor died under it (a lost node); then the shard is reported failed.
SHARD_RETRIES = 2


@dataclass
class Summary:
    """What a run did. ``images`` and ``skipped`` count this run; ``skipped_total`` every
    image ``skipped.json`` lists (earlier runs included)."""

    images: int = 0
    skipped: list = field(default_factory=list)
    skipped_total: int = 0
    shards_total: int = 0
    shards_written: int = 0
    shards_already_done: int = 0
    seconds: float = 0.0
    actors: int = 0
    threads: int = 0
    cluster: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        earlier = self.skipped_total - len(self.skipped)
        tail = f" ({self.skipped_total} in all, listed in {SKIPPED_FILE})" if earlier else ""
        return (f"encoded {self.images} images in {self.seconds:.2f} s ({self.images_per_s:.1f} images/s); "
                f"{self.shards_written} shards written, {self.shards_already_done} of "
                f"{self.shards_total} already complete; {len(self.skipped)} images skipped{tail}")


def _outputs_list(outputs: Union[None, str, Iterable[str]]) -> list[str]:
    names = [o.strip() for o in (outputs.split(",") if isinstance(outputs, str) else outputs or [])]
    names = [o for o in names if o]
    # image_embeds feeds img_emb/*.npy, so it is always written (first).
    return ["image_embeds"] + [o for o in names if o != "image_embeds"]


def _check_number(what: str, v: Any, low: float, integer: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    if v is not None and (isinstance(v, bool) or not isinstance(v, kind) or v < low):
        valid = f"an integer ≥ {low:g}" if integer else f"a number ≥ {low:g}"
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"{what} is {v!r}; valid: {valid}")


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"distorch-vision ray: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- Ray


def _start_ray(address: Optional[str], verbosity: int) -> bool:
    """Connects to ``address``, or starts a new local instance when it is None: never a
    cluster someone left running (``ray.init()`` would join it, or wait forever for a dead
    one). True when this call started Ray (and so stops it)."""
    import ray

    if ray.is_initialized():
        return False
    # Workers import this package from where the driver did (a checkout, or the same install
    # on every node).
    parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (parent, os.environ.get("PYTHONPATH")) if p)
    kw: dict[str, Any] = dict(runtime_env={"env_vars": {"PYTHONPATH": path}},
                              logging_level=logging.INFO if verbosity > 0 else logging.WARNING,
                              log_to_driver=verbosity >= 0)
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_log.addFilter(_quiet_token_default)
    try:
        if not address or address == "local":
            ray.init(address="local", include_dashboard=False, **kw)
        else:
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError) as e:
                raise DistorchError(
                    "DV_ERR_RUNTIME",
                    f"cannot join the Ray cluster at {address}: {str(e).strip().splitlines()[-1]}; start it "
                    "with `ray start --head` (RAY_AUTH_MODE=token, README), or leave the address out for a "
                    "new local instance") from None
    finally:
        auth_log.removeFilter(_quiet_token_default)
    return True


def _quiet_token_default(record: logging.LogRecord) -> bool:
    """Drops Ray's note that a new local instance uses token authentication (its default
    since 2.5x, said on every run); every other message of that logger stays."""
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _size_pool(device: Optional[str], num_actors: Optional[int], gpus_per: Optional[float],
               cpus_per: Optional[float], shards: int) -> tuple[int, float, float]:
    """``(actors, CPUs, GPUs)`` per actor from the alive nodes: by default one model per GPU,
    or one CPU actor per node holding that node's CPUs. Refuses a pool the nodes cannot hold
    (Ray would wait for it forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_cpus = [float(r.get("CPU", 0)) for r in nodes]
    node_gpus = [float(r.get("GPU", 0)) for r in nodes]
    on_gpu = (device or "").startswith("cuda") or (device is None and sum(node_gpus) > 0)
    gpus = gpus_per if gpus_per is not None else (1.0 if on_gpu else 0.0)
    cpu_nodes = [c for c in node_cpus if c >= 1] or [1.0]
    if num_actors:
        actors = num_actors
    elif gpus:
        actors = max(1, int(sum(g // gpus for g in node_gpus)))
    else:
        actors = len(cpu_nodes)
    actors = max(1, min(actors, shards))  # no idle models
    if cpus_per is not None:
        cpus = cpus_per
    elif gpus:
        cpus = 1.0
    else:  # the node's CPUs, shared by the actors placed on it
        per_node = -(-actors // len(cpu_nodes))
        cpus = float(max(1, int(min(cpu_nodes) // per_node)))
    fits = sum(int(c // cpus) if cpus else actors for c in node_cpus)
    if gpus:
        fits = min(fits, sum(int(g // gpus) for g in node_gpus))
    if fits < actors:
        have = ", ".join(f"{c:g} CPU" + (f" + {g:g} GPU" if g else "") for c, g in zip(node_cpus, node_gpus))
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"{actors} actors × {cpus:g} CPUs" + (f" × {gpus:g} GPUs" if gpus else "") +
            f" do not fit on the cluster's nodes ({have}); use fewer actors (num_actors) or fewer "
            "CPUs/GPUs per actor (num_cpus_per_actor, num_gpus_per_actor)")
    return actors, cpus, gpus


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, DistorchError):
        return cause.message
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


# ---------------------------------------------------------------------------------- run identity


def _check_run(store: Store, run: dict, model_label: str) -> None:
    """Refuses an output folder made with other settings (or another model's weights), naming
    each difference; records this run's settings in a new folder."""
    prev = store.read_json(RUN_FILE)
    if prev is None:
        store.put_json(RUN_FILE, run)
        return
    if prev.get("layout") != LAYOUT_VERSION or "identity" not in prev:
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"{store.name(RUN_FILE)} was written by an earlier version of distorch_vision.ray "
            "(no model identity, rows not normalised); use a new output folder")
    diff = []
    a, b = prev["identity"], run["identity"]
    if a.get("model_id") != b.get("model_id"):
        diff.append(f"model: encoded with {prev.get('model')} (weights {str(a.get('model_id'))[:16]}), "
                    f"this run uses {model_label} (weights {str(b.get('model_id'))[:16]})")
    else:
        for k in ("family", "config", "dtype"):
            if a.get(k) != b.get(k):
                diff.append(f"{k}: was {a.get(k)!r}, now {b.get(k)!r}")
    for k in ("outputs", "crop", "normalize"):
        if prev.get(k) != run[k]:
            diff.append(f"{k}: was {prev.get(k)!r}, now {run[k]!r}")
    if diff:
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"{store.name('')} holds a run with other settings ({'; '.join(diff)}); "
            "use another output folder or the same settings")


def _markers(store: Store, layout: Layout, shards: list[InputShard]) -> dict[int, dict]:
    """The done-markers present, read concurrently (an object store answers slowly)."""
    present = set(store.list(DONE_DIR))
    wanted = [s.index for s in shards if f"{layout.tag(s.index)}.json" in present]
    with ThreadPoolExecutor(16) as pool:
        got = pool.map(lambda i: store.read_json(layout.done(i)), wanted)
        return {i: m for i, m in zip(wanted, got) if isinstance(m, dict)}


# ---------------------------------------------------------------------------------- encode


def encode(
    inputs: Sequence[Union[str, os.PathLike]],
    out: Union[str, os.PathLike],
    model: Union[str, os.PathLike],
    *,
    device: Optional[str] = None,
    virtual_vram_gb: float = 4.0,
    donor_device: str = "cpu",
    expert_mode_allocations: str = "",
    eject_models: bool = True,
    dtype: Optional[str] = None,
    donor_policy: Optional[str] = None,
    micro_batch: Optional[int] = None,
    cpu_engine: Optional[str] = None,
    openvino_ep: Optional[str] = None,
    comfyui_path: Optional[str] = None,
    extra_model_paths: Optional[str] = None,
    graphs_dir: Optional[str] = None,
    ort_library: Optional[str] = None,
    outputs: Union[None, str, Iterable[str]] = None,
    crop: str = "center",
    normalize: bool = True,
    strict: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_size: int = 1024,
    num_actors: Optional[int] = None,
    num_gpus_per_actor: Optional[float] = None,
    num_cpus_per_actor: Optional[float] = None,
    decode_threads: int = DEFAULT_DECODE_THREADS,
    address: Optional[str] = None,
    verbosity: int = 0,
    progress: bool = True,
) -> Summary:
    """Encodes ``inputs`` into ``out`` on Ray (see the package doc); returns a :class:`Summary`.

    ``inputs``, ``out`` and ``model``: local paths or URIs (``s3://``, ``gs://``, ``hdfs://``,
    ``file://``); a model URI is fetched once per node. Loader arguments as
    :func:`distorch_vision.load`; ``outputs``, ``crop``, ``strict``, ``batch_size``,
    ``decode_threads``, ``ort_library``, ``graphs_dir`` as the CLI's flags (``image_embeds`` is
    always written). ``normalize``: L2-normalise ``img_emb`` rows as clip-retrieval does (False
    keeps the model's rows). ``address``: a cluster (``"auto"``, ``"HOST:6379"``); None starts a
    new local Ray instance (never one left running). ``num_gpus_per_actor``: default 1 when the
    device is CUDA (or unset and the cluster has GPUs), else 0. ``num_actors``: default one per
    GPU, or one CPU actor per node. ``num_cpus_per_actor``: default 1 for GPU actors, else the
    node's CPUs; a CPU actor's ONNX Runtime uses the CPUs it holds. ``verbosity``: -1 errors
    only, 1–3 more (the CLI's -q / -v). Raises :class:`DistorchError` when a shard failed
    (finished shards are kept) or, under ``strict``, at the first unreadable image.
    """
    if crop not in CROP_CODES:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"crop is {crop!r}; valid: {', '.join(CROP_CODES)}")
    _check_number("batch_size", batch_size, 1, integer=True)
    _check_number("decode_threads", decode_threads, 1, integer=True)
    _check_number("num_actors", num_actors, 1, integer=True)
    _check_number("micro_batch", micro_batch, 1, integer=True)
    _check_number("num_gpus_per_actor", num_gpus_per_actor, 0)
    _check_number("num_cpus_per_actor", num_cpus_per_actor, 0)
    for what, flag in (("normalize", normalize), ("strict", strict), ("eject_models", eject_models)):
        if not isinstance(flag, bool):
            raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"{what} is {flag!r}; valid: True or False (a bool)")
    t0 = time.monotonic()
    store = Store(os.fspath(out))
    out_names = _outputs_list(outputs)
    shards = list_shards(inputs, shard_size)
    store.ensure_folder()
    layout = Layout(max(4, len(str(len(shards) - 1))))
    store.remove_temporaries(DATA_DIRS + (DONE_DIR, ""))
    markers = _markers(store, layout, shards)
    unfinished = {s.index for s in shards if markers.get(s.index, {}).get("fingerprint") != s.fingerprint()}

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if verbosity:
        env["DISTORCH_LOG"] = LOG_FILTERS[max(-1, min(3, verbosity))]
    # Paths as the driver means them: the actors run in other folders.
    absolute = lambda p: None if p is None else os.path.abspath(os.fspath(p))  # noqa: E731
    model = os.fspath(model)
    if not is_uri(model) and os.path.exists(model):
        model = os.path.abspath(model)
    ort_library = absolute(ort_library)
    load_kwargs = dict(device=device, virtual_vram_gb=virtual_vram_gb, donor_device=donor_device,
                       expert_mode_allocations=expert_mode_allocations, eject_models=eject_models,
                       dtype=dtype, comfyui_path=absolute(comfyui_path),
                       extra_model_paths=absolute(extra_model_paths), graphs_dir=absolute(graphs_dir),
                       donor_policy=donor_policy, micro_batch=micro_batch, cpu_engine=cpu_engine,
                       openvino_ep=absolute(openvino_ep))
    job = {"out": store.uri, "width": layout.width, "outputs": out_names, "crop": crop,
           "normalize": normalize, "strict": strict, "batch_size": batch_size,
           "decode_threads": decode_threads}
    summary = Summary(shards_total=len(shards))
    import ray

    started = _start_ray(address, verbosity)
    actors: list = []
    try:
        summary.cluster = ray.get_runtime_context().gcs_address
        n, cpus, gpus = _size_pool(device, num_actors, num_gpus_per_actor, num_cpus_per_actor,
                                   max(1, len(unfinished)))
        from .worker import ShardEncoder

        remote = ray.remote(ShardEncoder).options(
            num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD",
            # A lost node: the actor starts again elsewhere and its shards are retried.
            max_restarts=-1, max_task_retries=SHARD_RETRIES)
        actors = [remote.remote(model, load_kwargs, ort_library, env, job) for _ in range(n)]
        infos = ray.get([a.info.remote() for a in actors])
        for i in infos:
            if "error" in i:
                raise DistorchError(*i["error"])
        ids = {repr(i["identity"]) for i in infos}
        if len(ids) > 1:
            hosts = ", ".join(f"{i['host']}: {i['identity']['model_id'][:16]}" for i in infos)
            raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                                f"{model} is not the same file on every node ({hosts}); copy one model everywhere")
        identity = infos[0]["identity"]
        summary.actors, summary.threads = n, infos[0]["threads"]
        label = os.path.basename(model.split("?", 1)[0])
        _check_run(store, {"layout": LAYOUT_VERSION, "model": label, "identity": identity,
                           "outputs": out_names, "crop": crop, "normalize": normalize}, label)
        todo = [s for s in shards
                if s.index in unfinished or markers[s.index].get("model_id") != identity["model_id"]]
        summary.shards_already_done = len(shards) - len(todo)
        failed = _run_shards(ray, actors, todo, markers, summary, progress)
    finally:
        if started:
            ray.shutdown()
        else:  # the caller's Ray: the pool was this call's
            for a in actors:
                ray.kill(a)

    # Every image skipped so far, across runs (from the shards' markers), in shard order.
    all_skipped = [sk for s in shards for sk in markers.get(s.index, {}).get("skipped", [])]
    summary.skipped_total = len(all_skipped)
    if summary.shards_written or store.read_json(SKIPPED_FILE) is None:
        store.put_json(SKIPPED_FILE, all_skipped)
    summary.seconds = time.monotonic() - t0
    if failed:
        first = "; ".join(f"{s.source}: {why}" for s, why in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise DistorchError("DV_ERR_RUNTIME",
                            f"{len(failed)} of {len(shards)} shards failed: {first}{more}; the "
                            f"{summary.shards_written + summary.shards_already_done} finished shards are "
                            "kept, rerun to encode the others")
    return summary


def _run_shards(ray: Any, actors: list, todo: list[InputShard], markers: dict[int, dict],
                summary: Summary, progress: bool) -> list[tuple[InputShard, str]]:
    """Hands the shards to the actors (a few queued on each), records each marker as it comes
    back; returns the shards that failed with why. Stops at once under ``strict``."""
    queue = deque(todo)
    load = {i: 0 for i in range(len(actors))}
    running: dict = {}
    failed: list[tuple[InputShard, str]] = []
    t0 = time.monotonic()
    while queue or running:
        for i, a in enumerate(actors):
            while load[i] < IN_FLIGHT_PER_ACTOR and queue:
                s = queue.popleft()
                running[a.encode_shard.remote(s.spec())] = (i, s)
                load[i] += 1
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            i, s = running.pop(ref)
            load[i] -= 1
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as e:
                failed.append((s, _error_text(e)))
                _log(progress, f"shard {s.index} ({s.source}) failed: {_error_text(e)}")
                continue
            if res.get("failed") == "strict":
                for ref2 in running:
                    ray.cancel(ref2, force=False)
                raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                                    f"strict: stopping at an unreadable image: {res['message']}")
            if res.get("failed"):
                failed.append((s, res["message"]))
                _log(progress, f"shard {s.index} ({s.source}) failed: {res['message']}")
                continue
            markers[s.index] = res
            summary.images += res["rows"]
            summary.skipped.extend(res["skipped"])
            summary.shards_written += 1
            done = summary.shards_written + len(failed)
            rate = summary.images / max(1e-9, time.monotonic() - t0)
            _log(progress, f"shard {s.index} ({s.source}): {res['rows']} images, {len(res['skipped'])} "
                           f"skipped [{done}/{len(todo)} shards, {rate:.1f} images/s]")
    return failed
