// rill web UI: the profile panel of components that serve a `profile` resource
// (pyroscope.ebpf). A profile type selector (CPU, off-CPU: the target's `__name__`, process_cpu
// or offcpu) picks which targets are listed; off-CPU values are shown as time. Per target: the
// last interval (or the aggregate of the kept intervals) as
// an interactive flame graph (SVG; click to zoom, click the root or "Reset zoom" to zoom out,
// hover for function, samples and share, search highlights matches), a top-functions table
// (self and total) and a .pb.gz download for `go tool pprof`. Every name is inserted as text.
// The panel element survives the page's periodic re-render, so zoom and search are kept.
"use strict";

(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  const ROW = 18;
  const state = {
    id: null, panel: null, key: null, type: "process_cpu", range: "last", zoom: [], search: "",
    data: null, stamp: null, targets: [], width: 1200,
  };

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of kids) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }
  function s(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  const pct = (n, d) => (d > 0 ? (100 * n / d).toFixed(2) : "0.00") + "%";
  const TYPES = { process_cpu: "CPU", offcpu: "Off-CPU" };
  const typeOf = (t) => (t.labels && t.labels.__name__) || "process_cpu";
  const offCpu = () => !!state.data && state.data.sampleType === "offcpu";
  // A value of the profile: samples, or off-CPU nanoseconds shown as time.
  const fmt = (v) => {
    if (!offCpu()) return String(v);
    if (v >= 1e9) return (v / 1e9).toFixed(2) + " s";
    return (v / 1e6).toFixed(1) + " ms";
  };
  const base = () => "/api/v0/web/components/" + encodeURIComponent(state.id) + "/profile";
  const query = (fmt) => "?target=" + encodeURIComponent(state.key) + "&range=" + state.range +
    "&format=" + fmt;

  // Warm colours from the name, so a function keeps its colour between refreshes.
  function colour(name) {
    let x = 0;
    for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
    const r = 205 + (x % 50), g = 80 + ((x >>> 8) % 130), b = 30 + ((x >>> 16) % 40);
    return "rgb(" + r + "," + g + "," + b + ")";
  }

  function build() {
    const p = h("section", { id: "profile-panel" });
    p.append(
      h("h2", {}, "Profiles"),
      h("div", { class: "fg-controls" },
        h("label", {}, "Type ", h("select", { id: "fg-type" })),
        h("label", {}, "Target ", h("select", { id: "fg-target" })),
        h("label", {}, "Range ", h("select", { id: "fg-range" },
          h("option", { value: "last" }, "last interval"),
          h("option", { value: "all" }, "aggregate of kept intervals"))),
        h("input", { id: "fg-search", type: "search", placeholder: "Search functions", size: "28" }),
        h("button", { id: "fg-reset", type: "button" }, "Reset zoom"),
        h("a", { id: "fg-download", class: "button", href: "#", download: "" }, "Download .pb.gz")),
      h("p", { id: "fg-info", class: "muted" }, "Waiting for the first profile…"),
      h("div", { id: "fg-wrap" }, h("div", { id: "fg-tip", hidden: "" })),
      h("h3", {}, "Top functions"),
      h("table", { id: "fg-top" }, h("thead", {}, h("tr", {},
        h("th", {}, "Function"), h("th", { class: "num" }, "Self"), h("th", { class: "num" }, "Self %"),
        h("th", { class: "num" }, "Total"), h("th", { class: "num" }, "Total %"))), h("tbody")));
    p.querySelector("#fg-type").addEventListener("change", (e) => {
      state.type = e.target.value; state.key = null; state.zoom = []; state.stamp = null; refresh();
    });
    p.querySelector("#fg-target").addEventListener("change", (e) => {
      state.key = e.target.value; state.zoom = []; state.stamp = null; refresh();
    });
    p.querySelector("#fg-range").addEventListener("change", (e) => {
      state.range = e.target.value; state.stamp = null; refresh();
    });
    p.querySelector("#fg-search").addEventListener("input", (e) => {
      state.search = e.target.value; draw();
    });
    p.querySelector("#fg-reset").addEventListener("click", () => { state.zoom = []; draw(); });
    return p;
  }

  async function refresh() {
    let list;
    try {
      const r = await fetch(base(), { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      list = await r.json();
    } catch (e) {
      state.panel.querySelector("#fg-info").textContent = "Profiles unavailable: " + e.message;
      return;
    }
    const all = list.targets || [];
    const types = [...new Set(all.map(typeOf))].sort();
    const tsel = state.panel.querySelector("#fg-type");
    if (tsel.options.length !== types.length || types.some((t, i) => tsel.options[i].value !== t)) {
      tsel.replaceChildren(...types.map((t) => h("option", { value: t }, TYPES[t] || t)));
    }
    if (types.length && !types.includes(state.type)) state.type = types.includes("process_cpu") ? "process_cpu" : types[0];
    tsel.value = state.type;
    state.targets = all.filter((t) => typeOf(t) === state.type);
    const sel = state.panel.querySelector("#fg-target");
    const keys = state.targets.map((t) => t.key);
    if (sel.options.length !== keys.length || keys.some((k, i) => sel.options[i].value !== k)) {
      sel.replaceChildren(...state.targets.map((t) =>
        h("option", { value: t.key }, (t.labels.service_name || "?") + " " + t.key)));
    }
    if (!keys.length) {
      state.panel.querySelector("#fg-info").textContent =
        "No profile yet: the first arrives after one collect interval.";
      return;
    }
    if (!keys.includes(state.key)) { state.key = keys[0]; state.zoom = []; state.stamp = null; }
    sel.value = state.key;
    const t = state.targets.find((x) => x.key === state.key);
    const stamp = state.key + "|" + state.range + "|" + t.lastTime;
    if (stamp === state.stamp) return;
    try {
      const r = await fetch(base() + query("json"), { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      state.data = await r.json();
      state.stamp = stamp;
    } catch (e) {
      state.panel.querySelector("#fg-info").textContent = "Profile unavailable: " + e.message;
      return;
    }
    const dl = state.panel.querySelector("#fg-download");
    dl.setAttribute("href", base() + query("pprof"));
    const d = state.data;
    const what = d.sampleType === "offcpu" ? fmt(d.samples) + " off CPU (estimated)" : d.samples + " samples";
    state.panel.querySelector("#fg-info").textContent = what + " over " +
      (d.durationNanos / 1e9).toFixed(1) + " s (" + d.intervals + " interval" +
      (d.intervals === 1 ? "" : "s") + "; the last " + list.intervalsKept +
      " intervals per target are kept, at most " + (list.maxBytes / 1048576) + " MiB in all)";
    table();
    draw();
  }

  function table() {
    const d = state.data, tbody = state.panel.querySelector("#fg-top tbody");
    tbody.replaceChildren(...d.top.slice(0, 20).map((t) => {
      const name = h("a", { href: "#", class: "mono" }, t.name);
      name.addEventListener("click", (e) => {
        e.preventDefault();
        state.search = t.name;
        state.panel.querySelector("#fg-search").value = t.name;
        draw();
      });
      return h("tr", { "data-name": t.name }, h("td", {}, name),
        h("td", { class: "num" }, fmt(t.self)), h("td", { class: "num" }, pct(t.self, d.samples)),
        h("td", { class: "num" }, fmt(t.total)), h("td", { class: "num" }, pct(t.total, d.samples)));
    }));
  }

  // The node at the zoom path (names from the root's child down), or the deepest that exists.
  function zoomed(root) {
    let node = root, path = [root];
    for (const name of state.zoom) {
      const next = (node.c || []).find((c) => c.n === name);
      if (!next) break;
      node = next; path.push(node);
    }
    state.zoom = path.slice(1).map((n) => n.n);
    return path;
  }

  function draw() {
    const wrap = state.panel.querySelector("#fg-wrap");
    const tip = state.panel.querySelector("#fg-tip");
    const old = wrap.querySelector("svg");
    if (!state.data) { if (old) old.remove(); return; }
    const width = Math.max(600, wrap.clientWidth || state.width);
    const root = state.data.tree, all = root.v;
    const path = zoomed(root);
    const focus = path[path.length - 1];
    const term = state.search.toLowerCase();
    const scale = focus.v > 0 ? width / focus.v : 0;
    const rows = [];
    let matched = 0;
    // Ancestors of the focus: full width, dimmed.
    path.forEach((n, depth) => rows.push({ n, depth, x: 0, w: width, anc: depth < path.length - 1, path: path.slice(1, depth + 1) }));
    let maxDepth = path.length - 1;
    const walk = (n, depth, x, p) => {
      let cx = x;
      for (const c of n.c || []) {
        const w = c.v * scale;
        if (w >= 0.5) {
          const cp = p.concat([c.n]);
          rows.push({ n: c, depth, x: cx, w, anc: false, path: cp });
          maxDepth = Math.max(maxDepth, depth);
          walk(c, depth + 1, cx, cp);
        }
        cx += w;
      }
    };
    walk(focus, path.length, 0, state.zoom.slice());
    const height = (maxDepth + 1) * ROW + 2;
    const g = s("svg", { id: "flamegraph", class: "flamegraph", width, height, viewBox: "0 0 " + width + " " + height });
    g.dataset.zoom = state.zoom.join(";");
    for (const r of rows) {
      const name = r.n.n;
      const hit = term !== "" && name.toLowerCase().includes(term);
      const frame = s("g", { class: "frame" + (r.anc ? " ancestor" : "") + (hit ? " match" : ""),
        transform: "translate(" + r.x.toFixed(2) + "," + (r.depth * ROW) + ")" });
      frame.dataset.name = name;
      frame.dataset.samples = String(r.n.v);
      frame.appendChild(s("rect", { width: Math.max(0.5, r.w - 0.5).toFixed(2), height: ROW - 1,
        fill: hit ? "rgb(190,70,230)" : r.anc ? "rgb(225,225,225)" : colour(name) }));
      if (r.w > 24) {
        const t = s("text", { x: 3, y: ROW - 5 });
        const chars = Math.floor((r.w - 6) / 7);
        t.textContent = name.length > chars ? name.slice(0, Math.max(0, chars - 1)) + "…" : name;
        frame.appendChild(t);
      }
      frame.addEventListener("click", () => { state.zoom = r.path; draw(); });
      frame.addEventListener("mousemove", (e) => {
        const own = (r.n.c || []).reduce((a, c) => a - c.v, r.n.v);
        tip.replaceChildren(h("strong", { class: "mono" }, name), h("br"),
          (offCpu() ? fmt(r.n.v) + " off CPU, " : r.n.v + " samples, ") + pct(r.n.v, all) + " of all, " +
          pct(r.n.v, focus.v) + " of view; self " + fmt(own));
        tip.hidden = false;
        const box = wrap.getBoundingClientRect();
        tip.style.left = Math.min(e.clientX - box.left + 12, width - 260) + "px";
        tip.style.top = (e.clientY - box.top + 16) + "px";
      });
      frame.addEventListener("mouseleave", () => { tip.hidden = true; });
      g.appendChild(frame);
    }
    // Matched share: samples of the outermost matching frames (no double counting).
    if (term !== "") {
      const count = (n, inside) => {
        const m = n.n.toLowerCase().includes(term);
        if (m && !inside) matched += n.v;
        for (const c of n.c || []) count(c, inside || m);
      };
      count(root, false);
    }
    g.dataset.matched = String(matched);
    if (old) old.replaceWith(g); else wrap.insertBefore(g, tip);
    let m = state.panel.querySelector("#fg-matched");
    if (!m) { m = h("p", { id: "fg-matched", class: "muted" }); wrap.after(m); }
    m.textContent = term === "" ? "" : "Matched: " + (offCpu() ? fmt(matched) : matched + " samples") +
      " (" + pct(matched, all) + ")";
  }

  // Called by app.js after each render of a component page.
  window.rillProfilePanel = function (main, component) {
    if (component.name !== "pyroscope.ebpf") return;
    if (state.id !== component.id || !state.panel) {
      state.id = component.id; state.key = null; state.zoom = []; state.search = "";
      state.data = null; state.stamp = null;
      state.panel = build();
    }
    const anchor = main.querySelector("#debug-info");
    if (anchor) anchor.after(state.panel); else main.appendChild(state.panel);
    refresh();
  };
})();
