// The operator console in a real browser: Debian's chromium, headless, driven by playwright-core.
//
// Run by tests/integration/test_console_browser.py, which starts a node, a worker and a small
// PACS and passes everything through the environment. Steps: log in; send an instance with
// storescu and watch its job reach "delivered" without reloading; see the overlay; watch a
// second job fail its delivery on the dashboard; re-analyse it and watch it reach "delivered";
// log out; a viewer sees no action and is refused one; a POST without its CSRF token is refused.
// Screenshots go to $SCREENSHOTS. Prints one JSON line per step; exits 1 at the first failure.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("BASE_URL");
const SHOTS = env("SCREENSHOTS");
const WAIT = 240_000;
mkdirSync(SHOTS, { recursive: true });

const t0 = Date.now();
async function step(name, fn) {
  const start = Date.now();
  await fn();
  console.log(JSON.stringify({ step: name, seconds: (Date.now() - start) / 1000 }));
}
function check(condition, message) {
  if (!condition) throw new Error(message);
}
async function shot(page, name, fullPage = true) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}
// The parts of a job page the documentation shows: summary, deliveries, timeline.
async function jobParts(page, name) {
  const parts = { summary: "#summary", deliveries: "section:has(> #deliveries)", timeline: "section:has(> #timeline)" };
  for (const [part, selector] of Object.entries(parts)) {
    await page.locator(selector).screenshot({ path: join(SHOTS, `${name}-${part}.png`) });
  }
}
function storescu(file) {
  execFileSync("storescu", ["-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1", env("DICOM_PORT"), file]);
}
async function login(page, user, password) {
  await page.goto(`${BASE}/`);
  check(page.url().includes("/login"), `not sent to the login page: ${page.url()}`);
  await page.fill("#username", user);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(`${BASE}/`), page.click("#login")]);
  check((await page.textContent("#who")).includes(user), "the header does not name the user");
}
async function logout(page) {
  await Promise.all([page.waitForURL(/\/login$/), page.click("#logout")]);
}
async function openJob(page, uid) {
  await page.goto(`${BASE}/jobs?q=${encodeURIComponent(uid)}`);
  await Promise.all([page.waitForURL(/\/jobs\/\d+$/), page.click(`#jobs a:text("${uid}")`)]);
}
// Wait for the job page's live part to show `state`, proving the page was not reloaded.
async function liveState(page, state) {
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.waitForFunction(
    (s) => document.querySelector("#job-state")?.textContent === s, state, { timeout: WAIT, polling: 250 },
  );
  check(await page.evaluate(() => window.__sameDocument === true), "the page was reloaded");
}
async function postStatus(page, path, withToken) {
  return page.evaluate(async ([p, withToken]) => {
    const body = new URLSearchParams();
    if (withToken) body.set("csrf_token", document.querySelector("input[name=csrf_token]").value);
    const r = await fetch(p, { method: "POST", body, redirect: "manual" });
    return r.status;
  }, [path, withToken]);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // No sandbox as root; nothing that reaches for the network (there is none to reach).
  args: [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());

  await step("login page", async () => {
    await page.goto(`${BASE}/`);
    await page.waitForSelector("#username");
    await shot(page, "login", false);
  });
  await step("log in as admin", () => login(page, env("ADMIN_USER"), env("ADMIN_PASSWORD")));

  let jobA;
  await step("storescu; the job reaches delivered live", async () => {
    storescu(env("FILE_A"));
    await openJob(page, env("UID_A"));
    jobA = page.url();
    await liveState(page, "delivered");
    await page.waitForFunction(() => {
      const img = document.querySelector("#overlay");
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 30_000 });
    const confirmed = await page.locator("#deliveries .delivery.confirmed").count();
    const results = Number(env("RESULTS"));
    check(confirmed === results, `expected ${results} confirmed deliveries, saw ${confirmed}`);
    const sr = await page.textContent("#sr");
    check(sr.includes("Probability"), "the SR table has no probability");
    await shot(page, "job-delivered");
  });

  await step("a second job fails delivery; the dashboard shows it live", async () => {
    await page.goto(`${BASE}/`);
    await page.evaluate(() => { window.__sameDocument = true; });
    storescu(env("FILE_B"));
    await page.waitForFunction(
      () => document.querySelector("#failure-reasons")?.textContent.includes("could not be delivered"),
      null, { timeout: WAIT, polling: 250 },
    );
    check(await page.evaluate(() => window.__sameDocument === true), "the dashboard was reloaded");
    await shot(page, "dashboard");
  });

  await step("re-analyse the failed job; it reaches delivered", async () => {
    await openJob(page, env("UID_B"));
    check((await page.textContent("#job-state")) === "failed", "job B is not failed");
    await shot(page, "job-failed");
    await jobParts(page, "job-failed");
    await Promise.all([page.waitForURL(/\/jobs\/\d+$/), page.click("#reanalyse")]);
    check((await page.textContent("#flash")).includes("queued for analysis again"), "no confirmation");
    await liveState(page, "delivered");
    await shot(page, "job-reanalysed");
    await jobParts(page, "job-reanalysed");
  });

  await step("jobs list", async () => {
    await page.goto(`${BASE}/jobs`);
    check((await page.locator("#jobs tbody tr").count()) === 2, "the list does not show 2 jobs");
    await shot(page, "jobs", false);
  });

  await step("models and settings", async () => {
    await page.goto(`${BASE}/models`);
    check((await page.locator(".model.active").count()) === 1, "no active model shown");
    await shot(page, "models", false);
    await page.goto(`${BASE}/settings`);
    check((await page.textContent("#settings")).includes("console_port"), "settings incomplete");
    await shot(page, "settings", false);
  });

  await step("log out", async () => {
    await logout(page);
    await page.goto(jobA);
    check(page.url().includes("/login"), "a logged-out browser still sees a job");
  });

  await step("a viewer cannot act", async () => {
    await login(page, env("VIEWER_USER"), env("VIEWER_PASSWORD"));
    await openJob(page, env("UID_B"));
    check((await page.locator("#reanalyse, #resend").count()) === 0, "a viewer sees action buttons");
    const status = await postStatus(page, new URL(page.url()).pathname + "/reanalyse", true);
    check(status === 403, `a viewer's re-analyse answered ${status}, not 403`);
    await shot(page, "viewer-job", false);
    await logout(page);
  });

  await step("a POST without its CSRF token is refused", async () => {
    await login(page, env("ADMIN_USER"), env("ADMIN_PASSWORD"));
    await openJob(page, env("UID_B"));
    const path = new URL(page.url()).pathname + "/resend";
    const status = await postStatus(page, path, false);
    check(status === 403, `a POST without CSRF token answered ${status}, not 403`);
    await logout(page);
  });
  console.log(JSON.stringify({ done: true, seconds: (Date.now() - t0) / 1000 }));
} catch (error) {
  console.log(JSON.stringify({ failed: String(error && error.stack || error) }));
  if (page) await page.screenshot({ path: join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
