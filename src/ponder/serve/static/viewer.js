// Ponder's tree viewer: lists the traces the server holds (api/traces), draws the selected one as an SVG tree (root
// on the left, one column per step), shows a clicked node's text and scores, and polls so that a running search is
// redrawn as it grows. Model text is only ever set as textContent, never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLUMN = 280; // pixels between steps
const ROW = 22; // pixels between leaves
const LABEL = 24; // characters of a step shown beside its node
const POLL = Number(new URLSearchParams(location.search).get("poll")) || 1000; // ms between polls

const state = { listing: [], listed: "", key: null, trace: null, node: null };

function el(tag, attrs = {}, text = null, ns = null) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function fmt(x) {
  if (x === null || x === undefined) return "–";
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toFixed(3);
  if (typeof x === "object") return JSON.stringify(x);
  return String(x);
}

function colour(score) {
  if (score === null || score === undefined) return "#9aa0a6";
  const s = Math.max(0, Math.min(1, score));
  return `hsl(${Math.round(120 * s)}, 70%, ${48 - 8 * s}%)`;
}

function short(text) {
  const line = (text || "").replace(/\s+/g, " ").trim();
  return line.length > LABEL ? line.slice(0, LABEL - 1) + "…" : line;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

// -- the list of traces ------------------------------------------------------------------------------------------

function renderList() {
  const words = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const ul = document.getElementById("traces");
  ul.replaceChildren();
  for (const t of state.listing) {
    const text = `${t.label} ${t.method} ${t.problem_id}`.toLowerCase();
    if (!words.every((w) => text.includes(w))) continue;
    const li = el("li", { "data-key": t.key, title: t.label });
    if (t.key === state.key) li.classList.add("selected");
    const mark = t.correct === true ? ["✓ ", "ok"] : t.correct === false ? ["✗ ", "wrong"] : ["", ""];
    if (mark[0]) li.append(el("span", { class: mark[1] }, mark[0]));
    li.append(document.createTextNode(t.label + " "));
    li.append(el("span", { class: t.running ? "running" : "size" }, t.running ? `running, ${t.nodes}` : `${t.nodes}`));
    li.addEventListener("click", () => select(t.key));
    ul.append(li);
  }
}

async function select(key) {
  state.key = key;
  state.node = null;
  state.trace = null;
  history.replaceState(null, "", `#${encodeURIComponent(key)}`);
  renderList();
  await load();
}

async function load() {
  const key = state.key;
  const trace = await getJSON(`api/traces/${encodeURIComponent(key)}`);
  if (key !== state.key) return; // another trace was selected meanwhile
  state.trace = trace;
  draw();
}

async function poll() {
  try {
    const { traces } = await getJSON("api/traces");
    state.listing = traces;
    const listed = JSON.stringify(traces);
    if (listed !== state.listed) {
      state.listed = listed;
      renderList();
    }
    const running = traces.filter((t) => t.running).length;
    document.getElementById("status").textContent =
      `${traces.length} trace${traces.length === 1 ? "" : "s"}${running ? `, ${running} running` : ""}`;
    if (state.key === null && traces.length) {
      const wanted = decodeURIComponent(location.hash.slice(1));
      await select(traces.some((t) => t.key === wanted) ? wanted : traces[0].key);
    } else if (state.key !== null) {
      const shown = traces.find((t) => t.key === state.key);
      if (shown && state.trace && shown.version !== state.trace.version) await load();
    }
  } catch (err) {
    document.getElementById("status").textContent = `cannot reach the server (${err.message})`;
  }
  setTimeout(poll, POLL);
}

// -- the tree ----------------------------------------------------------------------------------------------------

function layout(nodes) {
  // leaves take consecutive rows in the order the search made them; a parent sits midway between its first and
  // last child
  const kids = new Map(nodes.map((n) => [n.id, []]));
  for (const n of nodes) if (n.parent !== null && kids.has(n.parent)) kids.get(n.parent).push(n.id);
  const pos = new Map();
  let row = 0;
  let depth = 0;
  const place = (id, d) => {
    depth = Math.max(depth, d);
    const c = kids.get(id);
    if (!c.length) {
      pos.set(id, { col: d, row: row++ });
      return;
    }
    for (const k of c) place(k, d + 1);
    pos.set(id, { col: d, row: (pos.get(c[0]).row + pos.get(c[c.length - 1]).row) / 2 });
  };
  for (const n of nodes) if (n.parent === null || !kids.has(n.parent)) place(n.id, 0);
  return { pos, rows: row, depth };
}

function chosenPath(trace) {
  const ids = new Set();
  const byId = new Map(trace.nodes.map((n) => [n.id, n]));
  let cur = trace.chosen === null ? null : byId.get(trace.chosen);
  while (cur) {
    ids.add(cur.id);
    cur = cur.parent === null ? null : byId.get(cur.parent);
  }
  return ids;
}

function draw() {
  const trace = state.trace;
  summarize(trace);
  const svg = document.getElementById("tree");
  svg.replaceChildren();
  const { pos, rows, depth } = layout(trace.nodes);
  const x = (id) => 24 + pos.get(id).col * COLUMN;
  const y = (id) => 16 + pos.get(id).row * ROW;
  svg.setAttribute("width", 24 + depth * COLUMN + COLUMN + 40);
  svg.setAttribute("height", 16 + Math.max(1, rows) * ROW);
  const chosen = chosenPath(trace);
  const edges = el("g", {}, null, SVG);
  const marks = el("g", {}, null, SVG);
  for (const n of trace.nodes) {
    if (n.parent !== null && pos.has(n.parent)) {
      const [px, py, cx, cy] = [x(n.parent), y(n.parent), x(n.id), y(n.id)];
      const mid = (px + cx) / 2;
      const edge = el("path", { d: `M${px},${py} C${mid},${py} ${mid},${cy} ${cx},${cy}`, class: "edge" }, null, SVG);
      if (chosen.has(n.id)) edge.classList.add("chosen");
      edges.append(edge);
    }
    marks.append(drawNode(n, x(n.id), y(n.id), chosen.has(n.id)));
  }
  svg.append(edges, marks);
  const shown = trace.nodes.find((n) => n.id === state.node);
  if (shown) showNode(shown);
}

function drawNode(n, cx, cy, chosen) {
  const g = el("g", { class: "node", "data-id": n.id, transform: `translate(${cx},${cy})` }, null, SVG);
  if (chosen) g.classList.add("chosen");
  if (n.id === state.node) g.classList.add("selected");
  const r = n.visits > 0 ? 4 + Math.min(10, 1.5 * Math.sqrt(n.visits)) : 5;
  const mark = n.terminal
    ? el("rect", { x: -r, y: -r, width: 2 * r, height: 2 * r, class: "mark" }, null, SVG)
    : el("circle", { r, class: "mark" }, null, SVG);
  mark.setAttribute("fill", n.parent === null ? "#5f6368" : colour(n.score));
  const score = n.score === null ? "" : ` ${n.score.toFixed(2)}`;
  const visits = n.visits > 0 ? ` n=${n.visits} Q=${n.value === null ? "–" : n.value.toFixed(2)}` : "";
  const label = n.parent === null ? `problem ${state.trace.problem_id}` : `${short(n.text)}${score}${visits}`;
  const title = el("title", {}, n.parent === null ? "the root" : n.text, SVG);
  g.append(title, mark, el("text", { x: r + 3, y: -5 }, label, SVG));
  g.addEventListener("click", () => {
    state.node = n.id;
    for (const s of document.querySelectorAll("#tree .node.selected")) s.classList.remove("selected");
    g.classList.add("selected");
    showNode(n);
  });
  return g;
}

function summarize(trace) {
  const box = document.getElementById("summary");
  box.replaceChildren();
  const u = trace.usage || {};
  const verdict = trace.correct === true ? " ✓ correct" : trace.correct === false ? " ✗ wrong" : "";
  const parts = [
    ["method ", trace.method + (trace.budget ? `@${trace.budget}` : "")],
    [" · problem ", trace.problem_id],
    [" · answer ", fmt(trace.answer)],
  ];
  for (const [name, value] of parts) box.append(document.createTextNode(name), el("code", {}, value));
  box.append(document.createTextNode(`${verdict} · ${trace.nodes.length - 1} steps`));
  if (u.generated_tokens !== undefined)
    box.append(document.createTextNode(` · ${u.generated_tokens} generated tokens, ${u.model_calls} model calls, ` +
      `${u.verifier_calls} verifier calls`));
  if (trace.running) box.append(el("strong", { class: "running" }, " · running"));
  const knobs = Object.entries(trace.extra || {}).filter(([k]) => k !== "chosen");
  if (knobs.length) box.append(el("div", {}, knobs.map(([k, v]) => `${k}=${fmt(v)}`).join("  ")));
}

function showNode(n) {
  const byId = new Map(state.trace.nodes.map((m) => [m.id, m]));
  const path = [];
  for (let cur = n; cur && cur.parent !== null; cur = byId.get(cur.parent)) path.unshift(cur.text);
  const box = document.getElementById("details");
  box.replaceChildren(el("h3", {}, n.parent === null ? "the root" : `node ${n.id}`));
  box.append(el("pre", { class: "step" }, n.text || "(empty)"));
  const table = el("table");
  const rows = [["score", n.score], ["prior", n.prior], ["visits", n.visits], ["value (Q)", n.value],
    ["finished", n.terminal ? "yes" : "no"], ["depth", path.length],
    ["on the chosen path", chosenPath(state.trace).has(n.id) ? "yes" : "no"], ...Object.entries(n.extra || {})];
  for (const [name, value] of rows) {
    const tr = el("tr", { "data-field": name });
    tr.append(el("td", {}, name), el("td", {}, fmt(value)));
    table.append(tr);
  }
  box.append(table);
  if (path.length) {
    box.append(el("h4", {}, "steps from the root"));
    const ol = el("ol");
    for (const step of path) ol.append(el("li", {}, step));
    box.append(ol);
  }
}

document.getElementById("filter").addEventListener("input", renderList);
poll();
