// Pyodide web worker for the quantcalc static bundle (derived from Panel 1.9.4's pyodide_worker.js).
// Every URL is relative to this script, so the bundle works under any sub-path and inside an iframe.
//
// Start-up, in order of what costs time (see benchmarks/bench_bundle.py for the measured timeline):
// - the page creates this worker from the top of its <head>, before parsing BokehJS/Panel JS;
// - every file the start-up needs (Pyodide's core, the lock, every start-up wheel) is requested at once, here,
//   in parallel with Pyodide's boot; Pyodide's own fetches are then answered from those downloads;
// - the site's files are cache-first from the Cache Storage the service worker also reads, and whatever comes
//   from the network is put there (sha256-checked where the lock gives one), so a page visited once works
//   offline and no file is downloaded twice;
// - the wheels carry Python 3.13 bytecode (build/precompile.py), so imports do not compile.
importScripts("{{ PYODIDE_URL }}");

const BUILD = /*BUILD_CONFIG*/{};
const SITE_URL = new URL("./", self.location.href).href;
const INDEX_URL = new URL("./pyodide/", self.location.href).href;
const normalize = (name) => name.toLowerCase().replace(/[-_.]+/g, "-");
const now = () => performance.timeOrigin + performance.now();   // epoch ms, comparable with the page's

function status(msg, extra = {}) {
  console.log(`[quantcalc worker] ${msg}`);
  self.postMessage({type: "status", msg: msg, at: now(), ...extra});
}

function sendPatch(patch, buffers, msg_id) {
  self.postMessage({
    type: 'patch',
    patch: patch,
    buffers: buffers
  })
}

// --- the site's files: cache-first, each downloaded at most once ------------------------------------------------
const nativeFetch = self.fetch.bind(self);
// The service worker's cache (serviceWorker.js: `quantcalc-<scope>-<build version>`, scope = this folder).
const CACHE_NAME = `quantcalc-${SITE_URL}-${BUILD.cache_version}`;
const cacheReady = (self.caches ? caches.open(CACHE_NAME) : Promise.reject(new Error("no Cache Storage")))
  .catch(() => null);   // e.g. an opaque origin: then plain network fetches
const inflight = new Map();   // absolute URL -> Promise<{bytes: ArrayBuffer, type: string}>

function hexToBase64(hex) {
  let bin = "";
  for (let i = 0; i < hex.length; i += 2) {
    bin += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  }
  return btoa(bin);
}

async function sha256Base64(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return btoa(String.fromCharCode(...digest));
}

async function download(url, integrity) {
  const cache = await cacheReady;
  let response = cache ? await cache.match(url) : undefined;
  const fromCache = Boolean(response);
  if (!response) {
    response = await nativeFetch(url, integrity ? {integrity: integrity} : {});
    if (!response.ok) {
      throw new Error(`${url}: HTTP ${response.status}`);
    }
  }
  const bytes = await response.arrayBuffer();
  const type = response.headers.get("Content-Type") || "";
  if (fromCache && integrity && integrity.startsWith("sha256-")
      && integrity.slice(7) !== await sha256Base64(bytes)) {
    await cache.delete(url);          // a damaged cache entry: fetch it again, checked by the browser
    return download(url, integrity);
  }
  if (cache && !fromCache) {
    cache.put(url, new Response(bytes.slice(0), {headers: {"Content-Type": type}})).catch(() => {});
  }
  return {bytes, type};
}

function siteFile(url, integrity) {
  if (!inflight.has(url)) {
    const p = download(url, integrity);
    p.catch(() => inflight.delete(url));
    inflight.set(url, p);
  }
  return inflight.get(url);
}

// The wasm module itself keeps a real (URL-bearing) response: the browser caches its compiled code only then.
// One request, shared: every caller gets a clone.
let wasmResponse = null;
function wasmFile(url) {
  if (wasmResponse === null) {
    wasmResponse = (async () => {
      const response = await nativeFetch(url);
      const cache = await cacheReady;
      if (cache && response.ok && !(await cache.match(url))) {
        await cache.put(url, response.clone()).catch(() => {});
      }
      return response;
    })();
    wasmResponse.catch(() => { wasmResponse = null; });
  }
  return wasmResponse.then((r) => r.clone());
}

self.fetch = async (input, init = {}) => {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url, self.location.href).href;
  const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
  const file = url.startsWith(SITE_URL) ? url.slice(SITE_URL.length) : null;
  if (method !== "GET" || file === null || !file.startsWith("pyodide/")) {
    return nativeFetch(input, init);
  }
  if (file.endsWith(".wasm")) {
    return wasmFile(url);
  }
  const {bytes, type} = await siteFile(url, init.integrity);
  return new Response(bytes.slice(0), {status: 200, headers: {"Content-Type": type}});
};

// Ask for everything the start-up needs now, while Pyodide boots (the wasm through the HTTP cache, which
// makes Pyodide's own request for it wait for this one).
for (const [file, integrity] of Object.entries(BUILD.startup_files)) {
  const url = SITE_URL + file;
  (file.endsWith(".wasm") ? wasmFile(url) : siteFile(url, integrity || undefined)).catch(() => {});
}

// Local first, CDN second: a lock entry that still points at the Pyodide CDN is switched to the copy
// next to pyodide-lock.json when that file exists, so dropping the wheel there makes the bundle offline.
async function resolveLock() {
  const lock = JSON.parse(new TextDecoder().decode((await siteFile(INDEX_URL + "pyodide-lock.json")).bytes));
  const remote = Object.values(lock.packages).filter((p) => /^[a-z]+:\/\//.test(p.file_name));
  await Promise.all(remote.map(async (pkg) => {
    const local = pkg.file_name.split("/").pop();
    try {
      const probe = await nativeFetch(INDEX_URL + local, {method: "HEAD", cache: "no-store"});
      if (probe.ok) {
        pkg.file_name = local;
      }
    } catch (e) { /* offline: keep the CDN URL */ }
  }));
  return lock;
}

// pyodide.js and pyodide.asm.js came through importScripts, which the fetch wrapper above does not see: copy
// them from the HTTP cache into the site's cache (no second download), so the next visit works offline.
async function keepImportedScripts() {
  const cache = await cacheReady;
  if (!cache) {
    return;
  }
  for (const file of ["pyodide.js", "pyodide.asm.js"]) {
    const url = INDEX_URL + file;
    if (await cache.match(url)) {
      continue;
    }
    try {
      const response = await nativeFetch(url, {cache: "only-if-cached", mode: "same-origin"});
      if (response.ok) {
        await cache.put(url, response);
      }
    } catch (e) { /* not in the HTTP cache: the service worker downloads it */ }
  }
}

// --- a boot memory snapshot ----------------------------------------------------------------------------------------
// Pyodide's `_makeSnapshot` / `_loadSnapshot`: the first visit saves the memory of a freshly started Python in the
// site's cache, the next visits restore it instead of starting Python again (measured in benchmarks/bench_bundle.py).
// Pyodide 0.29.3 can make one only before any package loads: after loadPackage, makeMemorySnapshot throws
// "Unexpected hiwire entry" (pyodide#5195), and the numpy extension modules (separate wasm instances, each with
// its own data and table slots) could not be restored from a memory image anyway. So packages load and import on
// every visit. The snapshot lives in the build's versioned cache: a new build drops it with the rest.
const SNAPSHOT_URL = INDEX_URL + "boot-memory.snapshot";   // a Cache Storage key only: never requested
const SNAPSHOT_SHA256 = "X-Quantcalc-Sha256";   // the snapshot's digest, kept with it
const snapshotReady = cacheReady.then(async (cache) => {
  const response = cache && await cache.match(SNAPSHOT_URL);
  if (!response) {
    return null;
  }
  // Pyodide hangs on a damaged snapshot instead of failing: only one whose digest matches is used
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (response.headers.get(SNAPSHOT_SHA256) !== await sha256Base64(bytes)) {
    console.warn("[quantcalc worker] the boot snapshot in the cache is damaged: starting Python anew");
    await cache.delete(SNAPSHOT_URL);
    return null;
  }
  return bytes;
}).catch(() => null);

async function bootPython(options) {
  const snapshot = await snapshotReady;
  if (snapshot) {
    try {
      const py = await loadPyodide({...options, _loadSnapshot: snapshot});
      // the restored random state would repeat on every visit
      py.runPython("import sys\nif 'random' in sys.modules: sys.modules['random'].seed()");
      return [py, "snapshot restored"];
    } catch (e) {
      console.warn(`[quantcalc worker] the boot snapshot could not be restored (${e}); starting Python anew`);
      (await cacheReady)?.delete(SNAPSHOT_URL).catch(() => {});
    }
  }
  const cache = await cacheReady;
  if (!cache) {
    return [await loadPyodide(options), "no cache: no snapshot"];
  }
  const py = await loadPyodide({...options, _makeSnapshot: true});
  let kind = "snapshot saved";
  try {
    // the standard library the packages import (build_site.py SNAPSHOT_IMPORTS) joins the snapshot
    py.runPython(`
import importlib
for name in ${JSON.stringify(BUILD.snapshot_imports || [])}:
    try:
        importlib.import_module(name)
    except Exception:
        pass
del importlib, name
`);
    const bytes = py.makeMemorySnapshot();
    sha256Base64(bytes).then((digest) => cache.put(SNAPSHOT_URL, new Response(bytes, {
      headers: {"Content-Type": "application/octet-stream", [SNAPSHOT_SHA256]: digest}}))).catch(() => {});
  } catch (e) {
    kind = "snapshot failed";
    console.warn(`[quantcalc worker] no boot snapshot: ${e}`);
  }
  // To make a snapshot Pyodide wraps the `js` module's globals in recording proxies; the rest of this visit
  // uses the real ones, as every later visit does.
  py.registerJsModule("js", self);
  py.runPython("import sys\nsys.modules.pop('js', None)");
  return [py, kind];
}

const INIT_DOC = "\ninit_doc()\n";   // the end of panel convert's prologue (it creates the document)

// The page's window.location (JSON) into Panel's Location of the current document: app.py syncs its settings
// with it.
function applyLocation(location) {
  self.pyodide.globals.set('location', location)
  return self.pyodide.runPythonAsync(`
    import json
    from panel.io.state import state
    from panel.util import edit_readonly
    if state.location:
        loc_data = json.loads(location)
        with edit_readonly(state.location):
            state.location.param.update({
                k: v for k, v in loc_data.items() if k in state.location.param
            })
    `)
}

async function python(code, stage, msg) {
  const result = await self.pyodide.runPythonAsync(code);
  if (stage) {
    status(msg, {stage: stage});
  }
  return result;
}

async function startApplication() {
  status("Loading Pyodide", {stage: "pyodide-loading"});
  let bootKind;
  try {
    const lock = await resolveLock();
    [self.pyodide, bootKind] = await bootPython({
      indexURL: INDEX_URL,
      lockFileContents: lock,
      packageBaseUrl: INDEX_URL,
      env: {PANEL_CDN_ROOT: BUILD.panel_cdn_root},
    });
  } catch (e) {
    self.postMessage({type: "error", stage: "pyodide-failed", at: now(),
                      msg: `Python (Pyodide ${BUILD.pyodide_version}) could not start: ${e}`});
    throw e;
  }
  status(`Pyodide ${self.pyodide.version} ready (${bootKind})`, {stage: "pyodide-ready", boot: bootKind});
  keepImportedScripts();
  self.pyodide.globals.set("sendPatch", sendPatch);

  status("Installing packages", {stage: "installing"});
  const errors = [];
  try {
    await self.pyodide.loadPackage(BUILD.startup_packages, {
      messageCallback: () => {},
      errorCallback: (msg) => { errors.push(msg); console.warn(msg); },
    });
  } catch (e) {
    errors.push(`${e}`);
  }
  const loaded = new Set(Object.keys(self.pyodide.loadedPackages).map(normalize));
  const missing = BUILD.startup_packages.filter((name) => !loaded.has(normalize(name)));
  if (missing.length) {
    const fromCdn = missing.filter((name) => BUILD.cdn_only_packages.includes(name));
    const other = missing.filter((name) => !BUILD.cdn_only_packages.includes(name));
    let msg = `The calculator cannot start: could not load ${missing.join(", ")}.` +
      ` What the page shows is the static preview made when the site was built; its controls do nothing.`;
    if (fromCdn.length) {
      msg += ` ${fromCdn.join(", ")} ${fromCdn.length > 1 ? "are" : "is"} compiled for WebAssembly and` +
        ` only available from the Pyodide CDN (${BUILD.pyodide_cdn}), which this browser could not reach.` +
        ` Open the page once while online (it is then cached for offline use), copy those wheels into` +
        ` pyodide/ next to pyodide-lock.json, or run the native app with "panel serve app.py".`;
    }
    if (other.length) {
      msg += ` ${other.join(", ")} should have been served from this site: the bundle is incomplete.`;
    }
    const installed = BUILD.startup_packages.filter((name) => loaded.has(normalize(name)));
    self.postMessage({type: "error", stage: "packages-missing", missing: missing, cdn_missing: fromCdn,
                      installed: installed, at: now(), details: errors.slice(0, 10), msg: msg});
    return;
  }
  status("Packages installed", {stage: "installed"});

  // The converted app: panel convert's prologue, app.py, and `await write_doc()` (serialises the document).
  // panel convert writes app.py's `${` as `&#36;{` so the template literal does not interpolate it; it is
  // Python's text again here (ReactiveHTML templates use `${script('name')}`; left escaped, BokehJS fails).
  const code = `{{ code }}`.replaceAll("&#36;{", "$" + "{");
  const writeDoc = "await write_doc()";
  try {
    if (!code.trimEnd().endsWith(writeDoc)) {
      throw new Error("the converted app does not end with write_doc(): build/ and panel disagree");
    }
    await python("import numpy", "imported-numpy", "numpy imported");
    await python("import bokeh.models, bokeh.plotting", "imported-bokeh", "bokeh imported");
    await python("import panel", "imported-panel", "panel imported");
    await python("import quantcore, quantcore.io, quantcore.report", "imported-quantcore", "quantcore imported");
    // The page's URL (sent by build/templates/boot.js as the worker starts) reaches Panel's Location right after
    // panel convert's init_doc(), before app.py runs: app.py's URL sync then applies ?example=... while it
    // builds, so the first document the worker writes already shows the settings in the URL (it used to show
    // the default example, computed, then the URL's one, computed again once the page sent its location).
    const prologueEnd = code.indexOf(INIT_DOC) + INIT_DOC.length;
    if (prologueEnd < INIT_DOC.length) {
      throw new Error("the converted app does not call init_doc(): build/ and panel disagree");
    }
    await python(code.slice(0, prologueEnd));
    if (self.pageLocation !== undefined) {
      await applyLocation(self.pageLocation);
    }
    await python(code.slice(prologueEnd).trimEnd().slice(0, -writeDoc.length), "app-built", "Calculator built");
    self.appBuilt = true;
    const [docs_json, render_items, root_ids] = await python(writeDoc, "document-written", "Document written");
    self.postMessage({
      type: 'render',
      docs_json: docs_json,
      render_items: render_items,
      root_ids: root_ids,
      at: now(),
    })
  } catch(e) {
    const traceback = `${e}`
    const tblines = traceback.split('\n')
    self.postMessage({type: "error", stage: "app-failed", at: now(), msg: tblines[tblines.length-2],
                      details: [traceback]});
    throw e
  }
}

self.quantcalcFileBytes = new Map();

self.onmessage = async (event) => {
  const msg = event.data
  if (msg.type === 'rendered') {
    await self.pyodide.runPythonAsync(`
    from panel.io.state import state
    from panel.io.pyodide import _link_docs_worker

    _link_docs_worker(state.curdoc, sendPatch, setter='js')
    `)
    status("Ready", {stage: "ready"});
    // what app.py left out of the first document (its plots) joins the page now, as patches
    await self.pyodide.runPythonAsync(`
    if "after_render" in globals():
        after_render()
    `)
  } else if (msg.type === 'file-bytes') {
    // A piece of the user's file (app.py BrowserFile), transferred, not copied; the model patch that follows
    // names it and Python takes it (app.transferred_bytes): no base64 round trip through the document.
    self.quantcalcFileBytes.set(msg.id, msg.buffer)
  } else if (msg.type === 'patch') {
    self.pyodide.globals.set('patch', msg.patch)
    self.pyodide.runPythonAsync(`
    from panel.io.pyodide import _convert_json_patch
    state.curdoc.apply_json_patch(_convert_json_patch(patch), setter='js')
    `)
    self.postMessage({type: 'idle'})
  } else if (msg.type === 'location') {
    if (self.appBuilt) {
      applyLocation(msg.location);
    } else {
      self.pageLocation = msg.location;   // applied before app.py runs (startApplication)
    }
  }
}

startApplication()
