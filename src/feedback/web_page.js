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
  } finally {
    busy = false;
  }
}

$("filter").addEventListener("input", () => refresh(true));
$("state").addEventListener("change", () => refresh(true));
$("undo").addEventListener("click", undo);
updateUndo();
refresh();
setInterval(refresh, 2000);
