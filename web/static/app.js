// Sluice's pages: copy buttons, and host statuses that follow the event stream (the admin's)
// or a short poll (a user's portal). No inline script anywhere: the Content-Security-Policy
// allows only this file.
"use strict";

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  const done = () => {
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => select(source));
  } else {
    select(source);
    try { document.execCommand("copy"); done(); } catch (_) { /* selected for the user */ }
  }
});

function select(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

function statusCells() {
  return Array.from(document.querySelectorAll("[data-host-id]"));
}

async function refresh(cell) {
  try {
    const resp = await fetch("/web/hosts/" + cell.dataset.hostId, { credentials: "same-origin" });
    if (!resp.ok) return;
    const host = await resp.json();
    if (cell.textContent !== host.status) {
      cell.textContent = host.status;
      cell.className = "status s-" + host.status;
    }
  } catch (_) { /* the next event or poll tries again */ }
}

// A new event as the first row of the event feed, when it matches the page's filter.
function addEvent(event) {
  const table = document.querySelector("table#events");
  if (!table) return;
  const wanted = table.dataset.live;
  if (wanted !== "all" && wanted !== event.action) return;
  if (table.dataset.host && table.dataset.host !== event.host_id) return;
  if (table.dataset.user && table.dataset.user !== event.user_id) return;
  const row = document.createElement("tr");
  for (const value of [event.created_at, event.actor, event.action, event.target_id, event.source_ip]) {
    const cell = document.createElement("td");
    cell.textContent = value || "";
    row.appendChild(cell);
  }
  table.tBodies[0].prepend(row);
}

function follow() {
  const admin = document.querySelector("header.top nav a[href='/admin/hosts']");
  const live = document.querySelector("table#events") || statusCells().length > 0;
  if (!live) return;
  if (admin) {
    const stream = new EventSource("/web/events");
    // What changed before the stream opened is read once when it opens.
    stream.onopen = () => {
      document.body.dataset.live = "on";
      statusCells().forEach(refresh);
    };
    stream.onmessage = (msg) => {
      let event;
      try { event = JSON.parse(msg.data); } catch (_) { return; }
      addEvent(event);
      if (!event.host_id) return;
      for (const cell of statusCells()) {
        if (cell.dataset.hostId === event.host_id) refresh(cell);
      }
    };
    stream.addEventListener("fell_behind", () => window.location.reload());
  } else {
    setInterval(() => statusCells().forEach(refresh), 3000);
  }
}

document.addEventListener("DOMContentLoaded", follow);

// The egress form shows the fieldset of the chosen kind (without script, both show).
function kindSwitch() {
  const select = document.getElementById("tunnel_type");
  if (!select) return;
  const apply = () => {
    document.querySelectorAll("fieldset[data-kind]").forEach((f) => {
      f.hidden = f.dataset.kind !== select.value;
    });
  };
  select.addEventListener("change", apply);
  apply();
}

document.addEventListener("DOMContentLoaded", kindSwitch);

// A generated private key leaves as a file made in the browser; Sluice keeps no copy.
document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button.download");
  if (!button) return;
  const source = document.getElementById(button.dataset.download);
  if (!source) return;
  const blob = new Blob([source.value], { type: "application/octet-stream" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "id_" + (button.dataset.filename || "key").replace(/[^A-Za-z0-9._-]/g, "_");
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});
