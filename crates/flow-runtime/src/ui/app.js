// rill web UI: component list, component detail, DAG graph, Profiles page (profiles.js), reload button.
// Every value coming from the config or from components is inserted with textContent or as an
// SVG text node, never as HTML, so labels such as "<script>" show up as text.
"use strict";

const main = document.getElementById("main");
let timer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

function badge(health) {
  const state = (health && health.state) || "unknown";
  return el("span", { class: "badge " + state, "data-health": state }, state);
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// Alloy's JSON encoding of River values back to River-like text.
function valueText(v, indent) {
  indent = indent || "";
  if (!v || typeof v !== "object") return String(v);
  const inner = indent + "  ";
  switch (v.type) {
    case "null": return "null";
    case "string": return JSON.stringify(v.value);
    case "number": case "bool": return String(v.value);
    case "array":
      if (!v.value || v.value.length === 0) return "[]";
      return "[\n" + v.value.map((x) => inner + valueText(x, inner)).join(",\n") + ",\n" + indent + "]";
    case "object":
      if (!v.value || v.value.length === 0) return "{}";
      return "{\n" + v.value.map((f) => inner + fieldKey(f.key) + " = " + valueText(f.value, inner)).join(",\n") + ",\n" + indent + "}";
    case "capsule": case "function": return String(v.value);
    default: return JSON.stringify(v);
  }
}

function fieldKey(k) {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? k : JSON.stringify(k);
}

function bodyText(body, indent) {
  indent = indent || "";
  if (!Array.isArray(body)) return valueText(body, indent);
  return body.map((s) => {
    if (s.type === "block") {
      const label = s.label ? " " + JSON.stringify(s.label) : "";
      return indent + s.name + label + " {\n" + bodyText(s.body, indent + "  ") + indent + "}\n";
    }
    return indent + s.name + " = " + valueText(s.value, indent) + "\n";
  }).join("");
}

function setActive(name) {
  for (const id of ["nav-components", "nav-graph", "nav-profiles"]) {
    document.getElementById(id).classList.toggle("active", id === name);
  }
}

async function renderList() {
  setActive("nav-components");
  const list = await getJSON("/api/v0/web/components");
  const tbody = el("tbody");
  for (const c of list) {
    const link = el("a", { href: "#/component/" + encodeURIComponent(c.id), class: "component-link" }, c.id);
    tbody.appendChild(el("tr", { "data-id": c.id },
      el("td", { class: "mono" }, link),
      el("td", { class: "mono" }, c.name),
      el("td", {}, badge(c.health)),
      el("td", {}, (c.health && c.health.message) || ""),
      el("td", { class: "mono" }, (c.referencesTo || []).join(", "))));
  }
  const table = el("table", { id: "components" },
    el("thead", {}, el("tr", {}, el("th", {}, "ID"), el("th", {}, "Component"), el("th", {}, "Health"),
      el("th", {}, "Message"), el("th", {}, "References"))), tbody);
  main.replaceChildren(el("h1", {}, "Components (" + list.length + ")"),
    list.length ? table : el("p", { class: "muted" }, "No components."));
}

async function renderComponent(id) {
  setActive("");
  let c;
  try {
    c = await getJSON("/api/v0/web/components/" + encodeURIComponent(id));
  } catch (e) {
    main.replaceChildren(el("h1", {}, "Component not found"), el("p", { class: "mono" }, id));
    return;
  }
  const refLinks = (ids) => {
    const span = el("span", { class: "mono" });
    ids.forEach((r, i) => {
      if (i) span.appendChild(document.createTextNode(", "));
      span.appendChild(el("a", { href: "#/component/" + encodeURIComponent(r) }, r));
    });
    if (!ids.length) span.appendChild(document.createTextNode("none"));
    return span;
  };
  const kv = el("table", { class: "kv" }, el("tbody", {},
    el("tr", {}, el("td", {}, "Component"), el("td", { class: "mono" }, c.name)),
    el("tr", {}, el("td", {}, "Label"), el("td", { class: "mono", id: "component-label" }, c.label)),
    el("tr", {}, el("td", {}, "Health"), el("td", {}, badge(c.health), " ", c.health.message || "")),
    el("tr", {}, el("td", {}, "Updated"), el("td", {}, c.health.updatedTime || "")),
    el("tr", {}, el("td", {}, "References"), el("td", {}, refLinks(c.referencesTo || []))),
    el("tr", {}, el("td", {}, "Referenced by"), el("td", {}, refLinks(c.referencedBy || [])))));
  const history = el("tbody");
  for (const h of (c.healthHistory || []).slice().reverse()) {
    history.appendChild(el("tr", {}, el("td", {}, h.updatedTime), el("td", {}, badge(h)), el("td", {}, h.message)));
  }
  const section = (title, id, body) => [el("h2", {}, title),
    el("pre", { id, class: "mono" }, body && body.length ? bodyText(body) : "(none)")];
  main.replaceChildren(
    el("h1", { class: "mono", id: "component-id" }, c.id), kv,
    ...section("Arguments", "arguments", c.arguments),
    ...section("Exports", "exports", c.exports),
    ...section("Debug info", "debug-info", c.debugInfo),
    el("h2", {}, "Health history"),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "State"), el("th", {}, "Message"))), history));
  // Components with recent profiles (pyroscope.ebpf) get a flame graph panel (flamegraph.js).
  if (window.rillProfilePanel) window.rillProfilePanel(main, c);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

async function renderGraph() {
  setActive("nav-graph");
  const list = await getJSON("/api/v0/web/components");
  const byId = new Map(list.map((c) => [c.id, c]));
  // Layer = longest path from a component without references.
  const layer = new Map();
  const depth = (id, seen) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const refs = (byId.get(id).referencesTo || []).filter((r) => byId.has(r));
    const d = refs.length ? 1 + Math.max(...refs.map((r) => depth(r, seen))) : 0;
    layer.set(id, d);
    return d;
  };
  list.forEach((c) => depth(c.id, new Set()));
  const cols = [];
  for (const c of list) {
    const d = layer.get(c.id);
    (cols[d] = cols[d] || []).push(c);
  }
  const W = 240, H = 44, GX = 80, GY = 24, PAD = 20;
  const pos = new Map();
  cols.forEach((col, x) => col.forEach((c, y) => pos.set(c.id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) })));
  const width = PAD * 2 + Math.max(1, cols.length) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...cols.map((c) => c.length)) * (H + GY) - GY;
  const root = svg("svg", { class: "graph", id: "graph", width, height, viewBox: `0 0 ${width} ${height}` });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
  marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8c959f" }));
  defs.appendChild(marker);
  root.appendChild(defs);
  for (const c of list) {
    for (const r of c.referencesTo || []) {
      const a = pos.get(r), b = pos.get(c.id);
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      root.appendChild(svg("path", { class: "edge", d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }));
    }
  }
  for (const c of list) {
    const p = pos.get(c.id);
    const a = svg("a", { href: "#/component/" + encodeURIComponent(c.id) });
    const state = (c.health && c.health.state) || "unknown";
    a.appendChild(svg("rect", { class: "node " + state, x: p.x, y: p.y, width: W, height: H }));
    a.appendChild(svg("text", { x: p.x + 10, y: p.y + 18 }, c.name));
    a.appendChild(svg("text", { x: p.x + 10, y: p.y + 35 }, c.label + "  · " + state));
    root.appendChild(a);
  }
  main.replaceChildren(el("h1", {}, "Graph"), list.length ? root : el("p", { class: "muted" }, "No components."));
}

async function route() {
  const h = location.hash || "#/";
  try {
    if (h.startsWith("#/component/")) await renderComponent(decodeURIComponent(h.slice("#/component/".length)));
    else if (h === "#/graph") await renderGraph();
    else if (h === "#/profiles" || h.startsWith("#/profiles?")) {
      setActive("nav-profiles");
      window.rillProfilesPage(main, h);
    }
    else await renderList();
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, "Error: " + e.message));
  }
}

async function showLastLoadError() {
  try {
    const s = await getJSON("/api/v0/web/status");
    if (s.lastLoadError) showReload(false, "The last configuration load failed:\n" + s.lastLoadError);
  } catch (e) { /* ignore */ }
}

function showReload(ok, text) {
  const box = document.getElementById("reload-result");
  box.hidden = false;
  box.className = ok ? "ok" : "error";
  box.replaceChildren(el("pre", { id: "reload-output" }, text));
}

document.getElementById("reload").addEventListener("click", async () => {
  try {
    const r = await fetch("/-/reload", { method: "POST" });
    showReload(r.ok, await r.text());
  } catch (e) {
    showReload(false, String(e));
  }
  route();
});

function schedule() {
  clearInterval(timer);
  if (!document.getElementById("auto-refresh").checked) return;
  // The Profiles page keeps its state (zoom, search, selection) and refreshes itself.
  timer = setInterval(() => {
    if ((location.hash || "").startsWith("#/profiles")) window.rillProfilesTick();
    else route();
  }, 3000);
}
document.getElementById("auto-refresh").addEventListener("change", schedule);
window.addEventListener("hashchange", route);
route();
showLastLoadError();
schedule();
