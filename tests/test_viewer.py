"""The search-tree viewer: the trace observers a running search publishes through, the hub that holds saved and
live traces, `ponder view`'s bad input, and the page itself end to end in headless Chromium (Debian's `chromium`,
driven by Playwright) on real beam and MCTS searches with the shipped game24 policy and PRM.

Set PONDER_VIEWER_SHOTS=docs/images to write the README's screenshots (viewer-beam.png, viewer-mcts.png) there."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import ConfigError
from ponder.evaluate import EvalConfig, run_eval
from ponder.lm.base import LanguageModel
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.serve.app import Served, create_app
from ponder.serve.recipes import shipped_recipes
from ponder.serve.viewer import TraceHub, bind, page_form, server, url, viewer_app, viewer_router
from ponder.tasks import get_task
from ponder.trace import Trace, observing
from ponder.verifiers import get_verifier

CHROMIUM = "/usr/bin/chromium"


# -- the observers and the hub, without a browser ---------------------------------------------------------------

def test_observers_hear_every_trace_made_and_grown_while_inside_only():
    heard: list[tuple[str, int, bool]] = []
    with observing(lambda t, final: heard.append((t.problem_id, len(t.nodes), final))):
        trace = Trace("p", "beam")
        trace.add(0, "step one")
        trace.add(1, "step two")
        trace.changed(final=True)
    Trace("q", "cot").add(0, "unheard")
    assert heard == [("p", 1, False), ("p", 2, False), ("p", 3, False), ("p", 3, True)]


def test_a_search_that_raises_ends_its_traces_for_the_observers():
    task = get_task("game24")

    async def failing(task, problem, lm, verifier, cfg):  # a method that grows a tree, then its backend fails
        trace = Trace(problem.id, "failing")
        trace.add(0, "4 + 4 = 8 (left: 8 8 8)")
        await asyncio.sleep(0)
        raise RuntimeError("backend lost")

    class Unused(LanguageModel):
        name = "unused"

        async def generate_many(self, requests):
            raise AssertionError("not called")

    heard: list[tuple[str, bool, str | None]] = []
    with observing(lambda t, final: heard.append((t.problem_id, final, t.extra.get("error")))), \
            pytest.raises(RuntimeError, match="backend lost"):
        asyncio.run(search(task, task.from_text("4 4 8 8"), Unused(), None, failing, SearchConfig()))
    assert heard[-1] == (task.from_text("4 4 8 8").id, True, "RuntimeError: backend lost")
    assert sum(final for _, final, _ in heard) == 1


def test_hub_lists_live_traces_with_versions_and_keeps_only_the_newest_finished():
    hub = TraceHub(keep=2)
    with hub.observe():
        running = Trace("running", "mcts")
        done = []
        for i in range(3):
            t = Trace(f"done{i}", "beam")
            t.add(0, "x")
            t.changed(final=True)
            done.append(t)
        running.add(0, "a")
    listing = {e["problem_id"]: e for e in hub.listing()}
    assert set(listing) == {"running", "done1", "done2"}  # the oldest finished one is forgotten, a running one kept
    assert listing["running"]["running"] and listing["running"]["version"] == 2 and listing["running"]["nodes"] == 2
    assert not listing["done2"]["running"] and listing["done2"]["version"] == 3
    page = hub.get(listing["running"]["key"])
    assert page is not None and [n["text"] for n in page["nodes"]] == ["", "a"] and page["running"]


# an eval row as `ponder eval` wrote it before searches recorded their chosen node
ROW = {"method": "beam", "budget": 4, "problem_id": "p", "answer": "24", "correct": True, "solution": "a\nb2",
       "usage": {}, "trace": {"extra": {}, "nodes": [
           {"id": 0, "parent": None, "text": ""}, {"id": 1, "parent": 0, "text": "a"},
           {"id": 2, "parent": 1, "text": "b1", "terminal": True, "score": float("nan")},
           {"id": 3, "parent": 1, "text": "b2", "terminal": True, "score": 0.9}]}}


def test_saved_rows_without_a_chosen_node_find_it_by_their_solution(tmp_path):
    page = page_form(ROW, "row")
    assert page["chosen"] == 3 and page["nodes"][2]["score"] is None  # NaN is no JSON number
    (tmp_path / "results.jsonl").write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "problem_id": "q"})[:40])
    hub = TraceHub()
    assert hub.load(tmp_path) == 1  # the half-written last line waits
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write(json.dumps({**ROW, "problem_id": "q"})[40:] + "\n")
        f.write(json.dumps({**ROW, "trace": {"nodes": [{"id": 0}]}}) + "\n")  # no parent: skipped, logged
    assert [e["label"] for e in hub.listing()] == ["beam@4 · p", "beam@4 · q"]  # followed as the run grows
    (tmp_path / "bad.json").write_text('{"nodes": "many"}')
    with pytest.raises(ConfigError, match="not a trace"):
        TraceHub().load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="neither an eval run folder"):
        TraceHub().load(tmp_path / "nowhere")


def test_ponder_view_prints_its_address_and_serves_the_run(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(ROW) + "\n")
    proc = subprocess.Popen([sys.executable, "-c", "from ponder.cli import app; app()", "view", str(tmp_path),
                             "--port", "0"], stdout=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+/viewer/", line)
        assert line.startswith("1 trace from") and address, line
        [listed] = httpx.get(address.group() + "api/traces").json()["traces"]
        assert (listed["label"], listed["nodes"], listed["correct"]) == ("beam@4 · p", 4, True)
        assert httpx.get(address.group() + "static/viewer.js").status_code == 200
        assert httpx.get(address.group() + "static/..%2Fviewer.py").status_code == 404
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("args, message", [
    (["view", "{tmp}/nowhere"], "is neither an eval run folder"),
    (["view", "{tmp}/bad.json"], "cannot read"),
    (["view", "{tmp}/bad.json", "--port", "70000"], "Invalid value for '--port'"),
])
def test_view_refuses_bad_input_in_one_line(tmp_path, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert message in " ".join(lines) and "Traceback" not in result.output


# -- the page in Chromium ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the viewer's tests drive Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@contextmanager
def served(hub_or_app: TraceHub | FastAPI) -> Iterator[str]:
    """The viewer app (or a whole app mounting it) on a free port of 127.0.0.1, in a thread, for the block's
    duration; yields the page's URL."""
    sock = bind("127.0.0.1", 0)
    srv = server(viewer_app(hub_or_app) if isinstance(hub_or_app, TraceHub) else hub_or_app)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        yield url(sock)
    finally:
        srv.should_exit = True
        thread.join(10)


def in_thread(fn):
    """`fn()` run in a thread of its own: Playwright's sync API holds an event loop in this one, and a search or an
    eval runs its own (`asyncio.run`)."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    assert out, "the call raised (its traceback is above)"
    return out[0]


@pytest.fixture(scope="module")
def game24(game24_backend):
    engine = Engine(game24_backend)
    yield get_task("game24"), engine, get_verifier("game24-prm", engine)
    engine.close()


@pytest.fixture(scope="module")
def run_dir(game24, tmp_path_factory) -> Path:
    """A real eval run: beam search (8 beams, 4 proposals a state) and MCTS (8 simulations, 4 proposals a node) on
    two game24 test puzzles."""
    _, engine, prm = game24
    out = tmp_path_factory.mktemp("run")
    in_thread(lambda: run_eval(EvalConfig(methods=["beam", "mcts"], budgets=[8], limit=2,
                                          options={"mcts": {"width": 4}}),
                               out, lm=engine, verifier=prm, show_progress=False))
    return out


def rows(run: Path) -> dict[str, dict]:
    return {f"{r['method']}@{r['budget']} · {r['problem_id']}": r
            for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def shoot(page, name: str) -> None:
    """A screenshot of the page into PONDER_VIEWER_SHOTS (the docs' images), when that names a folder."""
    folder = os.environ.get("PONDER_VIEWER_SHOTS")
    if folder:
        page.locator("#scroll").evaluate("e => e.scrollTo(0, 0)")
        page.screenshot(path=str(Path(folder) / name))


@pytest.mark.slow
def test_page_draws_beam_and_mcts_trees_answers_clicks_and_switches_problems(browser, run_dir):
    saved = rows(run_dir)
    hub = TraceHub()
    hub.load(run_dir)
    with served(hub) as address:
        page = browser.new_page(viewport={"width": 1700, "height": 850})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(address)
        items = page.locator("#traces li")
        items.first.wait_for()
        assert sorted(items.all_inner_texts()) == sorted(f"{'✓' if r['correct'] else '✗'} {label} "
                                                         f"{len(r['trace']['nodes'])}" for label, r in saved.items())
        for method in ("beam", "mcts"):
            for label, row in sorted(saved.items(), key=lambda lr: len(lr[1]["trace"]["nodes"])):  # the largest last
                if not label.startswith(method):
                    continue
                page.locator("#traces li", has_text=label).click()
                page.wait_for_function("n => document.querySelectorAll('#tree g.node').length === n",
                                       arg=len(row["trace"]["nodes"]))
                assert f"method {method}@8" in page.locator("#summary").inner_text()
                assert row["problem_id"] in page.locator("#summary").inner_text()
                nodes = row["trace"]["nodes"]
                chosen = row["trace"]["extra"].get("chosen")
                if row["solution"]:  # the chosen path runs from the root to the chosen node, and spells the solution
                    path, cur = [], nodes[chosen]
                    while cur["parent"] is not None:
                        path.append(cur["text"])
                        cur = nodes[cur["parent"]]
                    assert "\n".join(reversed(path)) == row["solution"].strip()
                    assert page.locator("#tree g.node.chosen").count() == len(path) + 1
                    assert page.locator("#tree path.edge.chosen").count() == len(path)
                best = max(nodes[1:], key=lambda n: (n["visits"], n["score"] or 0))
                page.locator(f"#tree g.node[data-id='{best['id']}']").click()
                details = page.locator("#details")
                assert details.locator("pre.step").inner_text() == best["text"]
                assert details.locator("tr[data-field='score'] td").last.inner_text() == f"{best['score']:.3f}"
                assert details.locator("tr[data-field='visits'] td").last.inner_text() == str(best["visits"])
                if method == "mcts":
                    assert best["visits"] > 0 and f"n={best['visits']}" in page.locator(
                        f"#tree g.node[data-id='{best['id']}'] text").text_content()
            shoot(page, f"viewer-{method}.png")
        page.locator("#filter").fill("mcts")
        assert all("mcts" in t for t in page.locator("#traces li").all_inner_texts())
        assert not errors, errors


@pytest.mark.slow
def test_page_redraws_a_running_search_as_it_grows(browser, game24):
    task, engine, prm = game24
    problem = task.problems("test", limit=1)[0]
    # MCTS that never stops early (stop_at above any score): 12 simulations, each adding up to 4 nodes
    cfg = SearchConfig(n=12, min_p=0.001, max_tokens=task.max_tokens, aggregate="min",
                       knobs=parse_options("mcts", {"width": 4, "stop_at": 2.0}))
    hub = TraceHub()
    finished: list[Trace] = []
    with served(hub) as address:  # the app's lifespan makes the hub observe this process's searches
        page = browser.new_page()
        page.goto(address + "?poll=100")
        page.locator("#status").wait_for()
        worker = threading.Thread(target=lambda: finished.append(asyncio.run(
            search(task, problem, engine, prm, get_method("mcts"), cfg))))
        start = time.perf_counter()
        worker.start()
        seen: list[int] = []
        while worker.is_alive():
            seen.append(page.locator("#tree g.node").count())
            time.sleep(0.05)
        worker.join()
        seconds = time.perf_counter() - start
        [trace] = finished
        page.wait_for_function("n => document.querySelectorAll('#tree g.node').length === n", arg=len(trace.nodes))
        page.wait_for_function("() => !document.querySelector('#summary .running')")
        grown = sorted({n for n in seen if 1 < n < len(trace.nodes)})
        assert len(grown) >= 2, f"the page drew {grown} nodes while the search ran, {len(trace.nodes)} at the end"
        assert seen == sorted(seen)  # the drawn tree only grows
        print(f"the page drew the running search at {len(grown)} sizes ({grown[0]} to {grown[-1]} nodes) in "
              f"{seconds:.1f} s, then its final {len(trace.nodes)}")
        top = max(trace.nodes[1:], key=lambda n: n.visits)
        assert f"n={top.visits}" in page.locator(f"#tree g.node[data-id='{top.id}'] text").text_content()


@pytest.mark.slow
def test_view_serves_a_saved_trace_from_solve(browser, tmp_path):
    saved = tmp_path / "trace.json"
    solved = in_thread(lambda: CliRunner().invoke(app, ["solve", "--method", "beam", "--n", "4", "--save-trace",
                                                        str(saved), "4", "5", "6", "10"]))
    assert solved.exit_code == 0, solved.output
    data = json.loads(saved.read_text())
    assert data["config"]["method"] == "beam" and data["config"]["seed"] == 0
    hub = TraceHub()
    assert hub.load(saved) == 1
    with served(hub) as address:
        page = browser.new_page()
        page.goto(address)
        page.wait_for_function("n => document.querySelectorAll('#tree g.node').length === n",
                               arg=len(data["nodes"]))
        assert f"answer {data['answer']}" in page.locator("#summary").inner_text()



def test_page_draws_a_tree_of_thousands_of_nodes_within_seconds(browser):
    trace = Trace("wide", "mcts")
    frontier = [trace.root]
    for depth in range(4):  # 8 children a node, 4 steps deep: 4,680 nodes
        frontier = [trace.add(p.id, f"step {depth + 1} after node {p.id}", score=(p.id % 11) / 10, visits=depth)
                    for p in frontier for _ in range(8)]
    hub = TraceHub()
    hub.add(page_form(trace.to_dict(), "wide"), "wide")
    with served(hub) as address:
        page = browser.new_page()
        fetched: list[str] = []
        page.on("request", lambda r: fetched.append(r.url))
        start = time.perf_counter()
        page.goto(address)
        page.wait_for_function("n => document.querySelectorAll('#tree g.node').length === n", arg=len(trace.nodes),
                               timeout=60_000)
        seconds = time.perf_counter() - start
        leaf = frontier[-1]
        page.locator(f"#tree g.node[data-id='{leaf.id}']").click()
        assert page.locator("#details pre.step").inner_text() == leaf.text
        assert page.locator("#details ol li").all_inner_texts() == trace.path(leaf.id)
    origin = address.removesuffix("/viewer/")
    assert fetched and all(u.startswith(origin) for u in fetched), fetched  # nothing from elsewhere: works offline
    print(f"opened and drew {len(trace.nodes)} nodes in {seconds:.2f} s")
    assert seconds < 20


@pytest.mark.slow
def test_ponder_serve_lists_each_search_it_runs_in_its_viewer(browser, game24):
    _, engine, prm = game24
    recipe = next(r for r in shipped_recipes() if r.name == "game24-beam")
    hub = TraceHub()
    app = create_app([Served(recipe, lm=engine, verifier=prm)], routers=[viewer_router(hub)], preload=False)
    with served(app) as address:
        reply = httpx.post(address.replace("/viewer/", "/v1/chat/completions"), timeout=600, json={
            "model": "game24-beam", "messages": [{"role": "user", "content": "4 5 6 10"}],
            "ponder": {"budget": 4, "return_trace": True}})
        assert reply.status_code == 200, reply.text
        [trace] = reply.json()["ponder"]["traces"]
        [listed] = httpx.get(address + "api/traces").json()["traces"]
        assert (listed["method"], listed["nodes"], listed["running"]) == ("beam", len(trace["nodes"]), False)
        page = browser.new_page()
        page.goto(address)
        page.wait_for_function("n => document.querySelectorAll('#tree g.node').length === n", arg=len(trace["nodes"]))
        assert f"answer {trace['answer']}" in page.locator("#summary").inner_text()
