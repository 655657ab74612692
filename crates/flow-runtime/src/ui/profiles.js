// rill web UI: the Profiles page (#/profiles), on the JSON API of a `pyroscope.store`
// (/api/v0/component/ID/v1/{series,profile,diff,pprof}). Store, profile type, label selector
// (from a service_name list, editable), time range (last 15 min to 24 h, or custom); a timeline
// on which a drag picks a sub-range; the flame graph (flame.js: search, click to zoom) and a
// sortable top-functions table of the selection; a diff mode comparing a baseline and a
// comparison range, each picked on the timeline; a pprof download of the selection.
// Every setting lives in the URL (#/profiles?store=..&from=..&sel=A-B&diff=1&base=..&comp=..),
// so a view can be shared, reloaded or opened by a test. Every name is inserted as text.
"use strict";

(function () {
  const RANGES = [["now-15m", "Last 15 minutes"], ["now-1h", "Last hour"], ["now-6h", "Last 6 hours"],
    ["now-24h", "Last 24 hours"], ["custom", "Custom…"]];
  const KEYS = ["store", "type", "selector", "from", "until", "sel", "diff", "base", "comp", "search", "mode"];
  const st = {
    page: null, p: {}, stores: [], series: null, profile: null, detail: null, diffData: null,
    fg: null, tl: null, sort: { key: "self", desc: true }, seq: 0, lastTick: 0,
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
  const $ = (id) => document.getElementById(id);
  const api = (path, q) => "/api/v0/component/" + encodeURIComponent(st.p.store) + "/v1/" + path + "?" +
    new URLSearchParams(Object.entries(q).filter(([, v]) => v !== undefined && v !== null && v !== "")).toString();
  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || body.message || ("HTTP " + r.status));
    return body;
  }

  // ---- URL state ----
  function parseHash(hash) {
    const q = new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
    const p = {};
    for (const k of KEYS) if (q.has(k)) p[k] = q.get(k);
    p.from = p.from || "now-1h"; p.until = p.until || "now";
    return p;
  }
  function writeHash() {
    const q = new URLSearchParams();
    for (const k of KEYS) if (st.p[k] !== undefined && st.p[k] !== null && st.p[k] !== "") q.set(k, st.p[k]);
    history.replaceState(null, "", "#/profiles?" + q.toString());
  }
  const pair = (s) => {
    const m = /^(\d+)-(\d+)$/.exec(s || "");
    return m ? [Number(m[1]), Number(m[2])] : null;
  };
  // `now`, `now-DURATION` or milliseconds → milliseconds.
  function resolve(t, now) {
    if (/^\d+$/.test(t)) return Number(t);
    if (t === "now") return now;
    const m = /^now-((?:\d+[smhd])+)$/.exec(t);
    if (!m) return null;
    let ms = 0;
    for (const [, n, u] of m[1].matchAll(/(\d+)([smhd])/g)) ms += Number(n) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[u];
    return now - ms;
  }

  // ---- values ----
  function unitFormat(unit) {
    if (unit === "nanoseconds") {
      return (v) => {
        if (v === 0) return "0";
        const s = v / 1e9;
        if (s >= 3600) return (s / 3600).toFixed(2) + " h";
        if (s >= 60) return (s / 60).toFixed(2) + " min";
        if (s >= 1) return s.toFixed(2) + " s";
        if (s >= 1e-3) return (s * 1e3).toFixed(1) + " ms";
        return (s * 1e6).toFixed(0) + " µs";
      };
    }
    return (v) => (v === 0 ? "0" : v.toLocaleString("en-US")) + (unit && unit !== "count" ? " " + unit : "");
  }
  const fmt = (v) => unitFormat(st.profile && st.profile.unit)(v);
  const pct = (n, d) => (d > 0 ? (100 * n / d).toFixed(2) : "0.00") + "%";
  function typeLabel(t) {
    const id = t.id || "";
    if (/off[_-]?cpu/i.test(id)) return "off-CPU (" + id + ")";
    if (t.name === "process_cpu" || t.sampleType === "cpu") return "CPU (" + id + ")";
    return id;
  }
  const stamp = (ms) => new Date(ms).toLocaleString();

  // ---- page skeleton ----
  function build() {
    const page = h("section", { id: "profiles-page" },
      h("h1", {}, "Profiles"),
      h("div", { class: "pf-controls" },
        h("label", {}, "Store ", h("select", { id: "pf-store" })),
        h("label", {}, "Type ", h("select", { id: "pf-type" })),
        h("label", {}, "Service ", h("select", { id: "pf-service" })),
        h("label", { class: "grow" }, "Selector ", h("input", { id: "pf-selector", type: "text", spellcheck: "false", placeholder: "{service_name=\"host\"}" })),
        h("label", {}, "Range ", h("select", { id: "pf-range" }, ...RANGES.map(([v, t]) => h("option", { value: v }, t)))),
        h("span", { id: "pf-custom", hidden: "" },
          h("input", { id: "pf-from", type: "datetime-local", step: "1" }), " – ",
          h("input", { id: "pf-until", type: "datetime-local", step: "1" }),
          h("button", { id: "pf-apply", type: "button" }, "Apply")),
        h("button", { id: "pf-refresh", type: "button" }, "Refresh")),
      h("p", { id: "pf-status", class: "muted" }, "Loading…"),
      h("div", { class: "pf-modebar" },
        h("label", {}, h("input", { type: "radio", name: "pf-mode", value: "single", id: "pf-mode-single" }), " Flame graph"),
        h("label", {}, h("input", { type: "radio", name: "pf-mode", value: "diff", id: "pf-mode-diff" }), " Diff"),
        h("span", { id: "pf-brushpick", hidden: "" }, " Drag on the timeline to set the ",
          h("label", {}, h("input", { type: "radio", name: "pf-brush", value: "base", id: "pf-brush-base" }), " baseline"),
          h("label", {}, h("input", { type: "radio", name: "pf-brush", value: "comp", id: "pf-brush-comp" }), " comparison")),
        h("span", { id: "pf-selinfo", class: "muted" })),
      h("div", { id: "pf-timeline", class: "pf-box" }),
      h("div", { class: "fg-controls" },
        h("input", { id: "pf-search", type: "search", placeholder: "Search functions", size: "28" }),
        h("button", { id: "pf-reset", type: "button" }, "Reset zoom"),
        h("span", { id: "pf-downloads" }),
        h("span", { id: "pf-matched", class: "muted" })),
      h("p", { id: "pf-total", class: "muted" }),
      h("div", { id: "pf-legend", hidden: "" },
        h("span", {}, "shrank"), h("span", { class: "pf-gradient" }), h("span", {}, "grew"),
        h("span", { class: "muted" }, " relative change of a frame's share of its range's total (saturated at ±100%; width: the mean of both shares)")),
      h("div", { id: "pf-flame", class: "pf-box flame-wrap" }),
      h("h2", { id: "pf-top-title" }, "Top functions"),
      h("table", { id: "pf-top" }, h("thead"), h("tbody")));
    page.querySelector("#pf-store").addEventListener("change", (e) => set({ store: e.target.value, type: "", selector: "", sel: "", base: "", comp: "" }, "series"));
    page.querySelector("#pf-type").addEventListener("change", (e) => set({ type: e.target.value }, "profile"));
    page.querySelector("#pf-service").addEventListener("change", (e) => set({ selector: e.target.value ? "{service_name=" + JSON.stringify(e.target.value) + "}" : "{}" }, "profile"));
    page.querySelector("#pf-selector").addEventListener("change", (e) => set({ selector: e.target.value.trim() }, "profile"));
    page.querySelector("#pf-range").addEventListener("change", (e) => {
      if (e.target.value === "custom") { showCustom(true); return; }
      set({ from: e.target.value, until: "now", sel: "", base: "", comp: "" }, "series");
    });
    page.querySelector("#pf-apply").addEventListener("click", () => {
      const f = Date.parse($("pf-from").value), u = Date.parse($("pf-until").value);
      if (!(f < u)) { status("Custom range: from must be before until.", true); return; }
      set({ from: String(f), until: String(u), sel: "", base: "", comp: "" }, "series");
    });
    page.querySelector("#pf-refresh").addEventListener("click", () => load("series"));
    for (const r of page.querySelectorAll("input[name=pf-mode]")) {
      r.addEventListener("change", (e) => {
        st.sort = e.target.value === "diff" ? { key: "delta", desc: true } : { key: "self", desc: true };
        set({ diff: e.target.value === "diff" ? "1" : "" }, "detail");
      });
    }
    for (const r of page.querySelectorAll("input[name=pf-brush]")) {
      r.addEventListener("change", (e) => { st.p.mode = e.target.value; writeHash(); });
    }
    page.querySelector("#pf-search").addEventListener("input", (e) => {
      st.p.search = e.target.value; writeHash();
      if (st.fg) st.fg.setSearch(st.p.search);
    });
    page.querySelector("#pf-reset").addEventListener("click", () => { if (st.fg) st.fg.setZoom([]); });
    return page;
  }
  function showCustom(on) {
    $("pf-custom").hidden = !on;
    if (on) {
      const now = Date.now(), f = resolve(st.p.from, now), u = resolve(st.p.until, now);
      const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 6e4).toISOString().slice(0, 19);
      if (f !== null) $("pf-from").value = local(f);
      if (u !== null) $("pf-until").value = local(u);
    }
  }
  function status(text, error) {
    const s = $("pf-status");
    s.textContent = text;
    s.className = error ? "error" : "muted";
  }
  // Changes settings, rewrites the URL and reloads from `what` on.
  function set(changes, what) {
    Object.assign(st.p, changes);
    writeHash();
    load(what);
  }

  // ---- loading ----
  // what: "stores" (everything), "series" (types and services), "profile" (range + timeline),
  // "detail" (the selection's flame graph or the diff).
  async function load(what) {
    const seq = ++st.seq;
    const page = st.page;
    st.lastTick = Date.now();
    page.dataset.state = "loading";
    try {
      if (what === "stores") {
        const list = await getJSON("/api/v0/web/components");
        st.stores = list.filter((c) => c.name === "pyroscope.store").map((c) => c.id);
        const sel = $("pf-store");
        sel.replaceChildren(...st.stores.map((id) => h("option", { value: id }, id)));
        if (!st.stores.length) {
          status("No pyroscope.store in the configuration: add one and send profiles to its receiver " +
            "(forward_to = [pyroscope.store.LABEL.receiver]; see docs/components/pyroscope.store.md).", true);
          page.dataset.state = "empty";
          return;
        }
        if (!st.stores.includes(st.p.store)) st.p.store = st.stores[0];
        sel.value = st.p.store;
        $("pf-store").parentElement.hidden = st.stores.length < 2;
      }
      const now = Date.now();
      st.range = [resolve(st.p.from, now), resolve(st.p.until, now)];
      if (st.range[0] === null || st.range[1] === null || !(st.range[0] < st.range[1])) {
        throw new Error("bad time range " + st.p.from + " – " + st.p.until);
      }
      const preset = RANGES.find(([v]) => v === st.p.from && st.p.until === "now");
      $("pf-range").value = preset ? preset[0] : "custom";
      showCustom(!preset);
      if (what === "stores" || what === "series") {
        st.series = await getJSON(api("series", { from: st.range[0], until: st.range[1] }));
        if (seq !== st.seq) return;
        fillSeries();
      }
      if (!st.series.series.length) {
        status("No profiles in this range yet. The store receives them from the components whose " +
          "forward_to lists its receiver; the first arrives after one collect interval.");
        clearViews();
        page.dataset.state = "empty";
        return;
      }
      if (what !== "detail") {
        st.profile = await getJSON(api("profile", base({ from: st.range[0], until: st.range[1], top: 100 })));
        if (seq !== st.seq) return;
      }
      await loadDetail(seq);
      if (seq !== st.seq) return;
      page.dataset.state = "ready";
      page.dataset.seq = String(seq);
    } catch (e) {
      if (seq !== st.seq) return;
      status("Profiles unavailable: " + e.message, true);
      page.dataset.state = "error";
    }
  }
  const base = (q) => Object.assign({ selector: st.p.selector, profile_type: st.p.type }, q);

  function fillSeries() {
    const types = st.series.profileTypes || [];
    const tsel = $("pf-type");
    tsel.replaceChildren(...types.map((t) => h("option", { value: t.id }, typeLabel(t))));
    if (!types.some((t) => t.id === st.p.type)) st.p.type = types.length ? types[0].id : "";
    tsel.value = st.p.type;
    const services = [...new Set(st.series.series.filter((s) => s.profileType === st.p.type)
      .map((s) => s.labels.service_name).filter((x) => x))].sort();
    const ssel = $("pf-service");
    ssel.replaceChildren(h("option", { value: "" }, "(all)"), ...services.map((s) => h("option", { value: s }, s)));
    if (!st.p.selector && services.length) {
      st.p.selector = "{service_name=" + JSON.stringify(services.includes("host") ? "host" : services[0]) + "}";
    }
    const m = /^\{service_name="((?:[^"\\]|\\.)*)"\}$/.exec(st.p.selector || "");
    ssel.value = m && services.includes(m[1]) ? m[1] : "";
    $("pf-selector").value = st.p.selector || "{}";
    writeHash();
  }

  function clearViews() {
    if (st.fg) st.fg.setData(null);
    if (st.tl) st.tl.set(null, []);
    $("pf-top").querySelector("tbody").replaceChildren();
    $("pf-total").textContent = "";
    $("pf-downloads").replaceChildren();
  }

  // Default diff ranges: the first and the second half of the range.
  function diffRanges() {
    const [f, u] = st.range, mid = Math.round((f + u) / 2);
    return [pair(st.p.base) || [f, mid], pair(st.p.comp) || [mid, u]];
  }

  async function loadDetail(seq) {
    const diff = st.p.diff === "1";
    const sel = pair(st.p.sel);
    if (diff) {
      const [b, c] = diffRanges();
      st.diffData = await getJSON(api("diff", base({ left_from: b[0], left_until: b[1], right_from: c[0], right_until: c[1] })));
    } else if (sel) {
      st.detail = await getJSON(api("profile", base({ from: sel[0], until: sel[1], top: 100 })));
    } else {
      st.detail = st.profile;
    }
    if (seq !== st.seq) return;
    render();
  }

  // ---- rendering ----
  function render() {
    const diff = st.p.diff === "1";
    const p = st.profile, sel = pair(st.p.sel);
    $("pf-mode-single").checked = !diff; $("pf-mode-diff").checked = diff;
    $("pf-brushpick").hidden = !diff;
    if (!st.p.mode) st.p.mode = "base";
    $("pf-brush-base").checked = st.p.mode !== "comp"; $("pf-brush-comp").checked = st.p.mode === "comp";
    $("pf-legend").hidden = !diff;
    status(p.series + " series, " + p.profiles + " profiles, " + fmt(p.total) + " in " + stamp(p.from) + " – " + stamp(p.until) +
      (p.period ? " (" + Math.round(p.total / p.period).toLocaleString("en-US") + " samples)" : ""));
    if (!st.tl) st.tl = window.RillFlame.timeline($("pf-timeline"), { onSelect: onTimelineSelect });
    const brushes = [];
    if (diff) {
      const [b, c] = diffRanges();
      brushes.push({ from: b[0], until: b[1], fill: "rgba(46,160,67,0.16)", stroke: "rgb(26,127,55)", label: "baseline" });
      brushes.push({ from: c[0], until: c[1], fill: "rgba(224,62,52,0.16)", stroke: "rgb(207,34,46)", label: "comparison" });
    } else if (sel) {
      brushes.push({ from: sel[0], until: sel[1], fill: "rgba(9,105,218,0.14)", stroke: "rgb(9,105,218)", label: "selection" });
    }
    st.tl.set(p.timeline, brushes);
    if (!st.fg) {
      st.fg = window.RillFlame.create($("pf-flame"), {
        format: (v) => fmt(v),
        onDraw: (fg) => showMatched(fg),
      });
    }
    $("pf-search").value = st.p.search || "";
    st.fg.search = st.p.search || "";
    const canvas = st.fg.canvas;
    const dl = $("pf-downloads");
    if (diff) {
      const d = st.diffData;
      $("pf-selinfo").textContent = " baseline " + stamp(d.left.from) + " – " + stamp(d.left.until) +
        ", comparison " + stamp(d.right.from) + " – " + stamp(d.right.until);
      $("pf-total").textContent = "Baseline total " + fmt(d.left.total) + ", comparison total " + fmt(d.right.total) + ".";
      canvas.dataset.mode = "diff";
      canvas.dataset.leftTotal = String(d.left.total); canvas.dataset.rightTotal = String(d.right.total);
      canvas.dataset.total = String(d.right.total);
      st.fg.setData(d.tree, { diff: true, leftTotal: d.left.total, rightTotal: d.left.total === 0 && d.right.total === 0 ? 0 : d.right.total });
      dl.replaceChildren(download("pf-download-base", "baseline .pb.gz", d.left), download("pf-download-comp", "comparison .pb.gz", d.right));
      diffTable(d);
    } else {
      const d = st.detail;
      $("pf-selinfo").textContent = sel ? " selection " + stamp(sel[0]) + " – " + stamp(sel[1]) + " (click the timeline to clear)" :
        " drag on the timeline to select a sub-range";
      $("pf-total").textContent = (sel ? "Selection" : "Range") + " total " + fmt(d.total) + " in " + d.profiles + " profiles" +
        (d.period ? " (" + Math.round(d.total / d.period).toLocaleString("en-US") + " samples)." : ".");
      canvas.dataset.mode = "single";
      canvas.dataset.total = String(d.total);
      delete canvas.dataset.leftTotal; delete canvas.dataset.rightTotal;
      st.fg.setData(d.tree, {});
      dl.replaceChildren(download("pf-download", "Download .pb.gz", d));
      topTable(d);
    }
  }
  function download(id, text, range) {
    return h("a", { id, class: "button", download: "", href: api("pprof", base({ from: range.from, until: range.until })) }, text);
  }
  function showMatched(fg) {
    const m = $("pf-matched");
    if (!m) return;
    fg.canvas.dataset.matched = String(fg.diff ? fg.matchedR : fg.matched);
    if (!fg.search) { m.textContent = ""; return; }
    if (fg.diff) {
      m.textContent = "Matched: baseline " + fmt(fg.matchedL) + " (" + pct(fg.matchedL, fg.lt) + "), comparison " +
        fmt(fg.matchedR) + " (" + pct(fg.matchedR, fg.rt) + ")";
    } else {
      const all = fg.flat ? fg.flat.nodes[0].v : 0;
      m.textContent = "Matched: " + fmt(fg.matched) + " (" + pct(fg.matched, all) + ")";
    }
  }

  function onTimelineSelect(from, until) {
    if (st.p.diff === "1") {
      if (from === null) return;
      const key = st.p.mode === "comp" ? "comp" : "base";
      set({ [key]: from + "-" + until, mode: key === "base" ? "comp" : "base" }, "detail");
    } else {
      set({ sel: from === null ? "" : from + "-" + until }, "detail");
    }
  }

  // A sortable table: columns [key, title, numeric], rows of objects.
  function table(cols, rows, total) {
    const t = $("pf-top");
    const { key, desc } = st.sort;
    const k = cols.some((c) => c[0] === key) ? key : cols[cols.length - 1][0];
    // Share change sorts by its size: the frames that changed most first (either way).
    const val = (r) => (k === "delta" ? Math.abs(r[k]) : r[k]);
    rows.sort((a, b) => {
      const x = val(a), y = val(b);
      const c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return desc ? -c : c;
    });
    t.querySelector("thead").replaceChildren(h("tr", {}, ...cols.map(([ck, title, num]) => {
      const th = h("th", { class: num ? "num sortable" : "sortable", "data-key": ck }, title + (ck === k ? (desc ? " ▼" : " ▲") : ""));
      th.addEventListener("click", () => {
        st.sort = { key: ck, desc: ck === k ? !desc : ck !== "name" };
        render();
      });
      return th;
    })));
    t.querySelector("tbody").replaceChildren(...rows.map((r) => {
      const name = h("a", { href: "#", class: "mono" }, r.name);
      name.addEventListener("click", (e) => {
        e.preventDefault();
        st.p.search = r.name; writeHash();
        $("pf-search").value = r.name;
        st.fg.setSearch(r.name);
      });
      return h("tr", { "data-name": r.name }, h("td", {}, name),
        ...cols.slice(1).map(([ck, , , f]) => h("td", { class: "num", "data-key": ck }, f ? f(r[ck], r) : fmt(r[ck]))));
    }));
    void total;
  }
  function topTable(d) {
    $("pf-top-title").textContent = "Top functions (" + d.top.length + ")";
    const rows = d.top.map((r) => ({ name: r.name, self: r.self, total: r.total }));
    table([["name", "Function"], ["self", "Self", 1], ["selfp", "Self %", 1, (v, r) => pct(r.self, d.total)],
      ["total", "Total", 1], ["totalp", "Total %", 1, (v, r) => pct(r.total, d.total)]],
    rows.map((r) => Object.assign(r, { selfp: r.self, totalp: r.total })), d.total);
  }
  // Diff: self per function on each side (summed over the tree), with the change of its share.
  function diffTable(d) {
    const by = new Map();
    const walk = (n) => {
      const e = by.get(n.n) || { name: n.n, l: 0, r: 0 };
      e.l += n.ls || 0; e.r += n.rs || 0;
      by.set(n.n, e);
      for (const c of n.c || []) walk(c);
    };
    for (const c of d.tree.c || []) walk(c);
    const lt = d.left.total, rt = d.right.total;
    const rows = [...by.values()].filter((e) => e.l > 0 || e.r > 0).map((e) => Object.assign(e, {
      delta: (rt > 0 ? e.r / rt : 0) - (lt > 0 ? e.l / lt : 0),
    }));
    rows.sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta));
    // The 100 largest changes (the table then sorts them as asked).
    rows.length = Math.min(rows.length, 100);
    $("pf-top-title").textContent = "Self time by function, baseline against comparison (" + rows.length + ")";
    table([["name", "Function"], ["l", "Baseline self", 1], ["r", "Comparison self", 1],
      ["delta", "Share change", 1, (v) => (v >= 0 ? "+" : "") + (100 * v).toFixed(2) + " pp"]], rows, rt);
  }

  // ---- entry point (app.js routes #/profiles here) ----
  window.rillProfilesPage = function (main, hash) {
    const p = parseHash(hash);
    const first = !st.page || !main.contains(st.page);
    if (first) {
      st.page = build();
      st.fg = null; st.tl = null;
      main.replaceChildren(st.page);
    }
    const changed = KEYS.filter((k) => (st.p[k] || "") !== (p[k] || ""));
    st.p = p;
    if (first) load("stores");
    else if (changed.some((k) => ["store", "from", "until"].includes(k))) load("stores");
    else if (changed.some((k) => ["type", "selector"].includes(k))) load("profile");
    else if (changed.some((k) => ["sel", "diff", "base", "comp"].includes(k))) load("detail");
    else if (changed.includes("search") && st.fg) st.fg.setSearch(p.search || "");
  };
  // Auto-refresh (app.js calls this instead of re-rendering): relative ranges move with time.
  window.rillProfilesTick = function () {
    if (!st.page || !/^now/.test(st.p.until || "now")) return;
    if (Date.now() - (st.lastTick || 0) < 15000) return;
    st.lastTick = Date.now();
    load("series");
  };
  window.addEventListener("resize", () => { if (st.fg) st.fg.draw(); if (st.tl) st.tl.draw(); });
  window.rillProfiles = st;
})();
