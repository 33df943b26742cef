// Pyodide web worker for the quantcalc static bundle (derived from Panel 1.9.4's pyodide_worker.js).
// Every URL is relative to this script, so the bundle works under any sub-path and inside an iframe.
importScripts("{{ PYODIDE_URL }}");

const BUILD = /*BUILD_CONFIG*/{};
const INDEX_URL = new URL("./pyodide/", self.location.href).href;
const normalize = (name) => name.toLowerCase().replace(/[-_.]+/g, "-");

function status(msg, extra = {}) {
  console.log(`[quantcalc worker] ${msg}`);
  self.postMessage({type: "status", msg: msg, ...extra});
}

function sendPatch(patch, buffers, msg_id) {
  self.postMessage({
    type: 'patch',
    patch: patch,
    buffers: buffers
  })
}

// Local first, CDN second: a lock entry that still points at the Pyodide CDN is switched to the copy
// next to pyodide-lock.json when that file exists, so dropping the wheel there makes the bundle offline.
async function resolveLock() {
  const response = await fetch(INDEX_URL + "pyodide-lock.json");
  if (!response.ok) {
    throw new Error(`pyodide-lock.json: HTTP ${response.status}`);
  }
  const lock = await response.json();
  const remote = Object.values(lock.packages).filter((p) => /^[a-z]+:\/\//.test(p.file_name));
  await Promise.all(remote.map(async (pkg) => {
    const local = pkg.file_name.split("/").pop();
    try {
      const probe = await fetch(INDEX_URL + local, {method: "HEAD", cache: "no-store"});
      if (probe.ok) {
        pkg.file_name = local;
      }
    } catch (e) { /* offline: keep the CDN URL (the service worker may have it cached) */ }
  }));
  return lock;
}

async function startApplication() {
  const t0 = performance.now();
  status("Loading Pyodide", {stage: "pyodide-loading"});
  try {
    const lock = await resolveLock();
    self.pyodide = await loadPyodide({
      indexURL: INDEX_URL,
      lockFileContents: lock,
      packageBaseUrl: INDEX_URL,
      env: {PANEL_CDN_ROOT: BUILD.panel_cdn_root},
    });
  } catch (e) {
    self.postMessage({type: "error", stage: "pyodide-failed",
                      msg: `Python (Pyodide ${BUILD.pyodide_version}) could not start: ${e}`});
    throw e;
  }
  const bootMs = Math.round(performance.now() - t0);
  status(`Pyodide ${self.pyodide.version} ready`, {stage: "pyodide-ready", ms: bootMs});
  self.pyodide.globals.set("sendPatch", sendPatch);

  status("Installing packages", {stage: "installing"});
  const t1 = performance.now();
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
                      installed: installed,
                      details: errors.slice(0, 10), msg: msg});
    return;
  }
  status("Packages installed", {stage: "installed", ms: Math.round(performance.now() - t1)});

  console.log("Environment loaded!");
  status("Executing code", {stage: "executing"});
  try {
    const [docs_json, render_items, root_ids] = await self.pyodide.runPythonAsync(`{{ code }}`)
    self.postMessage({
      type: 'render',
      docs_json: docs_json,
      render_items: render_items,
      root_ids: root_ids
    })
    status("Ready", {stage: "ready", ms: Math.round(performance.now() - t0)});
  } catch(e) {
    const traceback = `${e}`
    const tblines = traceback.split('\n')
    self.postMessage({type: "error", stage: "app-failed", msg: tblines[tblines.length-2], details: [traceback]});
    throw e
  }
}

self.onmessage = async (event) => {
  const msg = event.data
  if (msg.type === 'rendered') {
    self.pyodide.runPythonAsync(`
    from panel.io.state import state
    from panel.io.pyodide import _link_docs_worker

    _link_docs_worker(state.curdoc, sendPatch, setter='js')
    `)
  } else if (msg.type === 'patch') {
    self.pyodide.globals.set('patch', msg.patch)
    self.pyodide.runPythonAsync(`
    from panel.io.pyodide import _convert_json_patch
    state.curdoc.apply_json_patch(_convert_json_patch(patch), setter='js')
    `)
    self.postMessage({type: 'idle'})
  } else if (msg.type === 'location') {
    self.pyodide.globals.set('location', msg.location)
    self.pyodide.runPythonAsync(`
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
}

startApplication()
