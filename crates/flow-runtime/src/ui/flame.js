// rill web UI: a canvas flame graph and a timeline, used by the Profiles page (profiles.js).
//
// RillFlame.create(container, opts) draws a call tree ({n, v, s, c} nodes, or a diff tree with
// {n, l, r, ls, rs, c}) on one <canvas>. The tree is flattened once per data set into typed
// arrays in pre-order (x offset, width, depth, end of subtree), so a redraw (zoom, search,
// resize) walks the arrays and skips whole subtrees narrower than half a pixel; consecutive
// tiny frames of one row are drawn as one grey block. A redraw costs the visible frames, not
// the tree's size. Names are drawn with fillText (never as HTML).
//
// RillTimeline.create(container, opts) draws totals per time step as bars, with coloured
// ranges ("brushes"); dragging across it picks a new range (snapped to whole steps).
"use strict";

(function () {
  const ROW = 18;
  const FONT = "11px ui-monospace, SFMono-Regular, Menlo, monospace";

  function hashColour(name) {
    let x = 0;
    for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
    return "rgb(" + (205 + (x % 50)) + "," + (80 + ((x >>> 8) % 130)) + "," + (30 + ((x >>> 16) % 40)) + ")";
  }

  // Diff colour: grey when unchanged, towards red as the share grew, green as it shrank;
  // saturated at ±100% relative change (and for frames on one side only).
  function diffColour(rel) {
    const t = Math.min(1, Math.abs(rel));
    const to = rel > 0 ? [224, 62, 52] : [46, 160, 67];
    const from = [214, 214, 214];
    const c = from.map((f, i) => Math.round(f + (to[i] - f) * t));
    return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
  }

  // Relative change of a frame's share of its side's total (Infinity: new, -1: gone).
  function relChange(l, r, lt, rt) {
    const ls = lt > 0 ? l / lt : 0, rs = rt > 0 ? r / rt : 0;
    if (ls === 0) return rs > 0 ? Infinity : 0;
    return (rs - ls) / ls;
  }

  // Flattens the tree in pre-order. Widths are in "value space": v, or in diff mode the mean of
  // the two shares, so frames present on one side only still have a width.
  function flatten(root, diff, lt, rt) {
    const nodes = [], xs = [], ws = [], ds = [], ends = [];
    const weight = diff
      ? (n) => ((lt > 0 ? n.l / lt : 0) + (rt > 0 ? n.r / rt : 0)) / 2
      : (n) => n.v;
    const visit = (n, d, x) => {
      const i = nodes.length;
      nodes.push(n); xs.push(x); ws.push(weight(n)); ds.push(d); ends.push(0);
      let cx = x;
      for (const c of n.c || []) { visit(c, d + 1, cx); cx += weight(c); }
      ends[i] = nodes.length;
    };
    visit(root, 0, 0);
    return {
      nodes, xs: Float64Array.from(xs), ws: Float64Array.from(ws),
      ds: Int32Array.from(ds), ends: Int32Array.from(ends),
    };
  }

  function create(container, opts) {
    opts = opts || {};
    const fmt = opts.format || ((v) => String(v));
    const canvas = document.createElement("canvas");
    canvas.className = "flame-canvas";
    const tip = document.createElement("div");
    tip.className = "flame-tip";
    tip.hidden = true;
    container.replaceChildren(canvas, tip);
    const ctx = canvas.getContext("2d");
    const fg = {
      canvas, data: null, flat: null, diff: false, lt: 0, rt: 0, zoom: [], search: "",
      rects: [], rows: [], matched: 0, matchedL: 0, matchedR: 0, stats: {},
    };
    let colours = null, matches = null;

    fg.setData = function (tree, o) {
      o = o || {};
      fg.data = tree; fg.diff = !!o.diff; fg.lt = o.leftTotal || 0; fg.rt = o.rightTotal || 0;
      const t0 = performance.now();
      fg.flat = tree ? flatten(tree, fg.diff, fg.lt, fg.rt) : null;
      colours = fg.flat ? new Array(fg.flat.nodes.length) : null;
      matches = null;
      fg.stats.flattenMs = performance.now() - t0;
      fg.draw();
    };
    fg.setSearch = function (term) { fg.search = term || ""; matches = null; fg.draw(); };
    fg.setZoom = function (names) { fg.zoom = names.slice(); fg.draw(); };

    const children = (i) => {
      const out = [], f = fg.flat;
      for (let j = i + 1; j < f.ends[i]; j = f.ends[j]) out.push(j);
      return out;
    };
    // The node path (indices, root first) of the zoom names, as deep as it exists.
    function zoomPath() {
      const path = [0];
      for (const name of fg.zoom) {
        const next = children(path[path.length - 1]).find((j) => fg.flat.nodes[j].n === name);
        if (next === undefined) break;
        path.push(next);
      }
      fg.zoom = path.slice(1).map((i) => fg.flat.nodes[i].n);
      return path;
    }
    function colourOf(i) {
      if (colours[i] === undefined) {
        const n = fg.flat.nodes[i];
        colours[i] = fg.diff ? diffColour(relChange(n.l, n.r, fg.lt, fg.rt)) : hashColour(n.n);
      }
      return colours[i];
    }
    // Which nodes match the search, and the matched value (outermost matches only).
    function searchMatches() {
      const f = fg.flat, term = fg.search.toLowerCase();
      matches = new Uint8Array(f.nodes.length);
      fg.matched = 0; fg.matchedL = 0; fg.matchedR = 0;
      if (!term) return;
      let outerEnd = -1;
      for (let i = 0; i < f.nodes.length; i++) {
        const n = f.nodes[i];
        if (n.n.toLowerCase().includes(term)) {
          matches[i] = 1;
          if (i >= outerEnd) {
            outerEnd = f.ends[i];
            if (fg.diff) { fg.matchedL += n.l; fg.matchedR += n.r; } else fg.matched += n.v;
          }
        }
      }
    }

    fg.draw = function () {
      const t0 = performance.now();
      const width = Math.max(300, container.clientWidth || 1200);
      fg.rects = []; fg.rows = [];
      if (!fg.flat) {
        canvas.width = width; canvas.height = 0; canvas.style.height = "0px";
        return;
      }
      if (!matches) searchMatches();
      const f = fg.flat, path = zoomPath(), focus = path[path.length - 1];
      const scale = f.ws[focus] > 0 ? width / f.ws[focus] : 0, fx = f.xs[focus];
      const rects = fg.rects;
      for (const i of path) rects.push({ i, x: 0, w: width, d: f.ds[i], anc: i !== focus });
      // Runs of frames too narrow to draw, per depth: [x, end, nodes].
      const runs = [];
      const flush = (d) => {
        const r = runs[d];
        if (r && r[1] - r[0] >= 1) rects.push({ i: -1, x: r[0], w: r[1] - r[0], d, tiny: r[2] });
        runs[d] = null;
      };
      let i = focus + 1, maxDepth = f.ds[focus], skipped = 0;
      while (i < f.ends[focus]) {
        const w = f.ws[i] * scale, x = (f.xs[i] - fx) * scale, d = f.ds[i];
        if (w < 0.5) {
          const r = runs[d];
          if (r && Math.abs(r[1] - x) < 0.01) { r[1] = x + w; r[2] += f.ends[i] - i; } else {
            flush(d); runs[d] = [x, x + w, f.ends[i] - i];
          }
          skipped += f.ends[i] - i;
          i = f.ends[i];
          continue;
        }
        rects.push({ i, x, w, d, anc: false });
        if (d > maxDepth) maxDepth = d;
        i++;
      }
      runs.forEach((_, d) => flush(d));
      const height = (maxDepth + 1) * ROW + 1;
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
      canvas.style.width = width + "px"; canvas.style.height = height + "px";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = FONT;
      ctx.textBaseline = "middle";
      const charW = ctx.measureText("m").width || 7;
      const searching = fg.search !== "";
      for (const r of rects) {
        (fg.rows[r.d] = fg.rows[r.d] || []).push(r);
        const y = r.d * ROW;
        if (r.i < 0) {
          ctx.fillStyle = "rgb(200,200,200)";
          ctx.fillRect(r.x, y, Math.max(0.5, r.w - 0.5), ROW - 1);
          continue;
        }
        const hit = searching && matches[r.i] === 1;
        r.colour = r.anc ? "rgb(225,225,225)" : hit && !fg.diff ? "rgb(190,70,230)" : colourOf(r.i);
        r.match = hit;
        ctx.fillStyle = r.colour;
        ctx.fillRect(r.x, y, Math.max(0.5, r.w - 0.5), ROW - 1);
        if (hit && fg.diff) {
          ctx.strokeStyle = "rgb(130,30,200)"; ctx.lineWidth = 2;
          ctx.strokeRect(r.x + 1, y + 1, Math.max(0.5, r.w - 2.5), ROW - 3);
        }
        if (r.w > 24) {
          const name = f.nodes[r.i].n, chars = Math.floor((r.w - 6) / charW);
          ctx.fillStyle = r.anc ? "#57606a" : "#1f2328";
          ctx.fillText(name.length > chars ? name.slice(0, Math.max(0, chars - 1)) + "…" : name, r.x + 3, y + ROW / 2);
        }
      }
      canvas.dataset.zoom = fg.zoom.join(";");
      fg.stats.drawMs = performance.now() - t0;
      fg.stats.nodes = f.nodes.length; fg.stats.drawn = rects.length; fg.stats.skipped = skipped;
      if (opts.onDraw) opts.onDraw(fg);
    };

    function at(ev) {
      const box = canvas.getBoundingClientRect();
      const x = ev.clientX - box.left, y = ev.clientY - box.top;
      const row = fg.rows[Math.floor(y / ROW)] || [];
      return { x, y, r: row.find((r) => x >= r.x && x < r.x + r.w) };
    }
    canvas.addEventListener("click", (ev) => {
      const { r } = at(ev);
      if (!r || r.i < 0) return;
      const f = fg.flat, names = [];
      for (let i = r.i; i > 0;) {
        names.unshift(f.nodes[i].n);
        let p = i - 1;
        while (p > 0 && !(f.ds[p] === f.ds[i] - 1 && f.ends[p] > i)) p--;
        i = p;
      }
      fg.zoom = names;
      fg.draw();
      if (opts.onZoom) opts.onZoom(names);
    });
    canvas.addEventListener("mousemove", (ev) => {
      const { x, y, r } = at(ev);
      if (!r) { tip.hidden = true; return; }
      const lines = [];
      if (r.i < 0) {
        lines.push(r.tiny + " frames too narrow to draw (zoom in to see them)");
      } else {
        const n = fg.flat.nodes[r.i];
        lines.push(n.n);
        if (fg.diff) {
          const pc = (a, b) => (b > 0 ? (100 * a / b).toFixed(2) : "0.00") + "%";
          const rel = relChange(n.l, n.r, fg.lt, fg.rt);
          lines.push("baseline " + fmt(n.l) + " (" + pc(n.l, fg.lt) + "), comparison " + fmt(n.r) + " (" + pc(n.r, fg.rt) + ")");
          lines.push(rel === Infinity ? "new in the comparison" : "share " + (rel >= 0 ? "+" : "") + (100 * rel).toFixed(1) + "%");
        } else {
          const own = n.s !== undefined ? n.s : (n.c || []).reduce((a, c) => a - c.v, n.v);
          const root = fg.flat.nodes[0].v;
          lines.push(fmt(n.v) + " (" + (root > 0 ? (100 * n.v / root).toFixed(2) : "0.00") + "% of all), self " + fmt(own));
        }
      }
      tip.replaceChildren(...lines.flatMap((l, k) => (k ? [document.createElement("br"), document.createTextNode(l)] : [document.createTextNode(l)])));
      tip.hidden = false;
      tip.style.left = Math.min(x + 12, canvas.clientWidth - 300) + "px";
      tip.style.top = (y + 16) + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    // The drawn frames, for tests and for the page: name, value(s), box, colour, match.
    fg.frames = function () {
      return fg.rects.filter((r) => r.i >= 0).map((r) => {
        const n = fg.flat.nodes[r.i];
        const o = { name: n.n, x: r.x, y: r.d * ROW, w: r.w, depth: r.d, colour: r.colour, match: !!r.match, ancestor: r.anc };
        if (fg.diff) { o.l = n.l; o.r = n.r; o.rel = relChange(n.l, n.r, fg.lt, fg.rt); } else o.v = n.v;
        return o;
      });
    };
    return fg;
  }

  // ---- timeline ----
  function timeline(container, opts) {
    opts = opts || {};
    const canvas = document.createElement("canvas");
    canvas.className = "timeline-canvas";
    container.replaceChildren(canvas);
    const ctx = canvas.getContext("2d");
    const H = 96, AXIS = 16;
    const tl = { canvas, data: null, brushes: [], drag: null };
    const span = () => tl.data.values.length * tl.data.stepMs;
    const xOf = (t, W) => ((t - tl.data.startMs) / span()) * W;
    const tOf = (x, W) => tl.data.startMs + Math.max(0, Math.min(1, x / W)) * span();

    tl.set = function (data, brushes) { tl.data = data; tl.brushes = brushes || []; tl.draw(); };
    tl.draw = function () {
      const W = Math.max(300, container.clientWidth || 1200);
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
      canvas.style.width = W + "px"; canvas.style.height = H + "px";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, W, H);
      if (!tl.data || !tl.data.values.length) return;
      const vals = tl.data.values, max = Math.max(1, ...vals), bw = W / vals.length;
      canvas.dataset.startMs = tl.data.startMs; canvas.dataset.stepMs = tl.data.stepMs;
      canvas.dataset.steps = vals.length;
      for (const b of tl.brushes) {
        if (b.from === null || b.from === undefined) continue;
        const x0 = xOf(b.from, W), x1 = xOf(b.until, W);
        ctx.fillStyle = b.fill;
        ctx.fillRect(x0, 0, Math.max(1, x1 - x0), H - AXIS);
        if (b.label) { ctx.fillStyle = b.stroke; ctx.font = "11px system-ui, sans-serif"; ctx.fillText(b.label, x0 + 3, 11); }
      }
      ctx.fillStyle = "rgb(84,130,200)";
      vals.forEach((v, k) => {
        if (v <= 0) return;
        const h = Math.max(1, (v / max) * (H - AXIS - 14));
        ctx.fillRect(k * bw, H - AXIS - h, Math.max(1, bw - (bw > 3 ? 1 : 0)), h);
      });
      for (const b of tl.brushes) {
        if (b.from === null || b.from === undefined) continue;
        const x0 = xOf(b.from, W), x1 = xOf(b.until, W);
        ctx.strokeStyle = b.stroke; ctx.lineWidth = 2;
        ctx.strokeRect(x0 + 1, 1, Math.max(1, x1 - x0 - 2), H - AXIS - 2);
      }
      if (tl.drag && tl.drag.x1 !== undefined) {
        ctx.fillStyle = "rgba(31,35,40,0.15)";
        ctx.fillRect(Math.min(tl.drag.x0, tl.drag.x1), 0, Math.abs(tl.drag.x1 - tl.drag.x0), H - AXIS);
      }
      // Time axis: about one label per 110 px.
      ctx.fillStyle = "#656d76"; ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "alphabetic";
      ctx.fillRect(0, H - AXIS, W, 1);
      const ticks = Math.max(2, Math.floor(W / 110));
      const long = span() > 86400000 / 2;
      for (let k = 0; k < ticks; k++) {
        const x = (k / ticks) * W, d = new Date(tOf(x, W));
        const text = (long ? (d.getMonth() + 1) + "/" + d.getDate() + " " : "") +
          String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
        ctx.fillRect(x, H - AXIS, 1, 4);
        ctx.fillText(text, x + 2, H - 3);
      }
    };
    const px = (ev) => ev.clientX - canvas.getBoundingClientRect().left;
    canvas.addEventListener("mousedown", (ev) => { if (tl.data) { tl.drag = { x0: px(ev) }; ev.preventDefault(); } });
    window.addEventListener("mousemove", (ev) => { if (tl.drag) { tl.drag.x1 = px(ev); tl.draw(); } });
    window.addEventListener("mouseup", (ev) => {
      if (!tl.drag) return;
      const W = canvas.clientWidth, x0 = tl.drag.x0, x1 = px(ev);
      tl.drag = null;
      if (Math.abs(x1 - x0) < 3) { tl.draw(); if (opts.onSelect) opts.onSelect(null, null); return; }
      // Snap outwards to whole steps, so a range holds whole bars.
      const step = tl.data.stepMs, s0 = tl.data.startMs;
      const a = tOf(Math.min(x0, x1), W), b = tOf(Math.max(x0, x1), W);
      const from = s0 + Math.floor((a - s0) / step) * step, until = s0 + Math.ceil((b - s0) / step) * step;
      tl.draw();
      if (opts.onSelect) opts.onSelect(from, Math.max(until, from + step));
    });
    return tl;
  }

  window.RillFlame = { create, timeline, diffColour, relChange };
})();
