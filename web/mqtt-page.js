// What both pages share: the connection back to the broker that served the
// page, the "Connected: Yes/No" and client id header, payload decoding and
// the helpers that keep received text out of the HTML parser.
//
// A classic script (not an ES module) on purpose: Mosquitto's http_dir sends
// no Content-Type header, and browsers refuse module scripts without one.
// It needs the MQTT.js browser bundle loaded first (global `mqtt`).
(function () {
  "use strict";

  // SPEC: payloads above 64 KiB are dropped with a warning, as the programs do.
  const MAX_PAYLOAD = 64 * 1024;
  const utf8 = new TextDecoder("utf-8", { fatal: true });

  // The broker that served this page: same host, same port, ws or wss as the
  // page is http or https. Never a fixed address, so the page works on the
  // Pi, through an SSH tunnel and behind a TLS proxy alike.
  function brokerUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/`;
  }

  // The MQTT version: 3.1.1 (protocolVersion 4, the book's; SPEC says any
  // 3.1.1 broker must work) unless the page's address says ?mqtt=5, as the
  // programs' -V 5 does. Anything else keeps 3.1.1.
  function protocolVersion(search) {
    const v = new URLSearchParams(search).get("mqtt");
    return v === "5" || v === "mqttv5" ? 5 : 4;
  }

  // The book's page made up a random client id; a page is not a device with
  // a durable session, so a fresh id and a clean session are the right fit
  // (a stable id would kick another open tab off the broker).
  function randomId(prefix) {
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Turns a payload into text, or explains why it is not usable (text null).
  // Empty text is how a cleared retained message looks; pages decide.
  function decode(payload) {
    if (payload.length === 0) return { text: "", reason: "empty" };
    if (payload.length > MAX_PAYLOAD) {
      return { text: null, reason: `payload of ${payload.length} bytes is larger than the ${MAX_PAYLOAD} byte limit` };
    }
    try {
      return { text: utf8.decode(payload), reason: null };
    } catch {
      return { text: null, reason: "payload is not UTF-8 text" };
    }
  }

  // JSON object or null: arrays, numbers and strings are not objects here.
  function jsonObject(text) {
    try {
      const v = JSON.parse(text);
      return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
    } catch {
      return null;
    }
  }

  // Shows a payload in a warning: short and on one line.
  function preview(text) {
    const flat = String(text).replace(/[\u0000-\u001f\u007f]/g, ".");
    return flat.length > 60 ? flat.slice(0, 60) + "…" : flat;
  }

  // The one place the pages write received data into the document: always
  // as text, so a payload holding HTML shows up as the characters it is.
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // Long received text (a 20 KB alarm detail, a 56 KB payload) would make a
  // row or the page thousands of pixels tall. Up to SHORT characters are
  // shown as they are; longer text shows its first SHORT characters and "…",
  // with the whole text one click away in a <details> whose box scrolls.
  // Always as text, as setText.
  const SHORT = 200;
  const shownLong = new WeakMap(); // element -> the long text it shows
  function setLongText(el, text, limit = SHORT) {
    if (text.length <= limit) {
      shownLong.delete(el);
      if (el.childElementCount > 0) el.replaceChildren(text);
      else setText(el, text);
      return;
    }
    if (shownLong.get(el) === text) return; // keeps an opened <details> open
    shownLong.set(el, text);
    let cut = limit;
    const c = text.charCodeAt(cut - 1);
    if (c >= 0xd800 && c <= 0xdbff) cut -= 1; // never half a surrogate pair
    const more = document.createElement("details");
    more.className = "more";
    const summary = document.createElement("summary");
    summary.textContent = `show all ${text.length.toLocaleString("en")} characters`;
    const whole = document.createElement("span");
    whole.className = "whole";
    whole.textContent = text;
    more.append(summary, whole);
    el.replaceChildren(`${text.slice(0, cut)}…`, more);
  }

  // The page's equivalent of the programs' one warning line per bad message:
  // the console gets each, the page shows the last one and how many there were.
  function warnings(el) {
    let count = 0;
    return {
      warn(line) {
        console.warn(line);
        count += 1;
        el.hidden = false;
        setText(el, count === 1 ? line : `${count} warnings; last: ${line}`);
      },
      clear() {
        el.hidden = true;
      },
    };
  }

  // Connects to the broker, (re)subscribes on every connect and keeps the
  // page's header up to date. Elements used when present:
  //   #client-id  the client id      #connected  "Yes" / "No"
  //   #conn-detail why not connected (connecting, reconnecting, error text)
  // options: prefix (client id prefix), subscriptions (topic list),
  //   onConnected(bool), onMessage(topic, text, retained), onWarning(line).
  function connect(options) {
    const id = randomId(options.prefix);
    const idEl = document.getElementById("client-id");
    const connEl = document.getElementById("connected");
    const detailEl = document.getElementById("conn-detail");
    if (idEl) setText(idEl, id);

    const warn =
      options.onWarning ||
      function (line) {
        console.warn(line);
      };

    function show(connected, detail) {
      if (connEl) {
        setText(connEl, connected ? "Yes" : "No");
        connEl.dataset.state = connected ? "yes" : "no";
      }
      if (detailEl) setText(detailEl, detail);
      options.onConnected(connected);
    }

    if (typeof mqtt === "undefined") {
      show(false, "the MQTT library is missing: run scripts/setup (npm install in web/)");
      return null;
    }
    if (!location.host) {
      show(false, "open this page from the broker, e.g. http://localhost:8083/");
      return null;
    }

    const client = mqtt.connect(brokerUrl(), {
      clientId: id,
      clean: true,
      protocolVersion: protocolVersion(location.search),
      keepalive: 30,
      // The book's Paho JavaScript page could take a minute to come back
      // after a broker restart; retrying every second brings it back at once.
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      // Subscriptions are made in the connect handler below, every time.
      resubscribe: false,
    });

    show(false, "connecting…");
    client.on("connect", () => {
      const subs = Object.fromEntries(options.subscriptions.map((t) => [t, { qos: 2 }]));
      client.subscribe(subs, (err) => {
        if (err) warn(`subscribe failed: ${err.message}`);
      });
      show(true, "");
    });
    client.on("reconnect", () => show(false, "reconnecting…"));
    client.on("offline", () => show(false, "broker unreachable, retrying…"));
    client.on("close", () => {
      if (connEl && connEl.dataset.state === "yes") show(false, "connection lost, retrying…");
    });
    client.on("error", (err) => show(false, `error: ${err.message}`));
    client.on("message", (topic, payload, packet) => {
      const { text, reason } = decode(payload);
      if (text === null) {
        warn(`${topic}: ${reason}; ignored`);
        return;
      }
      options.onMessage(topic, text, packet.retain);
    });

    return {
      id,
      client,
      connected: () => client.connected,
      publish(topic, payload, retain) {
        client.publish(topic, payload, { qos: 2, retain }, (err) => {
          if (err) warn(`${topic}: publish failed: ${err.message}`);
        });
      },
    };
  }

  window.PiMqtt = {
    connect,
    decode,
    jsonObject,
    preview,
    setText,
    setLongText,
    brokerUrl,
    protocolVersion,
    warnings,
  };
})();
