"use strict";
// The token travels in the page's cookie (HttpOnly: this script never sees it), which the
// browser sends with these same-origin requests and with no other site's.
const protos = { 1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp" };
const expanded = new Set();
// Label actions, newest last, each with the state it replaced: [{uid, verdict or null}].
const done = [];
let busy = false;
let shown = [];

function $(id) { return document.getElementById(id); }

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function host(h, p) { return (h.includes(":") ? "[" + h + "]" : h) + ":" + p; }
function when(secs) { return new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 19); }
function some(list, n) { return list.join(", ") + (n > list.length ? " +" + (n - list.length) : ""); }
function who(l) { return l ? " by " + l.by + " at " + when(l.at) : ""; }

function setStatus(text) { $("status").textContent = text; }

function updateUndo() {
  const b = $("undo");
  b.disabled = done.length === 0;
  b.title = done.length ? "undo: " + done[done.length - 1].what : "nothing to undo";
}

// Stores `verdict` for the flows `uids` (one label each), remembering what they were.
async function label(uids, verdict, what, incident, prev) {
  const body = { ids: uids, verdict: verdict };
  if (incident) body.incident = incident;
  const res = await fetch("/api/labels", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await res.json();
  if (!res.ok) {
    setStatus("not stored: " + reply.error);
    return false;
  }
  done.push({ what: what + " as " + verdict, incident: incident, prev: prev });
  updateUndo();
  setStatus("labeled " + what + " as " + verdict + " (" + reply.labels.length + " flows)");
  await refresh(true);
  return true;
}

// Undo: each flow of the last action back to its earlier verdict, or to none.
async function undo() {
  const last = done.pop();
  updateUndo();
  if (!last) return;
  const groups = {};
  for (const p of last.prev) (groups[p.verdict || "unlabeled"] ||= []).push(p.uid);
  for (const [verdict, uids] of Object.entries(groups)) {
    const body = { ids: uids, verdict: verdict, note: "undo" };
    if (last.incident) body.incident = last.incident;
    const res = await fetch("/api/labels", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) {
      setStatus("undo not stored: " + (await res.json()).error);
      return;
    }
  }
  setStatus("undid " + last.what);
  await refresh(true);
}

function stateOf(a) { return a.labeled && a.labeled.verdict !== "unlabeled" ? a.labeled.verdict : "unlabeled"; }

function wanted(state) {
  const f = $("state").value;
  return f === "all" || f === state;
}

function buttons(tr, onClick) {
  const td = document.createElement("td");
  for (const v of ["attack", "benign"]) {
    const b = document.createElement("button");
    b.textContent = v;
    b.className = "label-" + v;
    b.addEventListener("click", () => onClick(v));
    td.appendChild(b);
  }
  tr.appendChild(td);
}

function memberRow(i, a) {
  const tr = document.createElement("tr");
  tr.dataset.uid = a.uid;
  tr.dataset.incident = i.id;
  const state = stateOf(a);
  tr.className = "member " + state;
  cell(tr, "");
  cell(tr, a.time.replace("T", " ").slice(0, 23));
  const flow = host(a.orig_h, a.orig_p) + " \u2192 " + host(a.resp_h, a.resp_p) + " " + (protos[a.proto] || a.proto);
  const f = cell(tr, flow);
  f.title = a.uid + "  " + a.community_id;
  f.colSpan = 3;
  cell(tr, a.score.toFixed(4), "num").title = "threshold " + a.threshold;
  const why = cell(tr, "", "why");
  const model = "reconstruction " + a.recon_error.toFixed(4) + ", prototype " + a.prototype +
    " (similarity " + a.similarity.toFixed(3) + ")";
  if (a.indicator) {
    why.textContent = "indicator " + a.indicator;
    why.className = "why ind";
  } else {
    // Reasons in traffic terms when the model has them; MNPWAD's own explanation on hover.
    why.textContent = a.reason || model;
  }
  why.title = model + "  model " + a.model;
  cell(tr, state + who(a.labeled), "label");
  buttons(tr, v => label([a.uid], v, a.uid, null, [{ uid: a.uid, verdict: a.label || null }]));
  return tr;
}

function incidentRow(i) {
  const tr = document.createElement("tr");
  tr.dataset.incident = i.id;
  tr.className = "incident " + i.label;
  const t = document.createElement("td");
  const x = document.createElement("button");
  x.className = "expand";
  x.textContent = expanded.has(i.id) ? "\u25be" : "\u25b8";
  x.title = "show its " + i.flows + " alerts";
  x.addEventListener("click", () => {
    if (expanded.has(i.id)) expanded.delete(i.id); else expanded.add(i.id);
    render(shown);
  });
  t.appendChild(x);
  tr.appendChild(t);
  cell(tr, when(i.first) + (i.last > i.first ? " \u2013 " + when(i.last).slice(11) : ""));
  cell(tr, i.flows + " " + (i.flows === 1 ? "flow" : "flows") + ", " + i.shape, "flows");
  cell(tr, some(i.sources, i.n_sources) + " \u2192 " + some(i.destinations, i.n_destinations), "wrap");
  cell(tr, some(i.ports.map(String), i.n_ports) + " (" + i.services.join(", ") + ")", "wrap");
  cell(tr, i.peak_score.toFixed(4) + " / " + i.median_score.toFixed(4), "num").title = "peak / median score";
  cell(tr, i.reason, "why").title = "top alert " + i.top + ", prototype " + i.prototype;
  const c = i.labels;
  const counts = i.label === "mixed" ? " (" + c.attack + " attack, " + c.benign + " benign, " + c.unlabeled + " unlabeled)" : "";
  cell(tr, i.label + counts + who(i.labeled), "label");
  buttons(tr, v => label(i.members.map(a => a.uid), v, "incident " + i.id, i.id,
    i.members.map(a => ({ uid: a.uid, verdict: a.label || null }))));
  return tr;
}

function render(incidents) {
  shown = incidents;
  const tbody = $("incidents");
  tbody.replaceChildren();
  let n = 0;
  for (const i of incidents) {
    const states = i.members.map(stateOf);
    if (!states.some(wanted)) continue;
    n++;
    tbody.appendChild(incidentRow(i));
    if (expanded.has(i.id))
      i.members.forEach((a, k) => { if (wanted(states[k])) tbody.appendChild(memberRow(i, a)); });
  }
  return n;
}

async function refresh(force) {
  if (busy && !force) return;
  busy = true;
  try {
    const q = encodeURIComponent($("filter").value.trim());
    const res = await fetch("/api/incidents?limit=200&q=" + q);
    const body = await res.json();
    if (!res.ok) throw new Error(body.error);
    // Do not redraw under the analyst's pointer while nothing changed.
    const key = JSON.stringify([$("state").value, body.incidents.map(i => [i.id, i.flows, i.members.map(a => a.labeled)])]);
    if (force || key !== refresh.last) {
      const n = render(body.incidents);
      refresh.last = key;
      $("count").textContent = n + " of " + body.total + " incidents";
    }
    $("status").dataset.loaded = "1";
    if ($("status").textContent === "loading...") setStatus("");
  } catch (e) {
    setStatus("cannot load incidents: " + e.message);
  }
  try {
    await refreshPictures();
  } catch (e) {
    setStatus("cannot load the pictures: " + e.message);
  } finally {
    busy = false;
  }
}

// The pictures: inline SVG drawn from GET /api/summary on every poll (no library, no font
// from elsewhere). Each element carries its numbers as data attributes (data-count, ...).
const SVG = "http://www.w3.org/2000/svg";

function el(parent, name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}

function tip(e, text) { el(e, "title", {}, text); return e; }
function pct(r) { return (100 * r).toFixed(r >= 0.1 ? 0 : r >= 0.01 ? 1 : 2) + "%"; }
function short(v) { return Number(v.toPrecision(3)).toString(); }
function clock(secs) { return when(secs).slice(11); }

// Plot area of a chart: left, top, width, height, within the SVG's viewBox.
function area(svg, l, r, t, b) {
  const vb = svg.viewBox.baseVal;
  return { l: l, t: t, w: vb.width - l - r, h: vb.height - t - b, b: vb.height - b };
}

function axes(svg, a) {
  el(svg, "line", { class: "axis", x1: a.l, y1: a.b, x2: a.l + a.w, y2: a.b });
  el(svg, "line", { class: "axis", x1: a.l, y1: a.t, x2: a.l, y2: a.b });
}

// Alerts per bucket of capture time (bars, left scale) and the alert rate the threshold
// gave in each bucket, alerts / scored flows (line, right scale), beside the rate it aims at
// (dashed; a rate's, or a model's false-positive budget; none for a fixed score).
function drawTimeline(t, target) {
  const svg = $("timeline");
  svg.replaceChildren();
  Object.assign(svg.dataset, { alerts: t.alerts, scored: t.scored, bucketSecs: t.bucket_secs, rate: t.rate });
  const a = area(svg, 30, 38, 12, 22);
  axes(svg, a);
  if (!t.buckets.length) {
    el(svg, "text", { class: "empty", x: a.l + 10, y: a.t + 20 }, "no flows scored yet");
    return;
  }
  const n = t.buckets.length;
  const maxA = Math.max(1, ...t.buckets.map(b => b.alerts));
  const rates = t.buckets.map(b => (b.scored ? b.alerts / b.scored : 0));
  const maxR = Math.max(...rates, target ? target.rate : 0) || 1;
  const bw = a.w / n;
  t.buckets.forEach((b, i) => {
    const h = (b.alerts / maxA) * a.h;
    const r = el(svg, "rect", {
      class: "bar", x: a.l + i * bw + 0.5, y: a.b - h, width: Math.max(bw - 1, 0.5), height: h,
      "data-start": b.start, "data-count": b.alerts, "data-scored": b.scored,
    });
    tip(r, when(b.start) + " +" + t.bucket_secs + " s: " + b.alerts + " alerts of " + b.scored +
      " flows (" + pct(rates[i]) + ")");
  });
  const points = rates.map((r, i) => (a.l + (i + 0.5) * bw).toFixed(1) + "," + (a.b - (r / maxR) * a.h).toFixed(1));
  tip(el(svg, "polyline", { class: "rate", points: points.join(" "), "data-rates": rates.join(",") }),
    "alert rate per bucket; " + pct(t.rate) + " over all " + t.scored + " flows");
  if (target) {
    const ty = a.b - (target.rate / maxR) * a.h;
    tip(el(svg, "line", { class: "target", x1: a.l, y1: ty, x2: a.l + a.w, y2: ty, "data-rate": target.rate, "data-kind": target.kind }),
      "the threshold aims at " + pct(target.rate) + (target.kind === "budget" ? " of the normal-looking flows (its false-positive budget)" : " of all flows"));
    el(svg, "text", { class: "key-rate", x: a.l + a.w - 2, y: ty - 3, "text-anchor": "end" },
      target.kind + " " + pct(target.rate));
  }
  el(svg, "text", { x: a.l - 3, y: a.t + 4, "text-anchor": "end" }, String(maxA));
  el(svg, "text", { x: a.l - 3, y: a.b, "text-anchor": "end" }, "0");
  el(svg, "text", { class: "key-rate", x: a.l + a.w + 3, y: a.t + 4 }, pct(maxR));
  el(svg, "text", { x: a.l + a.w + 3, y: a.b }, "0%");
  el(svg, "text", { x: a.l, y: a.b + 14 }, clock(t.buckets[0].start));
  el(svg, "text", { x: a.l + a.w, y: a.b + 14, "text-anchor": "end" }, clock(t.buckets[n - 1].start + t.bucket_secs));
  el(svg, "text", { x: a.l + a.w / 2, y: a.b + 14, "text-anchor": "middle" },
    t.alerts + " alerts, " + t.bucket_secs + " s bars");
}

// The scores of the recent flows (counts on a log scale: alerts are few) and the threshold.
function drawScores(h, threshold) {
  const svg = $("scores");
  svg.replaceChildren();
  svg.dataset.flows = h.flows;
  const a = area(svg, 30, 8, 12, 22);
  axes(svg, a);
  const lo = h.bins[0].lo, hi = h.bins[h.bins.length - 1].hi;
  const x = v => a.l + ((v - lo) / (hi - lo || 1)) * a.w;
  const maxC = Math.max(1, ...h.bins.map(b => b.count));
  const y = c => (Math.log10(1 + c) / Math.log10(1 + maxC)) * a.h;
  for (const b of h.bins) {
    const above = threshold !== null && b.lo >= threshold;
    const r = el(svg, "rect", {
      class: above ? "bin above" : "bin", x: x(b.lo) + 0.25, y: a.b - y(b.count),
      width: Math.max(x(b.hi) - x(b.lo) - 0.5, 0.5), height: y(b.count),
      "data-lo": b.lo, "data-hi": b.hi, "data-count": b.count,
    });
    tip(r, "scores " + short(b.lo) + " to " + short(b.hi) + ": " + b.count + " flows");
  }
  if (threshold !== null) {
    const tx = x(threshold);
    tip(el(svg, "line", { class: "threshold", x1: tx, y1: a.t - 4, x2: tx, y2: a.b, "data-threshold": threshold }),
      "threshold " + threshold + ": " + h.at_or_above_threshold + " of " + h.flows + " recent flows at or above");
    el(svg, "text", { x: tx + (tx > a.l + a.w / 2 ? -3 : 3), y: a.t + 6, "text-anchor": tx > a.l + a.w / 2 ? "end" : "start" },
      "threshold " + short(threshold));
  }
  el(svg, "text", { x: a.l - 3, y: a.t + 4, "text-anchor": "end" }, String(maxC));
  el(svg, "text", { x: a.l - 3, y: a.b, "text-anchor": "end" }, "0");
  el(svg, "text", { x: a.l, y: a.b + 14 }, short(lo));
  el(svg, "text", { x: a.l + a.w, y: a.b + 14, "text-anchor": "end" }, short(hi));
  el(svg, "text", { x: a.l + a.w / 2, y: a.b + 14, "text-anchor": "middle" }, h.flows + " flows, log scale");
}

// Addresses by alert count, as horizontal bars.
function drawTalkers(id, list) {
  const svg = $(id);
  svg.replaceChildren();
  svg.dataset.n = list.length;
  if (!list.length) {
    el(svg, "text", { class: "empty", x: 10, y: 20 }, "no alerts yet");
    return;
  }
  const max = Math.max(1, ...list.map(t => t.alerts));
  const row = Math.min(16, (svg.viewBox.baseVal.height - 4) / list.length);
  list.forEach((t, i) => {
    const g = el(svg, "g", { class: "talker", "data-addr": t.addr, "data-count": t.alerts });
    tip(g, t.addr + ": " + t.alerts + " alerts");
    const yy = 2 + i * row;
    const label = t.addr.length > 18 ? t.addr.slice(0, 17) + "\u2026" : t.addr;
    el(g, "text", { x: 100, y: yy + row * 0.7, "text-anchor": "end" }, label);
    const w = (t.alerts / max) * 80;
    el(g, "rect", { x: 104, y: yy + 1, width: Math.max(w, 0.5), height: row - 3 });
    el(g, "text", { x: 107 + w, y: yy + row * 0.7 }, String(t.alerts));
  });
}

async function refreshPictures() {
  const res = await fetch("/api/summary?bins=30&top=10");
  const text = await res.text();
  const s = JSON.parse(text);
  if (!res.ok) throw new Error(s.error);
  if (text === refreshPictures.last) return;
  drawTimeline(s.timeline, s.target_rate);
  drawScores(s.scores, s.threshold);
  drawTalkers("sources", s.top_sources);
  drawTalkers("destinations", s.top_destinations);
  refreshPictures.last = text;
  $("pictures").dataset.drawn = String((Number($("pictures").dataset.drawn) || 0) + 1);
}

$("filter").addEventListener("input", () => refresh(true));
$("state").addEventListener("change", () => refresh(true));
$("undo").addEventListener("click", undo);
updateUndo();
refresh();
setInterval(refresh, 2000);
