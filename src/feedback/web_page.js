"use strict";
// The token travels in the page's cookie (HttpOnly: this script never sees it), which the
// browser sends with these same-origin requests and with no other site's.
const protos = { 1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp" };
let busy = false;

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function host(h, p) { return (h.includes(":") ? "[" + h + "]" : h) + ":" + p; }

async function label(a, verdict, tr) {
  const res = await fetch("/api/labels", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: a.uid, verdict: verdict }),
  });
  const body = await res.json();
  if (res.ok) {
    a.label = verdict;
    tr.className = verdict;
    tr.querySelector("td.label").textContent = verdict;
    document.getElementById("status").textContent = "labeled " + a.uid + " as " + verdict;
  } else {
    document.getElementById("status").textContent = "not stored: " + body.error;
  }
}

function render(alerts) {
  const tbody = document.getElementById("alerts");
  tbody.replaceChildren();
  for (const a of alerts) {
    const tr = document.createElement("tr");
    tr.dataset.uid = a.uid;
    if (a.label) tr.className = a.label;
    cell(tr, a.time.replace("T", " ").slice(0, 23));
    const flow = host(a.orig_h, a.orig_p) + " \u2192 " + host(a.resp_h, a.resp_p) + " " + (protos[a.proto] || a.proto);
    cell(tr, flow).title = a.uid + "  " + a.community_id;
    cell(tr, a.score.toFixed(4), "num").title = "threshold " + a.threshold;
    const why = cell(tr, "", "why");
    if (a.indicator) {
      why.textContent = "indicator " + a.indicator;
      why.className = "why ind";
    } else {
      const model = "reconstruction " + a.recon_error.toFixed(4) + ", prototype " + a.prototype +
        " (similarity " + a.similarity.toFixed(3) + ")";
      // Reasons in traffic terms when the model has them; MNPWAD's own explanation on hover.
      why.textContent = a.reason || model;
      why.title = model;
    }
    cell(tr, a.model);
    const td = cell(tr, a.label || "", "label");
    const actions = document.createElement("td");
    for (const v of ["attack", "benign"]) {
      const b = document.createElement("button");
      b.textContent = v;
      b.className = "label-" + v;
      b.addEventListener("click", () => label(a, v, tr));
      actions.appendChild(b);
    }
    tr.appendChild(actions);
    tbody.appendChild(tr);
  }
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const q = encodeURIComponent(document.getElementById("filter").value.trim());
    const res = await fetch("/api/alerts?limit=200&q=" + q);
    const body = await res.json();
    if (!res.ok) throw new Error(body.error);
    // Do not redraw under the analyst's pointer while nothing changed.
    const key = JSON.stringify(body.alerts.map(a => [a.seq, a.label]));
    if (key !== refresh.last) {
      render(body.alerts);
      refresh.last = key;
    }
    document.getElementById("status").dataset.loaded = "1";
    if (!document.getElementById("status").textContent.startsWith("labeled"))
      document.getElementById("status").textContent = body.alerts.length + " alerts";
  } catch (e) {
    document.getElementById("status").textContent = "cannot load alerts: " + e.message;
  } finally {
    busy = false;
  }
}

document.getElementById("filter").addEventListener("input", () => { refresh.last = null; refresh(); });
refresh();
setInterval(refresh, 2000);
