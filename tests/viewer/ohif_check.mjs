// Open a study in the real OHIF viewer (the prebuilt @ohif/app dist) and report what it did.
//
// Usage: node ohif_check.mjs CONFIG.json
//   {"orthanc": "http://127.0.0.1:PORT",         Orthanc with the DICOMweb plugin at /dicom-web
//    "timeout_s": 120,                           per study
//    "checks": [{"study": "1.2...",              a study to open,
//                "series": "1.2...",             the series to show first (the map),
//                "screenshot": "/path/out.png",
//                "params": {"viewportRendering": "cpu", ...},   optional URL parameters
//                "then": ["1.2...", ...]}]}   series shown next in the same viewport, in order
//
// It serves OHIF's dist folder on a free loopback port with an app-config.js that points at the
// DICOMweb root, and forwards /dicom-web/* to Orthanc on the same origin (Orthanc sends no CORS
// headers, so the viewer must not be cross-origin). Debian's chromium, driven headless by
// playwright-core, opens /viewer?StudyInstanceUIDs=...&initialSeriesInstanceUID=... and waits until
// the shown series has loaded (a map) or is drawn (an image), or the time is up. It prints one
// JSON object with, per check: page errors, console errors, failed requests, OHIF's
// notifications, the viewports (type, what they hold, camera scale), the display sets with their
// load state and, for a Parametric Map, the geometry and value range of the volume OHIF made of
// it and of the volume of its source; for an SR, the measurements OHIF's SR handler made of it
// (labels, graphic type, referenced image).

import { readFile } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(HERE, '..', '..', 'node_modules', '@ohif', 'app', 'dist');
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png',
  '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.woff': 'font/woff',
  '.ttf': 'font/ttf',
};

/** OHIF's configuration: one DICOMweb data source on this origin, no study list. */
function appConfig(origin) {
  const root = `${origin}/dicom-web`;
  return `window.config = ${JSON.stringify({
    routerBasename: '/',
    extensions: [],
    modes: [],
    showStudyList: false,
    showLoadingIndicator: true,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    investigationalUseDialog: { option: 'never' },
    maxNumberOfWebWorkers: 1,
    defaultDataSourceName: 'orthanc',
    dataSources: [{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (test)',
        name: 'orthanc',
        wadoUriRoot: `${origin}/wado`,
        qidoRoot: root,
        wadoRoot: root,
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    }],
  })};\n`;
}

/** A static server for DIST (SPA fallback to index.html) that forwards DICOMweb to Orthanc. */
function startServer(orthanc) {
  const upstream = new URL(orthanc);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname.startsWith('/dicom-web/') || url.pathname.startsWith('/wado')) {
      const forward = http.request({
        host: upstream.hostname, port: upstream.port, path: req.url, method: req.method,
        headers: { ...req.headers, host: upstream.host },
      }, (up) => { res.writeHead(up.statusCode, up.headers); up.pipe(res); });
      forward.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
      req.pipe(forward);
      return;
    }
    if (url.pathname === '/app-config.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(appConfig(`http://${req.headers.host}`));
      return;
    }
    let file = path.join(DIST, path.normalize(decodeURIComponent(url.pathname)));
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) {
      file = path.join(DIST, 'index.html');
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    res.end(await readFile(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** What OHIF holds: display sets, their load state, and the geometry of loaded volumes. */
function inspect() {
  const services = window.services;
  const cs = window.cornerstone;
  if (!services || !cs) return { ready: false };
  const numbers = (a) => (a ? Array.from(a).map(Number) : null); // NaN becomes null in JSON
  const volume = (id) => {
    const v = id && cs.cache.getVolume(id);
    if (!v) return null;
    // Value range and where the largest value lies (column, row, frame): shows that the
    // viewer put the map's pixels where they belong on the source grid.
    let range = null;
    let peak = null;
    try {
      const data = v.voxelManager.getCompleteScalarDataArray();
      let lo = Infinity;
      let hi = -Infinity;
      let at = -1;
      for (let i = 0; i < data.length; i += 1) {
        if (data[i] < lo) lo = data[i];
        if (data[i] > hi) { hi = data[i]; at = i; }
      }
      const [nx, ny] = v.dimensions;
      range = [lo, hi];
      peak = [at % nx, Math.floor(at / nx) % ny, Math.floor(at / (nx * ny))];
    } catch (e) {
      range = String(e);
    }
    let vtk = null;
    try {
      vtk = { spacing: numbers(v.imageData.getSpacing()), bounds: numbers(v.imageData.getBounds()) };
    } catch (e) {
      vtk = String(e);
    }
    return {
      range,
      peak,
      vtk,
      dimensions: numbers(v.dimensions),
      spacing: numbers(v.spacing),
      origin: numbers(v.origin),
      direction: numbers(v.direction),
      loaded: Boolean(v.loadStatus?.loaded),
    };
  };
  const sets = services.displaySetService.getActiveDisplaySets().map((ds) => {
    const out = {
      modality: ds.Modality,
      series: ds.SeriesInstanceUID,
      description: ds.SeriesDescription,
      loading: Boolean(ds.loading),
      loaded: Boolean(ds.isLoaded),
    };
    if (ds.Modality === 'SR') {
      // isRehydratable false: the SR's badge says "not compatible with this application".
      out.isRehydratable = ds.isRehydratable ?? null;
      // What OHIF's SR handler made of the report: one entry per displayable measurement group.
      out.measurements = (ds.measurements ?? []).map((m) => ({
        trackingIdentifier: m.TrackingIdentifier ?? null,
        labels: m.labels ?? [],
        graphicType: m.graphicType ?? m.coords?.[0]?.GraphicType ?? null,
        points: m.pointsLength ?? null,
        image: m.coords?.[0]?.ReferencedSOPSequence?.ReferencedSOPInstanceUID
          ?? m.coords?.[0]?.ReferencedSOPSequence?.[0]?.ReferencedSOPInstanceUID ?? null,
      }));
    }
    if (ds.Modality === 'PMAP') {
      out.volume = volume(ds.displaySetInstanceUID);
      try {
        out.referencedVolume = volume(ds.getReferencedVolumeId());
      } catch (e) {
        out.referencedVolume = String(e);
      }
    }
    return out;
  });
  // What cornerstone draws: per viewport, its type and the volumes or images it holds.
  const viewports = [];
  for (const engine of cs.getRenderingEngines?.() ?? []) {
    for (const vp of engine.getViewports()) {
      let actors = [];
      try {
        actors = vp.getActors().map((a) => a.referencedId ?? a.uid);
      } catch (e) {
        actors = [String(e)];
      }
      // The camera's parallel scale is NaN (null in JSON) when the image has no usable spacing:
      // the viewport then draws nothing although it holds the image.
      let parallelScale = null;
      try {
        parallelScale = Number(vp.getCamera().parallelScale);
      } catch (e) {
        parallelScale = String(e);
      }
      viewports.push({
        id: vp.id, type: vp.type, actors, imageId: vp.getCurrentImageId?.() ?? null, parallelScale,
      });
    }
  }
  return { ready: true, displaySets: sets, viewports };
}

const TOASTS = '[data-sonner-toast], .sonner-toast, [role="status"]';

/** Open one study in a fresh page and wait for its shown series; what happened. */
async function openStudy(browser, origin, check, timeout) {
  const out = { pageErrors: [], consoleErrors: [], notifications: [], requestsFailed: [] };
  const started = Date.now();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const notices = async () => {
    for (const n of await page.locator(TOASTS).allInnerTexts().catch(() => [])) {
      if (n && !out.notifications.includes(n)) out.notifications.push(n);
    }
  };
  try {
    // Not the first-visit tour: its dialog would cover the viewport.
    await page.addInitScript(() => localStorage.setItem('shownTours', '["basicViewerTour"]'));
    page.on('pageerror', (e) => out.pageErrors.push(String(e.stack || e).slice(0, 2000)));
    page.on('console', (m) => {
      if (m.type() === 'error') out.consoleErrors.push(consoleText(m.text()));
    });
    page.on('requestfailed', (r) => out.requestsFailed.push(`${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) out.requestsFailed.push(`${r.url()} HTTP ${r.status()}`);
    });
    const query = new URLSearchParams({ StudyInstanceUIDs: check.study });
    if (check.series) query.set('initialSeriesInstanceUID', check.series);
    // e.g. {useNextViewports: 'true', viewportRendering: 'cpu'}: OHIF's CPU renderer
    for (const [key, value] of Object.entries(check.params ?? {})) query.set(key, value);
    await page.goto(`${origin}/viewer?${query}`, { timeout });
    const deadline = Date.now() + timeout;
    for (;;) {
      out.state = await page.evaluate(inspect);
      await notices();
      const state = out.state;
      const shown = state.ready ? state.displaySets.filter((d) => d.series === check.series) : [];
      // A map has loaded when OHIF says so; another image when a viewport draws something.
      const drawn = state.ready && state.viewports.some((v) => v.actors.length > 0);
      const done = (d) => {
        if (d.modality === 'PMAP') return d.loaded;
        if (d.modality === 'SR') return drawn && (d.measurements ?? []).length > 0;
        return drawn;
      };
      const settled = shown.length > 0 && shown.every(done);
      const failed = out.pageErrors.length > 0 || out.notifications.some((n) => /error/i.test(n));
      if (settled || failed || Date.now() > deadline) break;
      await page.waitForTimeout(500);
    }
    // A reader's order: then show each of these series in the same viewport, one after the
    // other (as a double click on its thumbnail does), each until it is drawn or loaded.
    for (const series of check.then ?? []) {
      await page.waitForTimeout(2000);
      out.opened = out.opened ?? [];
      out.opened.push(await page.evaluate((uid) => {
        const { displaySetService, viewportGridService } = window.services;
        const set = displaySetService.getActiveDisplaySets().find((d) => d.SeriesInstanceUID === uid);
        if (!set) return `${uid}: no display set`;
        const viewportId = viewportGridService.getActiveViewportId();
        viewportGridService.setDisplaySetsForViewport({
          viewportId, displaySetInstanceUIDs: [set.displaySetInstanceUID],
        });
        return `${uid}: ${set.Modality}`;
      }, series));
      const until = Date.now() + timeout;
      for (;;) {
        out.state = await page.evaluate(inspect);
        await notices();
        const shown = out.state.ready
          ? out.state.displaySets.filter((d) => d.series === series) : [];
        const drawn = out.state.ready && out.state.viewports.some((v) => v.actors.length > 0);
        const done = shown.length > 0
          && shown.every((d) => (d.modality === 'PMAP' ? d.loaded : drawn));
        if (done || out.pageErrors.length > 0 || Date.now() > until) break;
        await page.waitForTimeout(500);
      }
    }
    // Let the viewport draw what has loaded (and show any rendering error) before the picture.
    await page.waitForTimeout(3000);
    await notices();
    out.state = await page.evaluate(inspect);
    if (check.screenshot) await page.screenshot({ path: check.screenshot });
  } finally {
    out.seconds = (Date.now() - started) / 1000;
    await page.close();
  }
  return out;
}

/** A console error, shortened: a failed WebGL shader logs its whole source, keep the errors. */
function consoleText(text) {
  const errors = text.split('\n').filter((l) => /^ERROR: /.test(l));
  const head = text.split('\n')[0].slice(0, 300);
  return errors.length ? [head, ...errors].join('\n') : text.slice(0, 1000);
}

async function main() {
  const config = JSON.parse(await readFile(process.argv[2], 'utf8'));
  const timeout = (config.timeout_s ?? 120) * 1000;
  const server = await startServer(config.orthanc);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const result = { checks: [] };
  try {
    // One browser per study: a WebGL failure in one (a GPU process gone bad) must not be
    // charged to the next.
    for (const check of config.checks) {
      const browser = await chromium.launch({
        executablePath: config.chromium || '/usr/bin/chromium',
        headless: true,
        // Software WebGL (no GPU here): OHIF's viewports render with WebGL. No background
        // connections: the machine has no network beyond loopback.
        args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
          '--ignore-gpu-blocklist', '--disable-background-networking', '--disable-quic',
          '--disable-component-update', '--no-first-run'],
      });
      try {
        result.checks.push(await openStudy(browser, origin, check, timeout));
      } finally {
        await browser.close();
      }
    }
  } finally {
    server.close();
  }
  process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
