// The terminal page: xterm.js (vendored) over a WebSocket to Sluice, which bridges it into the
// host as an SSH session. Binary frames carry the terminal's bytes both ways; a text frame
// {"resize": [cols, rows]} follows the window. The last 64 KiB of output are kept in
// window.sluiceTranscript (the browser tests read it).
"use strict";

(function () {
  const el = document.getElementById("terminal");
  if (!el || typeof Terminal === "undefined") return;
  const term = new Terminal({ cursorBlink: true, cols: 100, rows: 30, scrollback: 2000 });
  term.open(el);
  const size = () => {
    const cols = Math.max(20, Math.floor((el.clientWidth - 12) / 9.2));
    const rows = Math.max(8, Math.floor((window.innerHeight - el.getBoundingClientRect().top - 24) / 17));
    return [Math.min(cols, 500), Math.min(rows, 200)];
  };
  let [cols, rows] = size();
  term.resize(cols, rows);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + el.dataset.socket + "?cols=" + cols + "&rows=" + rows);
  ws.binaryType = "arraybuffer";
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  window.sluiceTranscript = "";
  ws.onopen = () => {
    document.body.dataset.terminal = "open";
    term.focus();
  };
  ws.onmessage = (msg) => {
    const text = typeof msg.data === "string" ? msg.data : decoder.decode(new Uint8Array(msg.data), { stream: true });
    term.write(text);
    window.sluiceTranscript = (window.sluiceTranscript + text).slice(-65536);
  };
  ws.onclose = (ev) => {
    document.body.dataset.terminal = "closed";
    term.write("\r\n[" + (ev.reason || "disconnected") + "]\r\n");
  };
  term.on("data", (data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      const [c, r] = size();
      if (c === cols && r === rows) return;
      cols = c;
      rows = r;
      term.resize(c, r);
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [c, r] }));
    }, 150);
  });
})();
