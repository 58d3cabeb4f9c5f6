// A tiny SMART app in-process: Node's http server with fhirclient's Node entry.
//   GET /launch    → smart(req, res, storage).authorize(app.options)  (302 to portico)
//   GET /callback  → smart(req, res, storage).ready()                 (code → tokens)
// The Client that ready() resolves is kept in `app.client` for the test to use; a failure
// of ready() is kept in `app.error` and answered 500.

import { createServer } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const smart = require("fhirclient/lib/entry/node");

/** fhirclient's storage interface (get/set/unset, async) over a Map: the app's "session". */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  async get(key) {
    return this.map.get(key);
  }
  async set(key, value) {
    this.map.set(key, value);
    return value;
  }
  async unset(key) {
    return this.map.delete(key);
  }
}

export async function startApp() {
  const app = {
    options: null, // authorize() options, set by the test before GET /launch
    adapterOptions: {}, // extra NodeAdapter options (e.g. refreshTokenWithClientId)
    storage: new MemoryStorage(),
    client: null,
    error: null,
    server: null,
    baseUrl: null,
  };
  app.server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://app.invalid").pathname;
    const api = smart(req, res, app.storage);
    Object.assign(api.options, app.adapterOptions);
    try {
      if (path === "/launch") {
        await api.authorize(app.options);
      } else if (path === "/callback") {
        app.client = null;
        app.error = null;
        app.client = await api.ready();
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("authorized");
      } else {
        res.writeHead(404);
        res.end();
      }
    } catch (e) {
      app.error = e;
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(e?.stack ?? e));
    }
  });
  await new Promise((r) => app.server.listen(0, "127.0.0.1", r));
  app.baseUrl = `http://127.0.0.1:${app.server.address().port}`;
  app.redirectUri = `${app.baseUrl}/callback`;
  app.stop = () =>
    new Promise((r) => {
      app.server.close(r);
      app.server.closeAllConnections(); // keep-alive sockets would hold the process ~5 s
    });
  return app;
}
