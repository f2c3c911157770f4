// The book's LED page: a slider that publishes {"level": N} retained with
// QoS 2 to `led` and follows `led`, so every open page, led-client and
// mosquitto_pub agree on one level.
(function () {
  "use strict";
  const { connect, jsonObject, preview, setText, setLongText, warnings } = window.PiMqtt;

  // A drag fires dozens of input events a second; about ten messages a
  // second keep the LED smooth without flooding a Pi's broker. The last
  // position is always sent.
  const THROTTLE_MS = 100;
  // Our own messages come back to us (we follow `led`); an echo that has not
  // arrived within this time is forgotten so the page never stops listening.
  const ECHO_MS = 5000;

  const slider = document.getElementById("level");
  const out = document.getElementById("level-out");
  const bulb = document.getElementById("bulb");
  const ledStatus = document.getElementById("led-status");
  const lastLed = document.getElementById("last-led");

  let lastSentAt = -Infinity;
  let pending = null; // timer of the trailing publish
  let dragging = false;
  let sent = []; // our publications whose echo has not come back: {text, at}

  const { warn, clear: clearWarning } = warnings(document.getElementById("warning"));

  function showLevel(n) {
    setText(out, `${n} %`);
    bulb.style.setProperty("--level", String(n / 100));
  }

  // SPEC's led payload, read as led-client reads it: a number or a string
  // holding one, truncated and clamped; a level that is not a number turns
  // the LED off; anything else leaves it unchanged.
  function parseLed(text) {
    const obj = jsonObject(text);
    if (!obj) return { error: "payload is not a JSON object" };
    if (!("level" in obj)) return { error: 'JSON object has no "level"' };
    let n = NaN;
    // 1e400 is valid JSON grammar but no double: JSON.parse makes it
    // Infinity, led-client's JSON reader refuses it. Both leave the LED as
    // it is (web/tests/led-payloads.json is the one table for both).
    if (typeof obj.level === "number" && !Number.isFinite(obj.level)) {
      return { error: "payload is not JSON led-client can read (number out of range)" };
    }
    if (typeof obj.level === "number") n = obj.level;
    else if (typeof obj.level === "string" && /^\s*[-+]?[0-9.eE+-]+\s*$/.test(obj.level)) n = Number(obj.level);
    if (!Number.isFinite(n)) return { level: 0, off: true };
    return { level: Math.min(100, Math.max(0, Math.trunc(n))) };
  }

  function send() {
    pending = null;
    lastSentAt = performance.now();
    const text = JSON.stringify({ level: Number(slider.value) });
    sent.push({ text, at: lastSentAt });
    page.publish("led", text, true);
  }

  function onInput() {
    showLevel(Number(slider.value));
    const wait = lastSentAt + THROTTLE_MS - performance.now();
    if (wait <= 0 && pending === null) send();
    else if (pending === null) pending = setTimeout(send, Math.max(0, wait));
  }

  // The end of a drag or a key press: send the final position now.
  function onChange() {
    if (pending !== null) {
      clearTimeout(pending);
      send();
    }
  }

  // Should a received level move the slider? Not while the user is moving
  // it, and not for the echoes of our own earlier positions (they would make
  // the thumb jump back). Anything newer than our last message wins.
  function followsRemote(text) {
    const now = performance.now();
    sent = sent.filter((e) => now - e.at < ECHO_MS);
    const i = sent.findIndex((e) => e.text === text);
    if (i >= 0) sent.splice(0, i + 1);
    return !dragging && pending === null && sent.length === 0;
  }

  function onLed(text) {
    setLongText(lastLed, text === "" ? "(retained message cleared)" : text);
    if (text === "") return;
    const r = parseLed(text);
    if (r.error) {
      warn(`led: ${r.error} (${preview(text)}); slider unchanged`);
      return;
    }
    if (r.off) warn(`led: level is not a number (${preview(text)}); the LED turns off`);
    else clearWarning();
    if (!followsRemote(text)) return;
    slider.value = String(r.level);
    showLevel(r.level);
  }

  // led/status as last heard, shown as such only while the page itself is
  // connected: disconnected, the page cannot know (issue 23: it kept
  // showing "online" while nothing was being heard).
  let lastStatus = null;
  let pageConnected = false;
  function showStatus() {
    if (!pageConnected) {
      ledStatus.dataset.state = "unknown";
      setText(ledStatus, lastStatus === null || lastStatus === "" ? "unknown" : `unknown (last heard: ${lastStatus})`);
      return;
    }
    const word = (lastStatus ?? "").trim();
    const known = word === "online" || word === "offline";
    ledStatus.dataset.state = known ? word : "unknown";
    setText(ledStatus, lastStatus === null || lastStatus === "" ? "unknown" : lastStatus);
  }
  function onStatus(text) {
    lastStatus = text;
    showStatus();
  }

  slider.addEventListener("input", onInput);
  slider.addEventListener("change", onChange);
  slider.addEventListener("pointerdown", () => (dragging = true));
  for (const ev of ["pointerup", "pointercancel"]) {
    window.addEventListener(ev, () => (dragging = false));
  }

  const page = connect({
    prefix: "web-led-",
    subscriptions: ["led", "led/status"],
    onConnected(connected) {
      slider.disabled = !connected;
      if (connected) sent = [];
      // Stale until the broker hands the retained status over again.
      if (!connected) {
        pageConnected = false;
        showStatus();
      }
    },
    onMessage(topic, text) {
      if (topic === "led") onLed(text);
      else if (topic === "led/status") {
        pageConnected = true;
        onStatus(text);
      }
    },
    onWarning: warn,
  });
  showLevel(Number(slider.value));
  // For the tests: the page's reading of a led payload.
  window.PiMqttLed = { parseLed };
})();
