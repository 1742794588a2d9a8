// Browser test of the chat widget: Debian's Chromium, driven by
// playwright-core, opens the demo page, sends a message, checks through the
// API that the ticket exists, posts an agent reply through the API and
// waits for it to appear in the page.
//
//   node chat.mjs BASE_URL TENANT AGENT_TOKEN
// Exits 0 on success; prints what failed otherwise.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, tenant, token] = process.argv.slice(2);
const api = `${base}/api/v1/tenants/${tenant}`;
const auth = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
const profile = mkdtempSync(join(tmpdir(), "sb-chromium-"));

async function waitFor(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let browser;
try {
  // A fresh profile per run (playwright's way of passing --user-data-dir).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    // This machine has no outside network: keep Chromium from trying.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${base}/chat/${tenant}/`);
  await page.waitForSelector("#sb-status:text('connected')");

  const text = "My parcel has not arrived — Paka ime nuk ka mbërritur";
  await page.fill("#sb-input", text);
  await page.click("#sb-send");
  await page.waitForSelector(".sb-visitor.sb-acked", { timeout: 20000 });

  // The ticket exists, with the visitor's message, on the chat channel.
  const ticket = await waitFor("the chat ticket", async () => {
    const r = await fetch(`${api}/tickets?limit=5`, { headers: auth });
    const list = await r.json();
    return list.items.find((t) => t.channel === "chat");
  });
  const detail = await (await fetch(`${api}/tickets/${ticket.number}`, { headers: auth })).json();
  if (!detail.messages.some((m) => m.direction === "inbound" && m.text === text))
    throw new Error("the visitor's message is not on the ticket");

  // An agent replies through the API; the page shows it.
  const reply = "Hello! I am looking into it right now.";
  const r = await fetch(`${api}/tickets/${ticket.number}/messages`, {
    method: "POST", headers: auth, body: JSON.stringify({ kind: "reply", text: reply }),
  });
  if (r.status !== 201) throw new Error(`reply failed: ${r.status} ${await r.text()}`);
  await page.waitForSelector(`.sb-agent:text("${reply}")`, { timeout: 20000 });
  if (process.env.SB_SCREENSHOT) await page.screenshot({ path: process.env.SB_SCREENSHOT });
  console.log("browser chat test: ok");
} catch (e) {
  console.error("browser chat test failed:", e.message);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
