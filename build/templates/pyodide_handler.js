// Page side of the quantcalc worker (derived from Panel 1.9.4's pyodide_handler.js): shows the worker's
// progress, a visible message when Python cannot start, and keeps a log in window.quantcalcWorkerLog
// (stage, page time `t` in ms). The worker itself was started by the boot script at the top of <head>
// (build/templates/boot.js); the messages it sent before this script ran are replayed here in order.
const pyodideWorker = window.quantcalcWorker || new Worker("./{{ name }}.js")
window.quantcalcWorkerLog = window.quantcalcWorkerLog || []
pyodideWorker.busy = false
pyodideWorker.queue = []

let patching = 0

function quantcalcShowError(text) {
  let box = document.getElementById('quantcalc-error')
  if (box == null) {
    box = document.createElement('div')
    box.id = 'quantcalc-error'
    box.setAttribute('role', 'alert')
    box.style.cssText = 'position:sticky;top:0;z-index:10000;margin:0 0 8px 0;padding:10px 14px;' +
      'background:#fdecea;color:#611a15;border:1px solid #f5c2c0;font:14px/1.4 system-ui,sans-serif'
    document.body.insertBefore(box, document.body.firstChild)
  }
  box.textContent = text
  const body = document.getElementsByTagName('body')[0]
  body.classList.remove("pn-loading", "{{ loading_spinner }}")
  for (const el of [...document.getElementsByClassName('pn-loading-msg')]) {
    el.remove()
  }
}

function logEntry(msg) {
  const t = msg.at != null ? Math.round(msg.at - performance.timeOrigin) : Math.round(performance.now())
  window.quantcalcWorkerLog.push({type: msg.type, stage: msg.stage, msg: msg.msg, t: t,
                                  missing: msg.missing, installed: msg.installed, boot: msg.boot})
}

function onWorkerError(event) {
  window.quantcalcWorkerLog.push({type: 'error', stage: 'worker-crashed', msg: `${event.message}`,
                                  t: Math.round(performance.now())})
  quantcalcShowError(`The Python worker stopped: ${event.message}`)
}

function send_change(jsdoc, event) {
  if ((event.setter_id != null && event.setter_id == 'py') || (patching > 0)) {
    return
  } else if (pyodideWorker.busy && event.model && event.attr) {
    let events = []
    for (const old_event of pyodideWorker.queue) {
      if (!(old_event.model === event.model && old_event.attr === event.attr)) {
        events.push(old_event)
      }
    }
    events.push(event)
    pyodideWorker.queue = events
    return
  }
  const patch = jsdoc.create_json_patch([event])
  pyodideWorker.busy = true
  pyodideWorker.postMessage({type: 'patch', patch: patch})
}

// After the calculator is live: give the service worker a copy of every file of the site, so the next visit
// starts from its cache and works offline (PDF export included). The files this page and its worker already
// downloaded are copied from the browser's HTTP cache (`only-if-cached`: never a second download); the
// service worker then downloads the few nobody asked for yet. See build/templates/serviceWorker.js.
function cacheSiteForOffline() {
  if (!('serviceWorker' in navigator)) {
    return
  }
  navigator.serviceWorker.addEventListener('message', async (event) => {
    if (!event.data || event.data.type !== 'copy-from-http-cache') {
      return
    }
    const cache = await caches.open(event.data.cache)
    // this page is cached without its query string; the HTTP cache holds it under the URL it was opened with
    // (not location.href: the app has rewritten the query string since)
    const nav = performance.getEntriesByType('navigation')[0]
    const opened = new URL(nav ? nav.name : location.href)
    // what this page fetched itself, past any service worker (those are in the HTTP cache; what the service
    // worker served is in its own cache already)
    const loaded = new Set(performance.getEntriesByType('resource').filter((e) => !e.workerStart)
      .map((e) => e.name.split('#')[0]))
    for (const url of event.data.urls) {
      const source = new URL(url).pathname === opened.pathname ? opened.href : url
      if ((source !== opened.href && !loaded.has(url)) || await cache.match(url)) {
        continue   // not fetched by this page itself (the service worker has it or downloads it)
      }
      try {
        const response = await fetch(source, {cache: 'only-if-cached', mode: 'same-origin'})
        if (response.ok) {
          await cache.put(url, response)
        }
      } catch (err) { /* not in the HTTP cache: the service worker downloads it */ }
    }
    event.source.postMessage({type: 'copied'})
  })
  navigator.serviceWorker.ready.then((reg) => {
    if (reg.active) {
      reg.active.postMessage({type: 'cache-site'})
    }
  }).catch(() => {})
}

async function onWorkerMessage(event) {
  const msg = event.data
  if (msg.type === 'status' || msg.type === 'error' || msg.type === 'render') {
    logEntry(msg.type === 'render' ? {...msg, stage: 'render-received'} : msg)
  }

  const body = document.getElementsByTagName('body')[0]
  const loading_msgs = document.getElementsByClassName('pn-loading-msg')
  if (msg.type === 'idle') {
    if (pyodideWorker.queue.length) {
      const patch = pyodideWorker.jsdoc.create_json_patch(pyodideWorker.queue)
      pyodideWorker.busy = true
      pyodideWorker.queue = []
      pyodideWorker.postMessage({type: 'patch', patch: patch})
    } else {
      pyodideWorker.busy = false
    }
  } else if (msg.type === 'error') {
    console.error(msg.msg, msg.details || '')
    quantcalcShowError(msg.msg)
  } else if (msg.type === 'status') {
    if (msg.stage === 'ready') {
      cacheSiteForOffline()
    }
    let loading_msg
    if (loading_msgs.length) {
      loading_msg = loading_msgs[0]
    } else if (body.classList.contains('pn-loading')) {
      loading_msg = document.createElement('div')
      loading_msg.classList.add('pn-loading-msg')
      body.appendChild(loading_msg)
    }
    if (loading_msg != null) {
      loading_msg.textContent = msg.msg
    }
  } else if (msg.type === 'render') {
    await prerendered()
    const docs_json = JSON.parse(msg.docs_json)
    const render_items = JSON.parse(msg.render_items)
    const root_ids = JSON.parse(msg.root_ids)

    // Remap roots in message to element IDs
    const root_els = document.querySelectorAll('[data-root-id]')
    const data_roots = []
    for (const el of root_els) {
       el.innerHTML = ''
       data_roots.push([el.getAttribute('data-root-id'), el.id])
    }
    data_roots.sort((a, b) => a[0]<b[0] ? -1: 1)
    const roots = {}
    for (let i=0; i<data_roots.length; i++) {
      roots[root_ids[i]] = data_roots[i][1]
    }
    render_items[0]['roots'] = roots
    render_items[0]['root_ids'] = root_ids

    // Clear pre-rendered contents
    Bokeh.index.roots.map((v) => v.remove())

    // Embed content
    const [views] = await Bokeh.embed.embed_items(docs_json, render_items)

    // Remove loading spinner and message
    body.classList.remove("pn-loading", "{{ loading_spinner }}")
    for (const loading_msg of loading_msgs) {
      loading_msg.remove()
    }
    logEntry({type: 'status', stage: 'rendered', at: performance.timeOrigin + performance.now()})

    // Setup bi-directional syncing
    pyodideWorker.jsdoc = jsdoc = [...views.roots.values()][0].model.document
    jsdoc.on_change(send_change.bind(null, jsdoc), false)
    pyodideWorker.postMessage({'type': 'rendered'})
    pyodideWorker.postMessage({'type': 'location', location: JSON.stringify(window.location)})
  } else if (msg.type === 'patch') {
    try {
      patching += 1
      pyodideWorker.jsdoc.apply_json_patch(msg.patch, msg.buffers)
    } finally {
      patching -= 1
    }
  }
}

// Resolves once BokehJS has drawn the pre-rendered document (it must not be replaced half-way).
function prerendered(timeout_ms = 15000) {
  const expected = document.querySelectorAll('[data-root-id]').length
  const t0 = performance.now()
  return new Promise((resolve) => {
    const check = () => {
      const n = (window.Bokeh && Bokeh.index) ? Bokeh.index.roots.length : 0
      if (n >= expected || performance.now() - t0 > timeout_ms) {
        resolve()
      } else {
        setTimeout(check, 25)
      }
    }
    check()
  })
}

// Messages are handled one at a time, in order (a render must finish before the patches that follow it).
let chain = Promise.resolve()
function handle(event) {
  chain = chain.then(() => onWorkerMessage(event)).catch((e) => {
    // A page that cannot draw the worker's document says so (and the log's error stage ends a test at once).
    console.error('quantcalc:', e)
    logEntry({type: 'error', stage: 'render-failed', msg: String(e)})
    quantcalcShowError(`The page could not show the calculator: ${e}`)
  })
}

function attach() {
  const early = window.quantcalcEarly || []
  window.quantcalcEarly = null
  pyodideWorker.onmessage = handle
  pyodideWorker.onerror = onWorkerError
  for (const item of early) {
    if (item.error) {
      onWorkerError(item.error)
    } else {
      handle(item)
    }
  }
}

// The pre-rendered document is embedded at DOMContentLoaded; the worker's document replaces it only after.
if (document.readyState !== 'loading') {
  attach()
} else {
  document.addEventListener('DOMContentLoaded', () => setTimeout(attach, 0), {once: true})
}
