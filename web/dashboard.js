// The controller's dashboard of the book's Figure 4.2 in the browser: every
// tank the wildcard subscriptions reveal, with its level, its pump's state
// and availability, its active alarms and a manual on/off button.
//
// Built for a fleet (1,000 tanks updating once a second, issue 14):
// messages only update a model and mark a tank dirty; one
// requestAnimationFrame callback then updates the rows of the dirty tanks
// (each tank has one keyed row, created once, kept in id order), writing
// only what changed, so a burst of retained messages on connect costs one
// redraw. The level and time cells are `content-visibility: auto` (app.css):
// the browser skips style, layout and paint of those off screen (the rows
// themselves stay rendered, so assistive technology reaches every row and
// button), and the level bar moves by transform, without a layout or an
// animation.
(function () {
  "use strict";
  const { connect, jsonObject, preview, setText, setLongText, warnings } = window.PiMqtt;

  // A command the pump has not confirmed by then is given up on, with a
  // warning (the controller re-sends after 5 s too).
  const COMMAND_TIMEOUT_MS = 5000;

  const rowsEl = document.getElementById("rows");
  const emptyEl = document.getElementById("empty");
  const template = document.getElementById("row-template");
  const filterEl = document.getElementById("filter");
  const alarmsOnlyEl = document.getElementById("alarms-only");
  const controllerEl = document.getElementById("controller-status");
  const counts = {
    tanks: document.getElementById("count-tanks"),
    on: document.getElementById("count-on"),
    alarms: document.getElementById("count-alarms"),
  };

  const tanks = new Map(); // id -> tank (model and its row)
  const order = []; // ids in display order, parallel to the rows
  const byId = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const dirty = new Set();
  // A redraw is due: at the next animation frame, but at most every
  // REDRAW_MS. A fleet's levels arrive spread over each second; redrawing
  // them a few times a second instead of at every frame costs a fraction of
  // the painting, and the page reads the same.
  const REDRAW_MS = 250;
  let frame = 0; // a redraw is scheduled (a timer or an animation frame)
  let lastFlush = -Infinity;
  function schedule(now) {
    if (frame) return;
    const wait = lastFlush + REDRAW_MS - performance.now();
    if (now || wait <= 0) frame = requestAnimationFrame(flush);
    else frame = setTimeout(() => (frame = requestAnimationFrame(flush)), wait);
  }

  const { warn } = warnings(document.getElementById("warning"));

  function tank(id) {
    let t = tanks.get(id);
    if (!t) {
      t = {
        id,
        level: null,
        sensor: null,
        pump: null,
        pumpStatus: null,
        alarms: new Map(), // kind -> detail, active ones only
        alarmsRev: 0, // bumped when `alarms` changes: the chips are rebuilt then only
        updated: null, // when a live message last came; retained ones have no known age
        pending: null, // {state, timer} of a command not yet confirmed
        row: null,
      };
      tanks.set(id, t);
    }
    return t;
  }

  function touch(t, live) {
    if (live) t.updated = new Date();
    dirty.add(t);
    schedule(false);
  }

  // ---- messages -> model -------------------------------------------------

  function parseState(text) {
    const s = text.trim();
    let word = s;
    if (s.startsWith("{")) {
      const obj = jsonObject(s);
      word = obj && typeof obj.state === "string" ? obj.state : "";
    }
    word = word.toLowerCase();
    return word === "on" || word === "off" ? word : null;
  }

  const handlers = {
    "tank/level"(t, text, topic) {
      if (text === "") {
        t.level = null; // retained level cleared
        return true;
      }
      const obj = jsonObject(text);
      const level = obj ? obj.level : undefined;
      if (typeof level !== "number" || !(level >= 0 && level <= 100)) {
        warn(`${topic}: not a {"level": 0..100} object (${preview(text)})`);
        return false;
      }
      t.level = level;
      return true;
    },
    "tank/status"(t, text) {
      t.sensor = text.trim() || null;
      return true;
    },
    "pump/state"(t, text, topic) {
      if (text === "") {
        t.pump = null;
        return true;
      }
      const state = parseState(text);
      if (!state) {
        warn(`${topic}: not {"state": "on"|"off"} (${preview(text)})`);
        return false;
      }
      t.pump = state;
      if (t.pending && t.pending.state === state) {
        clearTimeout(t.pending.timer);
        t.pending = null;
      }
      return true;
    },
    "pump/status"(t, text) {
      t.pumpStatus = text.trim() || null;
      return true;
    },
    alarm(t, text, topic) {
      if (text === "") {
        t.alarms.clear();
        t.alarmsRev += 1;
        return true;
      }
      const a = jsonObject(text);
      if (!a || typeof a.alarm !== "string" || a.alarm === "" || typeof a.active !== "boolean") {
        warn(`${topic}: not an {"alarm", "active", "detail"} object (${preview(text)})`);
        return false;
      }
      if (a.active) t.alarms.set(a.alarm, typeof a.detail === "string" ? a.detail : "");
      else t.alarms.delete(a.alarm);
      t.alarmsRev += 1;
      return true;
    },
  };

  function onMessage(topic, text, retained) {
    if (topic === "controller/status") {
      const word = text.trim();
      controllerEl.dataset.state = word === "online" || word === "offline" ? word : "unknown";
      setText(controllerEl, word || "unknown");
      return;
    }
    const parts = topic.split("/");
    const key = parts[0] === "alarm" ? "alarm" : `${parts[0]}/${parts[2]}`;
    const handle = handlers[key];
    if (!handle || parts[1] === undefined || parts[1] === "") return;
    const t = tank(parts[1]);
    if (handle(t, text, topic)) touch(t, !retained);
  }

  // ---- model -> rows -----------------------------------------------------

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function availability(el, who, value) {
    const state = value === "online" || value === "offline" ? value : "unknown";
    if (el.dataset.state !== state) el.dataset.state = state;
    setText(el, `${who} ${value === null ? "?" : value}`);
  }

  function createRow(t) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.id = t.id;
    const q = (sel) => row.querySelector(sel);
    t.row = {
      el: row,
      fill: q(".fill"),
      levelText: q(".level-text"),
      pumpState: q(".pump-state"),
      button: q(".pump-button"),
      sensor: q(".sensor-status"),
      pumpStatus: q(".pump-status"),
      alarms: q(".alarms"),
      updated: q(".updated"),
      // What the row shows now, so that render() writes only changes.
      shown: { hidden: false, level: undefined, pump: undefined, target: "", pending: false, alarmsRev: 0, updated: undefined },
    };
    setText(q(".tank-id"), t.id);
    // Keep the rows in id order (numeric ids numerically): binary search.
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byId.compare(order[mid], t.id) < 0) lo = mid + 1;
      else hi = mid;
    }
    const next = lo < order.length ? tanks.get(order[lo]).row.el : null;
    order.splice(lo, 0, t.id);
    rowsEl.insertBefore(row, next);
  }

  let filterText = "";
  function visible(t) {
    if (filterText && !t.id.toLowerCase().includes(filterText)) return false;
    return !alarmsOnlyEl.checked || t.alarms.size > 0;
  }

  function show(r, t) {
    const hidden = !visible(t);
    if (r.shown.hidden !== hidden) {
      r.shown.hidden = hidden;
      r.el.hidden = hidden;
    }
  }

  function alarmChip(kind, detail) {
    const chip = document.createElement("span");
    chip.className = "chip";
    const k = document.createElement("span");
    k.className = "kind";
    k.textContent = kind;
    const d = document.createElement("span");
    d.className = "detail";
    // A long detail (a 20 KB one is possible) shows its first 100
    // characters (a cell is narrow); the whole
    // text is in a <details> that scrolls.
    setLongText(d, detail, 100);
    chip.append(k, d);
    return chip;
  }

  function render(t) {
    if (!t.row) createRow(t);
    const r = t.row;
    const shown = r.shown;
    show(r, t);

    if (shown.level !== t.level) {
      shown.level = t.level;
      if (t.level === null) {
        r.fill.style.transform = "scaleX(0)";
        setText(r.levelText, "–");
      } else {
        r.fill.style.transform = `scaleX(${t.level / 100})`;
        const band = t.level < 20 ? "low" : t.level < 50 ? "mid" : "ok";
        if (r.fill.dataset.band !== band) r.fill.dataset.band = band;
        setText(r.levelText, `${t.level.toFixed(1)} %`);
      }
    }

    if (shown.pump !== t.pump) {
      shown.pump = t.pump;
      r.pumpState.dataset.state = t.pump || "unknown";
      setText(r.pumpState, t.pump || "–");
    }
    const target = t.pending ? t.pending.state : t.pump === "on" ? "off" : "on";
    const pending = t.pending !== null;
    if (shown.target !== target || shown.pending !== pending) {
      shown.target = target;
      shown.pending = pending;
      setText(r.button, pending ? `Turning ${target}…` : `Turn ${target}`);
      // 1,000 buttons called "Turn on" are useless to a screen reader.
      r.button.setAttribute("aria-label", pending ? `Turning pump ${t.id} ${target}…` : `Turn pump ${t.id} ${target}`);
      r.button.dataset.target = target;
      r.button.disabled = pending;
    }

    availability(r.sensor, "sensor", t.sensor);
    availability(r.pumpStatus, "pump", t.pumpStatus);

    // Alarm chips: rebuilt only when this tank's alarms changed, always as text.
    if (shown.alarmsRev !== t.alarmsRev) {
      shown.alarmsRev = t.alarmsRev;
      r.el.dataset.alarm = t.alarms.size > 0 ? "yes" : "no";
      r.alarms.replaceChildren(...Array.from(t.alarms, ([kind, detail]) => alarmChip(kind, detail)));
    }

    if (shown.updated !== t.updated) {
      shown.updated = t.updated;
      if (t.updated) {
        const u = t.updated;
        setText(r.updated, `${pad(u.getHours())}:${pad(u.getMinutes())}:${pad(u.getSeconds())}`);
        r.updated.dateTime = u.toISOString();
        r.updated.title = "";
      } else {
        // Only retained messages so far: the broker does not say how old they are.
        setText(r.updated, "retained");
        r.updated.title = "Known from the broker's retained messages; no live update since this page connected";
      }
    }
  }

  function flush(time) {
    frame = 0;
    lastFlush = time;
    for (const t of dirty) render(t);
    dirty.clear();
    let on = 0;
    let alarms = 0;
    for (const t of tanks.values()) {
      if (t.pump === "on") on += 1;
      alarms += t.alarms.size;
    }
    setText(counts.tanks, String(tanks.size));
    setText(counts.on, String(on));
    setText(counts.alarms, String(alarms));
    emptyEl.hidden = tanks.size > 0;
  }

  function refilter() {
    filterText = filterEl.value.trim().toLowerCase();
    for (const t of tanks.values()) if (t.row) show(t.row, t);
  }

  // ---- the manual on/off button -------------------------------------------

  rowsEl.addEventListener("click", (ev) => {
    const button = ev.target.closest(".pump-button");
    if (!button || !page) return;
    const t = tanks.get(button.closest(".row").dataset.id);
    if (!t || t.pending) return;
    const state = button.dataset.target;
    const topic = `pump/${t.id}/command`;
    page.publish(topic, JSON.stringify({ state }), false);
    t.pending = {
      state,
      timer: setTimeout(() => {
        t.pending = null;
        warn(`${topic}: the pump did not report "${state}" within ${COMMAND_TIMEOUT_MS / 1000} s`);
        dirty.add(t);
        schedule(false);
      }, COMMAND_TIMEOUT_MS),
    };
    dirty.add(t);
    schedule(true); // the click shows at once
  });

  filterEl.addEventListener("input", refilter);
  alarmsOnlyEl.addEventListener("change", refilter);

  const page = connect({
    prefix: "web-dash-",
    subscriptions: [
      "tank/+/level",
      "tank/+/status",
      "pump/+/state",
      "pump/+/status",
      "alarm/+",
      "controller/status",
    ],
    // The buttons live in a <fieldset>: disabling it disables them all.
    onConnected(connected) {
      rowsEl.disabled = !connected;
    },
    onMessage,
    onWarning: warn,
  });
})();
