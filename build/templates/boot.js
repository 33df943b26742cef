// quantcalc boot (top of <head>): start the Python worker now, before the page parses BokehJS and Panel's JS,
// so Pyodide downloads and boots while the pre-rendered page is drawn. Its first messages wait in
// window.quantcalcEarly for the page-side handler (build/templates/pyodide_handler.js).
(function () {
  window.quantcalcWorkerLog = [];
  window.quantcalcEarly = [];
  var worker = new Worker("./__APP_JS__");
  worker.onmessage = function (event) { if (window.quantcalcEarly) window.quantcalcEarly.push(event); };
  worker.onerror = function (event) { if (window.quantcalcEarly) window.quantcalcEarly.push({error: event}); };
  // the URL's settings, applied while the worker builds the app (not after its first document is drawn)
  worker.postMessage({type: "location", location: JSON.stringify(window.location)});
  window.quantcalcWorker = worker;
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("./serviceWorker.js").catch(function () {});
  }
})();
