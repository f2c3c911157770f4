// Test support for the browser tests: a private Mosquitto (scripts/broker on
// free ports with a temporary data directory), the project's real binaries,
// mosquitto_pub/mosquitto_sub, and Debian's Chromium driven by playwright-core.
// Everything started here is stopped by the test's `after` hook, and killed
// when the test process exits whatever happened.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, mkdirSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Generous: the CI machine has two cores shared with other builds. */
export const DEADLINE = 15_000;
export const SCREENSHOTS = path.join(ROOT, "docs", "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const children = new Set();
const tempDirs = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
// Ctrl+C or a runner's SIGTERM: still stop the broker and remove temp dirs.
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

// A test file that hangs (a handle left open, a wait that never ends) must
// not hang CI: a file normally takes well under a minute.
setTimeout(() => {
  console.error("harness: this test file ran for 5 minutes; giving up");
  process.exit(1);
}, 300_000).unref();

export function tempDir(tag) {
  const d = mkdtempSync(path.join(tmpdir(), `pi-mqtt-web-${tag}-`));
  tempDirs.add(d);
  return d;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it returns a truthy value; fails naming `what`. */
export async function waitUntil(what, cond, limit = DEADLINE) {
  const end = Date.now() + limit;
  let last;
  for (;;) {
    try {
      last = await cond();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${limit} ms waiting for ${what} (last: ${last})`);
    await sleep(50);
  }
}

/** A port nobody listens on right now (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const sock = tcpConnect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/** A program the test started: its stdout lines, stderr text, exit. */
export class Proc {
  constructor(bin, args, opts = {}) {
    this.name = path.basename(bin);
    this.lines = [];
    this.stderr = "";
    this.exited = null;
    this.child = spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"], ...opts });
    children.add(this.child);
    let partial = "";
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk) => {
      partial += chunk;
      const parts = partial.split("\n");
      partial = parts.pop();
      this.lines.push(...parts);
    });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (chunk) => {
      this.stderr += chunk;
      if (process.env.PIMQTT_TEST_VERBOSE) process.stderr.write(`[${this.name}] ${chunk}`);
    });
    this.exitPromise = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        children.delete(this.child);
        this.exited = { code, signal };
        resolve(this.exited);
      });
      this.child.on("error", (err) => {
        children.delete(this.child);
        this.exited = { code: null, signal: null, error: err };
        resolve(this.exited);
      });
    });
  }

  /** Waits for a stdout line equal to `line` at index `from` or later; returns its index. */
  async waitLine(line, from = 0, limit = DEADLINE) {
    return waitUntil(`${this.name} to print "${line}" (stdout so far: ${JSON.stringify(this.lines.slice(from))})`, () => {
      const i = this.lines.indexOf(line, from);
      if (i >= 0) return i + 1; // truthy; caller gets index + 1 to continue from
      if (this.exited) throw new Error(`${this.name} exited ${JSON.stringify(this.exited)}: ${this.stderr}`);
      return false;
    }, limit);
  }

  async waitStderr(part, limit = DEADLINE) {
    return waitUntil(`${this.name} to log "${part}"`, () => this.stderr.includes(part), limit);
  }

  writeLine(line) {
    this.child.stdin.write(`${line}\n`);
  }

  /** SIGINT (a clean shutdown for our programs), SIGKILL if that takes too long. */
  async stop(signal = "SIGINT") {
    if (this.exited) return this.exited;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill("SIGKILL"), DEADLINE);
    const r = await this.exitPromise;
    clearTimeout(t);
    return r;
  }
}

/** A private Mosquitto from mosquitto/pi-mqtt.conf via scripts/broker. */
export class Broker {
  static async start() {
    const b = new Broker();
    b.data = tempDir("broker");
    // Free ports can be taken between asking and binding: retry a few times.
    for (let attempt = 1; ; attempt++) {
      b.port = await freePort();
      b.wsPort = await freePort();
      try {
        await b.#run();
        return b;
      } catch (e) {
        if (attempt >= 3) throw e;
      }
    }
  }

  async #run() {
    this.proc = new Proc(path.join(ROOT, "scripts", "broker"), [
      "--port", String(this.port), "--ws-port", String(this.wsPort), "--data", this.data,
    ]);
    await waitUntil(`the broker to listen on ${this.port} and ${this.wsPort}`, async () => {
      if (this.proc.exited) throw new Error(`broker exited: ${this.proc.stderr}${this.proc.lines.join("\n")}`);
      return (await accepts(this.port)) && (await accepts(this.wsPort));
    });
  }

  get url() {
    return `http://127.0.0.1:${this.wsPort}/`;
  }

  /** SIGTERM: Mosquitto saves its persistence file and exits. */
  async stop() {
    if (this.proc) await this.proc.stop("SIGTERM");
  }

  /** The same broker again: same ports, same data (retained messages survive). */
  async start() {
    await this.#run();
  }
}

/** A binary of this workspace, built by `cargo build` (scripts/test.d/30-web). */
export function binary(name) {
  const dir = process.env.CARGO_TARGET_DIR || path.join(ROOT, "target");
  const p = path.resolve(ROOT, dir, "debug", name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run cargo build -p ${name}`);
  return p;
}

/** mosquitto_pub, as a user would type it. */
export function pub(broker, topic, message, { retain = false, qos = 2 } = {}) {
  const args = ["-h", "127.0.0.1", "-p", String(broker.port), "-q", String(qos), "-t", topic, "-m", message];
  if (retain) args.push("-r");
  execFileSync("mosquitto_pub", args, { timeout: DEADLINE });
}

/** The retained message of `topic` as mosquitto_sub prints it: "<retained> <qos> <payload>". */
export function retained(broker, topic) {
  return execFileSync(
    "mosquitto_sub",
    ["-h", "127.0.0.1", "-p", String(broker.port), "-q", "2", "-t", topic, "-C", "1", "-W", "10", "-F", "%r %q %p"],
    { encoding: "utf8", timeout: DEADLINE },
  ).trim();
}

/**
 * Debian's Chromium (never a downloaded browser), headless, with a fresh
 * profile. Page errors and console errors are collected in `errors` so a
 * test can assert that the page ran cleanly.
 */
export async function launchBrowser() {
  const profile = tempDir("chromium");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1100, height: 760 },
  });
  const errors = [];
  context.on("page", (page) => watch(page, errors));
  for (const page of context.pages()) watch(page, errors);
  return {
    context,
    errors,
    async newPage(url) {
      const page = await context.newPage();
      await page.goto(url);
      return page;
    },
    async close() {
      await context.close();
    },
  };
}

function watch(page, errors) {
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Connection failures are expected while a test has the broker down.
    if (m.type() === "error" && !/WebSocket|ERR_CONNECTION_REFUSED/.test(m.text())) {
      errors.push(`console error: ${m.text()} (${m.location().url})`);
    }
  });
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, name), fullPage: true });
}

/**
 * WCAG contrast of the text the page shows now, as Chromium renders it: for
 * every rendered element with text of its own, the computed text colour
 * against the background colours behind it (composited up to the page's
 * own). Disabled controls are exempt (WCAG 1.4.3). Returns the number of
 * elements checked and those under `min` (4.5:1, AA for normal text).
 */
export async function contrast(page, min = 4.5) {
  return page.evaluate((min) => {
    const rgba = (s) => {
      const m = /^rgba?\(([^)]*)\)$/.exec(s);
      if (!m) throw new Error(`a colour contrast() cannot read: ${s}`);
      const [r, g, b, a = 1] = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const over = (top, under) => ({
      r: top.r * top.a + under.r * (1 - top.a),
      g: top.g * top.a + under.g * (1 - top.a),
      b: top.b * top.a + under.b * (1 - top.a),
      a: 1,
    });
    const lum = ({ r, g, b }) => {
      const f = (v) => ((v /= 255) <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const hex = ({ r, g, b }) => "#" + [r, g, b].map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");
    function background(el) {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        const c = rgba(getComputedStyle(e).backgroundColor);
        if (c.a > 0) layers.push(c);
        if (c.a === 1) break;
      }
      let bg = { r: 255, g: 255, b: 255, a: 1 }; // the canvas, if nothing is opaque
      for (const c of layers.reverse()) bg = over(c, bg);
      return bg;
    }
    function opacity(el) {
      let o = 1;
      for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
      return o;
    }
    let checked = 0;
    const low = [];
    for (const el of document.body.querySelectorAll("*")) {
      const own = Array.from(el.childNodes).some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() !== "");
      if (!own || el.getClientRects().length === 0) continue;
      const style = getComputedStyle(el);
      if (style.visibility !== "visible" || el.closest("button:disabled, input:disabled")) continue;
      const bg = background(el);
      const fg = rgba(style.color);
      const text = over({ ...fg, a: fg.a * opacity(el) }, bg);
      const [hi, lo] = [lum(text), lum(bg)].sort((a, b) => b - a);
      const ratio = (hi + 0.05) / (lo + 0.05);
      checked += 1;
      if (ratio < min) {
        const what = `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${el.className ? "." + String(el.className).split(" ").join(".") : ""}`;
        low.push(`${what} "${el.textContent.trim().slice(0, 30)}": ${hex(text)} on ${hex(bg)} is ${ratio.toFixed(2)}:1`);
      }
    }
    return { checked, low };
  }, min);
}

/** Asserts contrast() finds nothing under 4.5:1 among at least `least` elements. */
export async function assertContrast(page, what, least) {
  const { checked, low } = await contrast(page);
  if (checked < least) throw new Error(`${what}: contrast checked only ${checked} elements (expected at least ${least})`);
  if (low.length) throw new Error(`${what}: text under 4.5:1 contrast:\n  ${low.join("\n  ")}`);
  return checked;
}
