// The recording player: fetches an asciicast v2 file from Sluice and replays its output in
// xterm.js (vendored) at the recorded pace, pauses longer than 2 s shortened to 2 s, with
// play/pause, a position slider, speed and restart. Resizes in the cast resize the terminal; keystrokes (when
// recorded) are not replayed, since the terminal's echo already shows what was typed.
// body[data-player] says loading, playing, paused, ended or failed; the output replayed so
// far (its last 64 KiB) is window.sluiceTranscript (the browser tests read both).
"use strict";

(function () {
  const el = document.getElementById("player");
  if (!el || typeof Terminal === "undefined") return;
  const IDLE_LIMIT = 2;
  const state = document.body.dataset;
  const playButton = document.getElementById("play");
  const restartButton = document.getElementById("restart");
  const speedSelect = document.getElementById("speed");
  const clock = document.getElementById("clock");
  const seek = document.getElementById("seek");
  let header = { width: 80, height: 24 };
  let events = [];
  let duration = 0;
  let term = null;
  let next = 0; // index of the next event
  let at = 0; // playback position, seconds
  let wallStart = 0; // performance.now() when position 0 would have played at this speed
  let speed = 1;
  let timer = null;
  let playing = false;

  const mmss = (s) => Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");
  const showClock = () => {
    clock.textContent = mmss(at) + " / " + mmss(duration);
    seek.value = String(at);
  };

  function fresh() {
    if (term) term.dispose();
    el.textContent = "";
    term = new Terminal({ cols: header.width, rows: header.height, scrollback: 5000, disableStdin: true });
    term.open(el);
    next = 0;
    at = 0;
    window.sluiceTranscript = "";
    showClock();
  }

  function apply(ev) {
    if (ev[1] === "o") {
      term.write(ev[2]);
      window.sluiceTranscript = (window.sluiceTranscript + ev[2]).slice(-65536);
    } else if (ev[1] === "r") {
      const m = /^(\d+)x(\d+)$/.exec(ev[2]);
      if (m) term.resize(Math.min(+m[1], 500), Math.min(+m[2], 200));
    }
  }

  function tick() {
    timer = null;
    at = Math.min(((performance.now() - wallStart) * speed) / 1000, duration);
    while (next < events.length && events[next][0] <= at) apply(events[next++]);
    showClock();
    if (next >= events.length) {
      playing = false;
      at = duration;
      showClock();
      state.player = "ended";
      playButton.textContent = "Play again";
      return;
    }
    const wait = ((events[next][0] - at) * 1000) / speed;
    timer = setTimeout(tick, Math.max(0, Math.min(wait, 250)));
  }

  function play() {
    if (next >= events.length) fresh();
    playing = true;
    state.player = "playing";
    playButton.textContent = "Pause";
    wallStart = performance.now() - (at * 1000) / speed;
    tick();
  }

  // Jumps to `t`: the terminal is rebuilt from the start up to there at once.
  function seekTo(t) {
    const wasPlaying = playing;
    if (playing) pause();
    fresh();
    at = Math.max(0, Math.min(t, duration));
    while (next < events.length && events[next][0] <= at) apply(events[next++]);
    showClock();
    if (next >= events.length) {
      state.player = "ended";
      playButton.textContent = "Play again";
    } else if (wasPlaying) {
      play();
    } else {
      state.player = "paused";
      playButton.textContent = "Play";
    }
  }

  function pause() {
    playing = false;
    clearTimeout(timer);
    timer = null;
    state.player = "paused";
    playButton.textContent = "Play";
  }

  playButton.addEventListener("click", () => (playing ? pause() : play()));
  restartButton.addEventListener("click", () => {
    pause();
    fresh();
    play();
  });
  seek.addEventListener("input", () => seekTo(Number(seek.value) || 0));
  speedSelect.addEventListener("change", () => {
    speed = Number(speedSelect.value) || 1;
    if (playing) {
      clearTimeout(timer);
      wallStart = performance.now() - (at * 1000) / speed;
      tick();
    }
  });

  state.player = "loading";
  fetch(el.dataset.cast, { credentials: "same-origin" })
    .then((resp) => {
      if (!resp.ok) throw new Error("the recording cannot be loaded (" + resp.status + ")");
      return resp.text();
    })
    .then((text) => {
      const lines = text.split("\n").filter((l) => l.trim() !== "");
      if (lines.length === 0) throw new Error("the recording is empty");
      const h = JSON.parse(lines[0]);
      if (h.version !== 2) throw new Error("not an asciicast v2 recording");
      header = { width: Math.min(h.width || 80, 500), height: Math.min(h.height || 24, 200) };
      let last = 0;
      let t = 0;
      for (const line of lines.slice(1)) {
        let ev;
        try {
          ev = JSON.parse(line);
        } catch (_) {
          continue;
        }
        if (!Array.isArray(ev) || ev.length < 3 || typeof ev[0] !== "number") continue;
        t += Math.min(Math.max(ev[0] - last, 0), IDLE_LIMIT);
        last = Math.max(last, ev[0]);
        if (ev[1] === "o" || ev[1] === "r") events.push([t, ev[1], String(ev[2])]);
      }
      duration = events.length ? events[events.length - 1][0] : 0;
      seek.max = String(duration);
      playButton.disabled = false;
      restartButton.disabled = false;
      seek.disabled = false;
      fresh();
      play();
    })
    .catch((err) => {
      state.player = "failed";
      el.textContent = err.message;
    });
})();
