// The LED page (web/index.html) in Debian's Chromium, served by a private
// Mosquitto, driving a real led-client with the simulated LED.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  Broker, Proc, assertContrast, binary, launchBrowser, pub, retained, screenshot, tempDir, waitUntil, DEADLINE,
} from "./harness.mjs";

let broker;
let browser;
let led; // led-client --led sim
let page; // the first open LED page

before(async () => {
  broker = await Broker.start();
  browser = await launchBrowser();
  led = new Proc(binary("led-client"), [
    "--led", "sim", "-h", "127.0.0.1", "-p", String(broker.port), "--state-dir", tempDir("led-state"),
  ]);
});

after(async () => {
  await browser?.close();
  await led?.stop();
  await broker?.stop();
});

const slider = (p) => p.locator("#level");
const text = (p, sel) => p.locator(sel).textContent();

async function expectConnected(p, yes) {
  await waitUntil(`the page to show Connected: ${yes ? "Yes" : "No"}`, async () =>
    (await text(p, "#connected")) === (yes ? "Yes" : "No") && (await slider(p).isDisabled()) === !yes);
}

async function expectSlider(p, value) {
  await waitUntil(`the slider to show ${value}`, async () =>
    (await slider(p).inputValue()) === String(value) && (await text(p, "#level-out")) === `${value} %`);
}

test("the slider is disabled until the page is connected", async () => {
  // A WebSocket that never reaches the broker: no CONNACK ever comes.
  const p = await browser.context.newPage();
  await p.routeWebSocket(/.*/, () => {});
  await p.goto(broker.url);
  assert.match(await text(p, "#client-id"), /^web-led-[0-9a-f]{8}$/);
  for (let i = 0; i < 10; i++) {
    assert.equal(await text(p, "#connected"), "No");
    assert.equal(await slider(p).isDisabled(), true);
    await p.waitForTimeout(100);
  }
  await p.close();
});

test("the page connects back to the broker that served it and shows the LED client online", async () => {
  page = await browser.newPage(broker.url);
  await expectConnected(page, true);
  assert.match(await text(page, "#client-id"), /^web-led-[0-9a-f]{8}$/);
  await waitUntil("led/status online on the page", async () => (await text(page, "#led-status")) === "online");
  // Sanity: what the page used to connect is where it came from, nothing fixed.
  assert.equal(await page.evaluate(() => window.PiMqtt.brokerUrl()), `ws://127.0.0.1:${broker.wsPort}/`);
  // MQTT 3.1.1 unless the address asks for 5 (issue 12).
  const versions = await page.evaluate(() =>
    ["", "?mqtt=5", "?mqtt=mqttv5", "?mqtt=4", "?x=1&mqtt=5"].map((q) => window.PiMqtt.protocolVersion(q)),
  );
  assert.deepEqual(versions, [4, 5, 5, 4, 5]);
});

test("with ?mqtt=5 the page connects with MQTT 5 and still moves the LED", async () => {
  const p5 = await browser.newPage(`${broker.url}?mqtt=5`);
  await expectConnected(p5, true);
  await waitUntil("led/status online on the MQTT 5 page", async () => (await text(p5, "#led-status")) === "online");
  await p5.close();
});

test("moving the slider makes led-client print the level, published retained with QoS 2", async () => {
  await slider(page).fill("63");
  let next = await led.waitLine("brightness 63");
  assert.equal(retained(broker, "led"), '1 2 {"level":63}');

  // Keyboard: each key press is an input event; End jumps to the top.
  await slider(page).focus();
  await page.keyboard.press("ArrowLeft");
  next = await led.waitLine("brightness 62", next);
  await page.keyboard.press("End");
  next = await led.waitLine("brightness 100", next);

  // A mouse drag fires many input events; the throttle sends at most one
  // message per 100 ms, and always the final position.
  const box = await slider(page).boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width - 2, y);
  await page.mouse.down();
  const steps = 40;
  await page.mouse.move(box.x + box.width * 0.3, y, { steps });
  await page.mouse.up();
  const final = Number(await slider(page).inputValue());
  assert.ok(final > 15 && final < 45, `the drag ended at ${final}`);
  await led.waitLine(`brightness ${final}`, next);
  await waitUntil("the retained level to be the final position", () => retained(broker, "led") === `1 2 {"level":${final}}`);
  const sentDuringDrag = led.lines.length - next;
  assert.ok(sentDuringDrag <= steps, `${sentDuringDrag} levels for ${steps} mouse moves`);
  await expectSlider(page, final);
});

test("mosquitto_pub to led moves the slider in two open pages", async () => {
  const second = await browser.newPage(broker.url);
  await expectConnected(second, true);
  pub(broker, "led", '{"level": 17}', { retain: true });
  await expectSlider(page, 17);
  await expectSlider(second, 17);
  // The book's page sent strings; they count too, truncated.
  pub(broker, "led", '{"level": "42.9"}', { retain: true });
  await expectSlider(page, 42);
  await expectSlider(second, 42);
  // And a move in one page moves the other.
  await slider(second).fill("77");
  await expectSlider(page, 77);
  await led.waitLine("brightness 77");
  await second.close();
});

test("a payload containing HTML is shown as text, never parsed", async () => {
  const html = '<img src=x onerror="window.pwned=1"><b>bold</b>';
  pub(broker, "led", html, { retain: true });
  await waitUntil("the raw payload on the page", async () => (await text(page, "#last-led")) === html);
  assert.equal(await page.locator("#last-led *").count(), 0, "the payload made elements");
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.match(await text(page, "#warning"), /^led: payload is not a JSON object/);
  await expectSlider(page, 77); // unchanged

  pub(broker, "led/status", "<i>hacked</i>", { retain: true });
  await waitUntil("the status shown as text", async () => (await text(page, "#led-status")) === "<i>hacked</i>");
  assert.equal(await page.locator("#led-status *").count(), 0);
  pub(broker, "led/status", "online", { retain: true });
  pub(broker, "led", '{"level": 63}', { retain: true });
  await expectSlider(page, 63);
  await waitUntil("led/status online again", async () => (await text(page, "#led-status")) === "online");
  assert.deepEqual(browser.errors, []);
});

test("a 56 KB led payload: the page stays short, the whole payload one click away", async () => {
  const payload = JSON.stringify({ level: 63, note: "x".repeat(56 * 1024) });
  pub(broker, "led", payload, { retain: true });
  const last = page.locator("#last-led");
  await waitUntil("the long payload on the page", async () => (await last.locator(".whole").count()) === 1);
  const height = () => page.evaluate(() => document.documentElement.scrollHeight);
  assert.ok((await height()) < 1200, `the page is ${await height()} px tall`);
  assert.equal(await last.evaluate((e) => e.firstChild.textContent), `${payload.slice(0, 200)}…`);
  const summary = last.locator("summary");
  assert.equal(await summary.textContent(), `show all ${payload.length.toLocaleString("en")} characters`);
  await summary.click();
  assert.equal(await last.locator(".whole").isVisible(), true);
  assert.equal(await last.locator(".whole").textContent(), payload);
  assert.ok((await height()) < 1500, `the page with the payload opened is ${await height()} px tall`);
  // A short one replaces it as plain text again.
  pub(broker, "led", '{"level": 63}', { retain: true });
  await waitUntil("the short payload", async () => (await last.textContent()) === '{"level": 63}');
  assert.equal(await last.locator("*").count(), 0);
});

test("text contrast is at least 4.5:1, light and dark", async () => {
  pub(broker, "led", "not json", { retain: true }); // a warning on screen too
  await waitUntil("a warning", async () => await page.locator("#warning").isVisible());
  try {
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await assertContrast(page, `LED page, ${scheme}`, 12);
    }
  } finally {
    await page.emulateMedia({ colorScheme: "light" });
  }
  pub(broker, "led", '{"level": 63}', { retain: true });
  await expectSlider(page, 63);
});

test("the page reconnects by itself after a broker restart, disabled meanwhile", async () => {
  // The screenshots for the README, taken while the page is live.
  await page.evaluate(() => document.activeElement?.blur());
  await page.mouse.move(0, 0);
  await page.setViewportSize({ width: 900, height: 560 });
  await page.waitForTimeout(300); // the bulb's CSS transition
  await screenshot(page, "led.png");
  await page.setViewportSize({ width: 390, height: 700 });
  await screenshot(page, "led-phone.png");
  await page.setViewportSize({ width: 1100, height: 760 });
  await broker.stop();
  await expectConnected(page, false);
  await page.waitForTimeout(1500); // a few failed reconnect attempts
  assert.equal(await slider(page).isDisabled(), true);
  // What the page last heard about led-client is not what is true now
  // (issue 23: it kept saying "online").
  assert.equal(await text(page, "#led-status"), "unknown (last heard: online)");
  assert.equal(await page.locator("#led-status").getAttribute("data-state"), "unknown");

  const t0 = Date.now();
  await broker.start();
  await expectConnected(page, true);
  console.log(`# page reconnected ${Date.now() - t0} ms after the broker came back`);
  // The retained level survived the restart (persistence) and came back.
  await expectSlider(page, 63);
  await waitUntil("led/status online again after the restart", async () => (await text(page, "#led-status")) === "online");
  // Publishing works again end to end, led-client having reconnected too.
  const from = led.lines.length;
  await slider(page).fill("21");
  await led.waitLine("brightness 21", from, DEADLINE * 2);
  assert.deepEqual(browser.errors, []);
});

// Last: it leaves a warning on the page.
test("the page reads led payloads as led-client does (one table for both)", async () => {
  const table = JSON.parse(readFileSync(new URL("./led-payloads.json", import.meta.url), "utf8"));
  const got = await page.evaluate((rows) => rows.map(({ payload }) => {
    if (payload === "") return "unchanged"; // onLed: a cleared retained message
    const r = window.PiMqttLed.parseLed(payload);
    return r.error ? "unchanged" : r.off ? "off" : r.level;
  }), table.rows);
  table.rows.forEach((row, i) => assert.equal(got[i], row.expect, row.payload));
  // Live: 1e400 leaves the slider where it was, with a warning.
  const from = led.lines.length;
  pub(broker, "led", '{"level": 33}', { retain: true });
  await expectSlider(page, 33);
  await led.waitLine("brightness 33", from);
  const applied = led.lines.length;
  pub(broker, "led", '{"level": 1e400}', { retain: true });
  await waitUntil("the warning for 1e400", async () => /out of range/.test(await text(page, "#warning")));
  await expectSlider(page, 33);
  await page.waitForTimeout(300);
  assert.deepEqual(led.lines.slice(applied), [], "led-client applied nothing for 1e400");
});
