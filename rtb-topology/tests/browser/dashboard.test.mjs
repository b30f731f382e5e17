// End to end: the real `rtb serve` binary, traffic through its API, and its dashboard in headless Debian
// chromium driven by playwright-core. Checks the DOM (rankings, balances, refunds) and the pixels of the
// spend chart's canvas (a chart drawn in the first campaign's colour, growing to the right as a later
// window closes). Run by run.sh (which installs chromium and the npm packages when missing).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const BIN = process.env.RTB_BIN;
const OUT = process.env.RTB_BROWSER_OUT || mkdtempSync(join(tmpdir(), "rtb-browser-out-"));
const ADMIN = "admin-token-browser-000000001";
const INGEST = "ingest-token-browser-00000001";
const FIRST = [0xe6, 0x19, 0x4b]; // PALETTE[0] of dashboard.js: the first campaign's series

function startServer() {
  assert.ok(BIN, "RTB_BIN must name the rtb binary");
  const dir = mkdtempSync(join(tmpdir(), "rtb-browser-"));
  writeFileSync(join(dir, "tokens"), `${ADMIN} admin\n${INGEST} ingest\n`);
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--tokens", join(dir, "tokens"), "--data-dir", join(dir, "data")], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on("line", (line) => {
      const m = line.match(/^rtb serve listening on (http:\/\/\S+)/);
      if (m) resolve({ child, base: m[1] });
    });
    child.on("exit", (code) => reject(new Error(`rtb serve exited with ${code} before listening`)));
  });
}

async function api(base, token, method, path, body, want) {
  const r = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json();
  assert.equal(r.status, want, `${method} ${path}: ${JSON.stringify(json)}`);
  return json;
}

const iso = (ms) => new Date(ms).toISOString();
const ad = (type, device, campaign, advertiser, at) => ({
  event_type: type, timestamp: iso(at), device_id: device, ad_id: `ad-${campaign}`, campaign_id: campaign,
  advertiser_id: advertiser, placement: "HOME", category: "laptops", product_id: `p-${campaign}`,
});

/** Pixels of the spend chart's canvas close to the first campaign's colour: count and right-most x. */
async function firstSeriesPixels(page, name) {
  const png = PNG.sync.read(await page.locator("#spend canvas").first().screenshot({ path: join(OUT, `${name}.png`) }));
  let count = 0, right = -1;
  for (let y = 0; y < png.height; y++) {
    for (let x = 0; x < png.width; x++) {
      const i = (y * png.width + x) * 4;
      const d = Math.abs(png.data[i] - FIRST[0]) + Math.abs(png.data[i + 1] - FIRST[1]) + Math.abs(png.data[i + 2] - FIRST[2]);
      if (d < 60) { count++; right = Math.max(right, x); }
    }
  }
  return { count, right, width: png.width };
}

test("the dashboard shows rankings, balances, refunds and draws the spend chart live", { timeout: 240_000 }, async () => {
  const { child, base } = await startServer();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  try {
    await api(base, ADMIN, "POST", "/v1/advertisers", { advertiser_id: "acme", opening_balance: 1000000, time_zone: "UTC" }, 201);
    // Serving since an hour ago: the traffic below is dated up to 25 minutes back, and a ranking recomputed
    // at a closed window's time counts only campaigns already effective then.
    const since = iso(Date.now() - 3_600_000);
    for (const [id, bid] of [["acme-a", 1000], ["acme-b", 800]]) {
      await api(base, ADMIN, "POST", "/v1/campaigns", { campaign_id: id, advertiser_id: "acme", product_id: `p-${id}`, placement: "HOME", category: "laptops", bid_price: bid, daily_budget: 1000000, effective_from: since }, 201);
      await api(base, ADMIN, "POST", `/v1/campaigns/${id}/approve`, {}, 200);
    }
    for (let i = 0; i < 100; i++) {
      const r = await api(base, INGEST, "GET", "/v1/rankings/HOME/laptops", undefined, 200);
      if (r.entries.length === 2) break;
      await new Promise((res) => setTimeout(res, 200));
    }

    // Window 1 (25 minutes ago): impressions and clicks of both campaigns, d1 clicking acme-a twice.
    const t0 = Date.now() - 25 * 60_000;
    const w1 = [];
    for (let i = 0; i < 20; i++) w1.push(ad("IMPRESSION", `d${i}`, i % 2 ? "acme-b" : "acme-a", "acme", t0 + i));
    w1.push(ad("CLICK", "d1", "acme-a", "acme", t0 + 1000), ad("CLICK", "d1", "acme-a", "acme", t0 + 2000), ad("CLICK", "d2", "acme-b", "acme", t0 + 3000));
    await api(base, INGEST, "POST", "/v1/events/ad", w1, 202);
    // Present traffic on the same devices moves the watermark past window 1 (and the dedup window).
    await api(base, INGEST, "POST", "/v1/events/ad", [ad("IMPRESSION", "d1", "acme-a", "acme", Date.now()), ad("IMPRESSION", "d2", "acme-b", "acme", Date.now())], 202);

    const page = await browser.newPage({ viewport: { width: 1300, height: 1500 }, deviceScaleFactor: 1 });
    await page.goto(`${base}/#token=${ADMIN}`);
    await page.waitForFunction(() => window.__rtb && window.__rtb.windows >= 2 && document.querySelector("#spend canvas"), null, { timeout: 90_000 });
    await page.waitForFunction(() => document.querySelector("#refunds").textContent.includes("acme-a"), null, { timeout: 90_000 });
    const rankings = await page.locator("#rankings").textContent();
    assert.match(rankings, /HOME \/ laptops/);
    assert.match(rankings, /acme-a[\s\S]*acme-b/, "acme-a (higher bid) ranks first");
    assert.match(await page.locator("#balances").textContent(), /acme/);
    await page.waitForTimeout(1200); // one more poll: the chart is drawn from the same data
    const first = await firstSeriesPixels(page, "spend-1");
    assert.ok(first.count >= 20, `the first campaign's series is drawn (${first.count} pixels of its colour)`);

    // Window 2 (15 minutes ago) closes: the series grows to the right.
    const t1 = Date.now() - 15 * 60_000;
    await api(base, INGEST, "POST", "/v1/events/ad", [ad("IMPRESSION", "d1", "acme-a", "acme", t1), ad("CLICK", "d1", "acme-a", "acme", t1 + 10)], 202);
    await api(base, INGEST, "POST", "/v1/events/ad", [ad("IMPRESSION", "d1", "acme-a", "acme", Date.now())], 202);
    await page.waitForFunction(() => window.__rtb.windows >= 3, null, { timeout: 90_000 });
    await page.waitForTimeout(1200);
    const second = await firstSeriesPixels(page, "spend-2");
    assert.ok(second.right > first.right, `the series reaches further right once window 2 closes (${first.right} → ${second.right})`);
    await page.screenshot({ path: join(OUT, "dashboard.png"), fullPage: true });
  } finally {
    await browser.close();
    child.kill("SIGTERM");
  }
  const code = await new Promise((res) => (child.exitCode !== null ? res(child.exitCode) : child.on("exit", res)));
  assert.equal(code, 0, "rtb serve exits 0 on SIGTERM");
});
