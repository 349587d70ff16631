"""scripts/ray_encode.py and distorch_vision.ray as a user runs them, each in a driver process of
its own (its own Ray files and token): a new local instance unless an address is given (never a
cluster someone left on the machine, live or dead), quiet output that names a skipped file once,
Ctrl-C that stops cleanly, a killed driver that loses and duplicates nothing, and the driver's
memory flat from 400 to 10,000 images."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_helpers import MODEL, ROOT, free_port, make_images, ray_env, read_out, short_tmp

SCRIPT = [sys.executable, str(ROOT / "scripts/ray_encode.py"), "--model", str(MODEL), "--device", "cpu"]


@pytest.fixture
def env(library_path):
    tmp = short_tmp("dvrl-")
    e = ray_env(tmp)
    e["DISTORCH_VISION_LIBRARY"] = str(library_path)
    yield e
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """1200 tiny images, 48 shards of 25 (enough for a run to be stopped in the middle)."""
    d = tmp_path_factory.mktemp("ray-many") / "images"
    make_images(d, 1200, seed=21)
    return d


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (ln.split() for ln in out.splitlines()) if int(s) == sid]


def test_without_address_a_new_local_instance_never_a_users_cluster(env, tmp_path, library_path):
    folder = tmp_path / "images"
    make_images(folder, 6)
    # A dead cluster named by RAY_ADDRESS: ray.init() would retry it forever.
    dead = dict(env, RAY_ADDRESS=f"127.0.0.1:{free_port()}")
    r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "a"), "--json"], env=dead,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == 6

    # A live one, started the way a user does (`ray start --head`), in the same Ray temp folder:
    # its address file is where ray.init() looks, and it accepts our token.
    port = free_port()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--port", str(port), "--num-cpus", "1",
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            env=dict(env, RAY_AUTH_MODE="token"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address_file = Path(env["RAY_TMPDIR"]) / "ray/ray_current_cluster"
        deadline = time.monotonic() + 60
        while not (address_file.exists() and address_file.read_text().strip().endswith(f":{port}")):
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.2)
        r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "b"), "--json"], env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["images"] == 6 and not got["cluster"].endswith(f":{port}"), got
        # --address joins it (with RAY_AUTH_MODE=token, as the README's recipe says).
        users = address_file.read_text().strip()
        r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "c"), "--json",
                            "--address", users, "--num-cpus", "1"], env=dict(env, RAY_AUTH_MODE="token"),
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["cluster"] == users
    finally:
        head.terminate()  # `ray start --block` stops its processes on SIGTERM
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        deadline = time.monotonic() + 30
        while _session_pids(head.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _session_pids(head.pid)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "ray start --head left processes behind"


def test_script_output_is_quiet_and_names_a_skipped_file_once(env, tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 5)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "a")], env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    # No error-level line from Ray, no token note, no traceback: progress, the skip, the summary.
    for noise in ("max_restarts", "Token authentication", "Traceback", " E ", "WARNING"):
        assert noise not in r.stderr, r.stderr
    skip = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(skip) == 1 and skip[0].count(str(corrupt)) == 1, r.stderr
    assert r.stdout.strip().endswith("1 images skipped"), r.stdout
    listed = json.loads((tmp_path / "a/skipped.json").read_text())
    assert listed == [{"file": str(corrupt), "reason": listed[0]["reason"], "key": str(corrupt)}]
    # A resumed run says how many are listed in all; -q says nothing.
    r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "a")], env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.stdout.strip().endswith("0 images skipped (1 in all, listed in skipped.json)"), r.stdout
    r = subprocess.run([*SCRIPT, "-q", "--images", str(folder), "--out", str(tmp_path / "b")], env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    # A bad option value: one error line naming it.
    r = subprocess.run([*SCRIPT, "--images", str(folder), "--out", str(tmp_path / "c"), "--micro-batch", "0"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: micro_batch is 0; valid: an integer ≥ 1"]


def _start(env, many, out, *extra):
    return subprocess.Popen([*SCRIPT, "--images", str(many), "--out", str(out), "--shard-size", "25", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_a_shard(p) -> None:
    while True:
        line = p.stderr.readline()
        assert line or p.poll() is None, "the run ended before writing a shard"
        if line.startswith("distorch-vision ray: shard"):
            return


def _complete_once(out: Path, many: Path) -> None:
    _, meta, _ = read_out(out)
    keys = [m["key"] for m in meta]
    assert len(keys) == len(set(keys)) == 1200 and set(keys) == {str(p) for p in many.rglob("*.*")}


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(env, many, tmp_path):
    out = tmp_path / "out"
    p = _start(env, many, out)
    _wait_for_a_shard(p)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped; rerun to resume (finished shards are kept)", err
    assert "Traceback" not in err, err
    assert not _session_pids(p.pid), "Ray processes left after Ctrl-C"
    done = len(list((out / "_done").glob("*.json")))
    assert 0 < done < 48
    r = subprocess.run([*SCRIPT, "--images", str(many), "--out", str(out), "--shard-size", "25", "--json"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["shards_already_done"] == done and got["shards_written"] == 48 - done, got
    _complete_once(out, many)


def test_a_killed_driver_loses_and_duplicates_nothing(env, many, tmp_path):
    out = tmp_path / "out"
    p = _start(env, many, out)
    _wait_for_a_shard(p)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    r = subprocess.run([*SCRIPT, "--images", str(many), "--out", str(out), "--shard-size", "25", "--json"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["shards_already_done"] + got["shards_written"] == 48, got
    _complete_once(out, many)
    # The killed run's own Ray processes go by themselves (README: the agents within a minute).
    for pid in _session_pids(p.pid):
        os.kill(pid, signal.SIGKILL)


def test_the_drivers_memory_is_flat_from_400_to_10000_images(library_path, tmp_path):
    """The benchmark of BENCHMARKS.md ("Ray driver memory"), with the tiny fixture model: each
    size a fresh driver; its peak RSS may not grow by more than 10 %."""
    env = dict(os.environ, DISTORCH_VISION_LIBRARY=str(library_path))
    r = subprocess.run([sys.executable, str(ROOT / "scripts/bench_ray.py"), "--memory", "400,10000", "--repeat", "1",
                        "--work", str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ratio"] <= 1.10, res
