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
