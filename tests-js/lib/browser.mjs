// A minimal "browser" over Node's fetch: a cookie jar kept by hand (Set-Cookie in,
// Cookie out), redirects never followed, and the forms of portico's sign-in and approval
// pages filled in with the fields docs/AUTH.md documents.

/** Decode the HTML character references askama may produce in attribute values. */
export function decodeEntities(s) {
  const named = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", "#39": "'" };
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (whole, ref) => {
    if (ref.startsWith("#x")) return String.fromCodePoint(parseInt(ref.slice(2), 16));
    if (ref.startsWith("#")) return String.fromCodePoint(parseInt(ref.slice(1), 10));
    return named[ref] ?? whole;
  });
}

function attributes(tag) {
  const attrs = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*"([^"]*)")?/g;
  const inner = tag.replace(/^<\w+/, "").replace(/\/?>$/, "");
  let m;
  while ((m = re.exec(inner))) attrs[m[1].toLowerCase()] = m[2] === undefined ? "" : decodeEntities(m[2]);
  return attrs;
}

/** The forms of a page: [{action, method, inputs: [attrs], buttons: [attrs]}]. */
export function parseForms(html) {
  const forms = [];
  const formRe = /<form\b[^>]*>([\s\S]*?)<\/form>/gi;
  let m;
  while ((m = formRe.exec(html))) {
    const open = attributes(m[0].match(/^<form\b[^>]*>/i)[0]);
    const body = m[1];
    forms.push({
      action: open.action ?? "",
      method: (open.method ?? "get").toLowerCase(),
      inputs: [...body.matchAll(/<input\b[^>]*>/gi)].map((x) => attributes(x[0])),
      buttons: [...body.matchAll(/<button\b[^>]*>/gi)].map((x) => attributes(x[0])),
    });
  }
  return forms;
}

export function hiddenFields(form) {
  return Object.fromEntries(form.inputs.filter((a) => a.type === "hidden").map((a) => [a.name, a.value ?? ""]));
}

export class Browser {
  constructor(baseUrl, userAgent = "portico-tests-js") {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.userAgent = userAgent;
    this.jar = new Map(); // name -> value (one host: portico)
  }

  cookieHeader() {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  remember(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(";").map((s) => s.trim());
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      const expired = attrs.some((a) => /^max-age=0$/i.test(a)) || value === "";
      if (expired) this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  async request(url, { method = "GET", form, headers = {} } = {}) {
    const abs = new URL(url, this.baseUrl + "/").href;
    const h = { "user-agent": this.userAgent, ...headers };
    const cookie = this.cookieHeader();
    if (cookie) h.cookie = cookie;
    let body;
    if (form) {
      h["content-type"] = "application/x-www-form-urlencoded";
      body = new URLSearchParams(form).toString();
    }
    const res = await fetch(abs, { method, headers: h, body, redirect: "manual" });
    this.remember(res);
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, location: res.headers.get("location") };
  }

  /** Sign in on a login page (fields csrf, req, username, password). */
  async login(page, username, password) {
    const form = parseForms(page.text).find((f) => f.action === "/oauth2/login");
    if (!form) throw new Error(`no sign-in form on the page (status ${page.status}): ${page.text.slice(0, 300)}`);
    return this.request(form.action, { method: "POST", form: { ...hiddenFields(form), username, password } });
  }

  /**
   * Submit an approval page: hidden csrf + req, every scope box left ticked (or only those in
   * keepScopes), the preselected patient radio (or `patient`), and decision.
   */
  async approve(page, { decision = "approve", keepScopes = null, patient = null } = {}) {
    const form = parseForms(page.text).find((f) => f.action === "/oauth2/approve");
    if (!form) throw new Error(`no approval form on the page (status ${page.status}): ${page.text.slice(0, 300)}`);
    const fields = Object.entries(hiddenFields(form));
    for (const a of form.inputs) {
      if (a.type === "checkbox" && a.name === "scope" && "checked" in a) {
        if (!keepScopes || keepScopes.includes(a.value)) fields.push(["scope", a.value]);
      }
    }
    const radios = form.inputs.filter((a) => a.type === "radio" && a.name === "patient");
    if (radios.length) fields.push(["patient", patient ?? (radios.find((r) => "checked" in r) ?? radios[0]).value]);
    fields.push(["decision", decision]);
    return this.request(form.action, { method: "POST", form: fields });
  }

  /** From portico's authorize URL to the app's redirect (returned, not followed). */
  async authorizeAndApprove(authorizeUrl, username, password, approveOptions = {}) {
    let page = await this.request(authorizeUrl);
    if (page.status === 200) {
      const signedIn = await this.login(page, username, password);
      if (signedIn.status !== 303) throw new Error(`sign-in failed: ${signedIn.status} ${signedIn.text.slice(0, 300)}`);
      page = signedIn;
    }
    if (page.status !== 303 || !page.location.startsWith("/oauth2/approve?req=")) {
      throw new Error(`expected the approval page, got ${page.status} ${page.location ?? ""} ${page.text.slice(0, 300)}`);
    }
    const approval = await this.request(page.location);
    const done = await this.approve(approval, approveOptions);
    if (done.status !== 303) throw new Error(`approval failed: ${done.status} ${done.text.slice(0, 300)}`);
    return done.location;
  }
}
