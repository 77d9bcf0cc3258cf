// The desktop page: noVNC's RFB client (vendored) on a WebSocket this script opens with a
// single-use ticket it asks Sluice for. Sluice answers the VNC handshake itself, so the
// desktop's own password never reaches the browser. The remote screen follows the window's
// size; the clipboard panel sends text to the desktop and shows what the desktop copies.
// The state is in document.body.dataset.desktop (connecting, connected, closed, refused)
// and the RFB object in window.sluiceDesktop (the browser tests read both).
import RFB from "/static/vendor/novnc.js";

const screen = document.getElementById("desktop-screen");
const status = document.getElementById("desktop-status");
const reconnect = document.getElementById("desktop-reconnect");
const clipboard = document.getElementById("desktop-clipboard");
const paste = document.getElementById("desktop-paste");

function show(state, text) {
  document.body.dataset.desktop = state;
  status.textContent = text;
  reconnect.hidden = !(state === "closed" || state === "refused");
}

async function open() {
  show("connecting", "Connecting…");
  let answer;
  try {
    const r = await fetch(screen.dataset.ticket, {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": screen.dataset.csrf },
    });
    answer = { ok: r.ok, status: r.status, body: await r.json().catch(() => ({})) };
  } catch (e) {
    show("refused", "Sluice could not be reached");
    return;
  }
  if (!answer.ok) {
    show("refused", answer.body.error || "refused (" + answer.status + ")");
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + answer.body.websocket, ["binary"]);
  let reason = "";
  ws.addEventListener("close", (ev) => { reason = ev.reason; });
  while (screen.firstChild) screen.removeChild(screen.firstChild);
  const rfb = new RFB(screen, ws, { shared: true });
  rfb.resizeSession = true;
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    show("connected", "Connected");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (ev) => {
    // The close event carries Sluice's reason; it may come just after noVNC's.
    setTimeout(() => {
      show("closed", reason || (ev.detail.clean ? "Disconnected" : "The connection failed"));
    }, 50);
  });
  rfb.addEventListener("clipboard", (ev) => { clipboard.value = ev.detail.text; });
  window.sluiceDesktop = rfb;
}

paste.addEventListener("click", () => {
  if (window.sluiceDesktop) window.sluiceDesktop.clipboardPasteFrom(clipboard.value);
});
reconnect.addEventListener("click", open);
open();
