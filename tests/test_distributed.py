"""Problems fanned out over a local 2-worker Ray cluster: the rows equal a local run's, a worker that dies turns its
problems into error rows that a resumed run retries, bad addresses and missing pieces fail with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
cloudpickle = pytest.importorskip("ray.cloudpickle")

import ponder  # noqa: E402
from ponder.collect.run import CollectConfig, run_collect  # noqa: E402
from ponder.distributed import RayPool  # noqa: E402
from ponder.errors import ConfigError  # noqa: E402
from ponder.evaluate import EvalConfig, run_eval  # noqa: E402
from ponder.improve.loop import Loop  # noqa: E402
from ponder.improve.recipe import ImproveRecipe  # noqa: E402
from ponder.jobs import LocalPool, Work, WorkerLost  # noqa: E402

# six puzzles, a sampling method and a step-level search guided by the shipped PRM (each worker loads both models)
SMALL = dict(task="game24", limit=6, methods=["self_consistency", "tot_bfs"], budgets=[4], concurrency=4, seed=5)
# what a row computes, whichever process ran it: not its seconds, nor the prompt tokens a prefix cache saved
SAME = ("answer", "correct", "any_correct", "solution")
COUNTED = ("prompt_tokens", "generated_tokens", "model_calls", "verifier_calls", "verifier_tokens")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in work below runs on Ray's workers


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance with two CPUs, shared by this module's tests (a pool keeps a connection it finds)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def computed(folder: Path) -> dict[tuple[str, int, str], tuple]:
    rows = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[(r["method"], r["budget"], r["problem_id"])] = (
            *(r.get(k) for k in SAME), *(r.get("usage", {}).get(k) for k in COUNTED),
            [n["text"] for n in r.get("trace", {}).get("nodes", [])], r.get("error_type"))
    return rows


def no_actors_left() -> bool:
    """Whether every actor of the pools so far has exited (`ray.kill` returns before the process is gone)."""
    deadline = time.monotonic() + 30
    while actor_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not actor_pids()


def actor_pids() -> list[int]:
    """The processes of the pool's Ray actors (Ray titles an actor's process `ray::CLASS`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_Actor"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_ray_rows_equal_local_rows_and_a_dead_worker_becomes_error_rows_that_resume_retries(tmp_path, cluster):
    local = tmp_path / "local"
    run_eval(EvalConfig(**SMALL), local, show_progress=False, pool=LocalPool())
    expected = computed(local)
    assert len(expected) == 12 and not any(row[-1] for row in expected.values())

    whole = tmp_path / "ray"
    ponder.evaluate(whole, pool=RayPool(workers=2), **SMALL)
    assert computed(whole) == expected

    # a worker killed as the first rows come back: its problems are error rows, the run still ends
    killed = tmp_path / "killed"
    results = killed / "results.jsonl"
    assert no_actors_left()

    def kill_one_worker() -> None:
        while not (results.exists() and results.read_text().count("\n") >= 1):
            time.sleep(0.05)
        os.kill(actor_pids()[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    run_eval(EvalConfig(**SMALL), killed, show_progress=False, pool=RayPool(workers=2))
    killer.join(timeout=5)
    partial = computed(killed)
    lost = [key for key, row in partial.items() if row[-1] == "WorkerLost"]
    assert len(partial) == 12 and lost
    assert all(partial[key] == expected[key] for key in partial if key not in lost)

    run_eval(EvalConfig(**SMALL), killed, show_progress=False, pool=RayPool(workers=2))  # resumed: retries them
    assert computed(killed) == expected
    assert no_actors_left()  # a pool's actors are gone once its run ends


@pytest.mark.slow
def test_ray_collect_writes_the_local_records(tmp_path, cluster):
    cfg = CollectConfig(labeller="oracle", task="game24", limit=4, samples=3, seed=2)
    run_collect(cfg, tmp_path / "local", show_progress=False)
    run_collect(cfg, tmp_path / "ray", show_progress=False, pool=RayPool(workers=2))
    for name in ("records.jsonl", "problems.jsonl"):
        local, ray_rows = ((tmp_path / d / name).read_text().splitlines() for d in ("local", "ray"))
        assert sorted(local) == sorted(ray_rows) and local


@pytest.mark.slow
def test_ray_search_rounds_of_the_improvement_loop_equal_local_ones(tmp_path, cluster):
    path = tmp_path / "tiny.yaml"  # three training puzzles, two proposals a state
    path.write_text(json.dumps({"task": "game24", "policy": "game24-policy", "verifier": "game24-prm", "rounds": 1,
                                "search": {"method": "tot_bfs", "n": 2, "problems": 3}}))  # JSON is YAML
    recipe = ImproveRecipe.load(str(path))
    Loop(recipe, tmp_path / "local", "test").search_phase(1)
    Loop(recipe, tmp_path / "ray", "test", RayPool(workers=2)).search_phase(1)
    local, on_ray = (computed(tmp_path / run / "round-1" / "search") for run in ("local", "ray"))
    assert len(local) == 3 and on_ray == local
    assert all((tmp_path / run / "round-1" / "prompts.json").exists() for run in ("local", "ray"))


def setup_pid() -> int:
    return os.getpid()


async def double_or_die(pid: int, job: int) -> int:
    """A stand-in for a search: job 3 kills the worker running it (as the kernel's OOM killer would)."""
    if job == 3:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    return 2 * job


def die_loading() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def refuse_to_load() -> None:
    raise ConfigError("no such model: nowhere")


def test_a_dying_worker_loses_only_its_jobs_and_a_failing_setup_raises_its_own_error(cluster):
    results: dict[int, object] = {}
    with RayPool(workers=2).open(Work(setup_pid, double_or_die)) as workers:
        workers.map(list(range(12)), 1, lambda job, result: results.__setitem__(job, result))
    assert sorted(results) == list(range(12))
    assert isinstance(results[3], WorkerLost)
    assert all(results[j] == 2 * j for j in results if not isinstance(results[j], WorkerLost))
    assert [j for j, r in results.items() if isinstance(r, WorkerLost)] == [3]  # the other worker ran the rest
    refusing = Work(refuse_to_load, double_or_die)
    with pytest.raises(ConfigError, match="no such model"), RayPool(workers=2).open(refusing):
        pass
    dying = Work(die_loading, double_or_die)
    with pytest.raises(WorkerLost, match="died while loading"), RayPool(workers=2).open(dying):
        pass


def test_more_workers_than_the_cluster_holds_is_refused(cluster):
    work = Work(setup_pid, double_or_die)
    with pytest.raises(ConfigError, match="cluster has 2 CPUs"), RayPool(workers=3).open(work):
        pass


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_bad_addresses_fail_at_once_with_one_line(tmp_path):
    for address, says in [("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"),
                          ("nonsense", "--ray takes local, auto, HOST:PORT")]:
        start = time.monotonic()
        done = run_cli("eval", "--limit", "1", "--methods", "cot", "--ray", address, "--out", str(tmp_path / "x"))
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert time.monotonic() - start < 60
    assert not (tmp_path / "x").exists()


def test_without_ray_installed_the_error_names_the_extra(tmp_path):
    # a `ray` that cannot be imported, first on the path
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    done = run_cli("collect", "oracle", "--limit", "1", "--ray", "local", "--out", str(tmp_path / "x"),
                   env={"PYTHONPATH": path})
    assert done.returncode == 2 and "pip install 'ponder[ray]'" in done.stderr
