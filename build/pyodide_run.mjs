// Run a Python file inside Pyodide (the same CPython 3.13 build the browser runs) under Node.js, at build time.
//
//   node build/pyodide_run.mjs PYODIDE_DIR SCRIPT.py [ARGS...]
//
// PYODIDE_DIR holds pyodide.mjs and its core files (npm pyodide@0.29.3). The host's file system is mounted at
// /host, so SCRIPT.py and its arguments use host paths prefixed with /host. Exit status: the script's.
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pyodideDir, script, ...args] = process.argv.slice(2);
if (!pyodideDir || !script) {
  console.error("usage: node pyodide_run.mjs PYODIDE_DIR SCRIPT.py [ARGS...]");
  process.exit(2);
}
const { loadPyodide } = await import(pathToFileURL(path.join(path.resolve(pyodideDir), "pyodide.mjs")).href);
const pyodide = await loadPyodide({ indexURL: path.resolve(pyodideDir) + path.sep, stdout: console.log,
                                    stderr: console.error });
pyodide.FS.mkdir("/host");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: "/" }, "/host");
const hostScript = "/host" + path.resolve(script);
pyodide.globals.set("_argv", pyodide.toPy([hostScript, ...args]));
try {
  pyodide.runPython(`
import runpy, sys
sys.argv = list(_argv)
runpy.run_path(sys.argv[0], run_name="__main__")
`);
} catch (err) {
  // SystemExit(0) is success; anything else is printed by Python already.
  const text = `${err}`;
  const m = text.match(/SystemExit: (\d+)/);
  process.exit(m ? Number(m[1]) : 1);
}
process.exit(0);
