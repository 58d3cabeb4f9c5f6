// SMART App Launch with SMART's JavaScript client (npm `fhirclient`, pinned in
// package.json / package-lock.json) from Node, against the running portico binary.
//
// The app is a tiny in-process http server using fhirclient's Node entry
// (`fhirclient/lib/entry/node`, see lib/app.mjs): /launch calls authorize(), which
// discovers portico from `{fhir}/.well-known/smart-configuration` and redirects with PKCE;
// the sign-in and approval pages are driven with fetch (lib/browser.mjs); the redirect
// back to /callback runs ready(), which exchanges the code. The resulting Client then reads
// the patient's data.
//
//   node --test            (from tests-js/, after `npm ci`; needs the debug binary)

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, verify as verifySignature } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

import { startPortico } from "./lib/portico.mjs";
import { Browser, parseForms } from "./lib/browser.mjs";
import { startApp } from "./lib/app.mjs";

const require = createRequire(import.meta.url);
const FHIRCLIENT_VERSION = require("fhirclient/package.json").version;

const SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs";

let portico;
let app;
let publicClient;
let patientUser;
let otherPatients;

function uid(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

function registerClient(id, redirectUri, extra = []) {
  return portico.cli(["client", "add", "--id", id, "--name", `JS app ${id}`, "--redirect-uri", redirectUri, ...extra]);
}

async function adminGet(path) {
  const res = await fetch(`${portico.fhirUrl}/${path}`, {
    headers: { authorization: `Bearer ${portico.adminToken}`, accept: "application/fhir+json" },
  });
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

/** The app's /launch: the redirect fhirclient's authorize() answers with. */
async function launch(options) {
  app.options = options;
  const res = await fetch(`${app.baseUrl}/launch`, { redirect: "manual" });
  const body = await res.text();
  assert.equal(res.status, 302, `authorize() did not redirect: ${res.status} ${body.slice(0, 500)}`);
  return res.headers.get("location");
}

/** Follow portico's redirect back into the app (its /callback runs ready()). */
async function callback(location) {
  assert.ok(location.startsWith(app.redirectUri + "?"), `unexpected redirect ${location}`);
  const res = await fetch(location, { redirect: "manual" });
  const body = await res.text();
  assert.equal(res.status, 200, `ready() failed: ${body.slice(0, 800)}`);
  assert.ok(app.client, "ready() resolved a Client");
  return app.client;
}

async function standaloneLaunch({ clientId, user, scope = SCOPE, extra = {}, approve = {} }) {
  const authorizeUrl = await launch({
    iss: portico.fhirUrl,
    clientId,
    scope,
    redirectUri: app.redirectUri,
    ...extra,
  });
  const browser = new Browser(portico.baseUrl);
  const back = await browser.authorizeAndApprove(authorizeUrl, user.username, user.password, approve);
  return { authorizeUrl, client: await callback(back), browser };
}

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

before(async () => {
  portico = await startPortico({ patients: 3 });
  app = await startApp();
  publicClient = uid("fhirclient-js");
  registerClient(publicClient, app.redirectUri);
  const patients = Object.values(portico.users).filter((u) => u.role === "patient");
  patients.sort((a, b) => a.patient.localeCompare(b.patient));
  patientUser = patients[0];
  otherPatients = patients.slice(1).map((u) => u.patient);
});

after(async () => {
  await app?.stop();
  await portico?.stop();
});

describe(`fhirclient ${FHIRCLIENT_VERSION} standalone launch (public client)`, () => {
  let launched;

  before(async () => {
    launched = await standaloneLaunch({ clientId: publicClient, user: patientUser });
  });

  test("authorize() discovers portico and sends PKCE S256 with aud", () => {
    assert.equal(FHIRCLIENT_VERSION, "2.6.3");
    const url = new URL(launched.authorizeUrl);
    assert.equal(`${url.origin}${url.pathname}`, `${portico.baseUrl}/oauth2/authorize`);
    const q = url.searchParams;
    assert.equal(q.get("response_type"), "code");
    assert.equal(q.get("client_id"), publicClient);
    assert.equal(q.get("redirect_uri"), app.redirectUri);
    assert.equal(q.get("aud"), portico.fhirUrl);
    assert.equal(q.get("code_challenge_method"), "S256");
    assert.equal(q.get("code_challenge").length, 43);
    assert.equal(q.get("scope"), SCOPE);
    assert.ok(q.get("state"));
  });

  test("ready() completed the code exchange with the SMART launch context", () => {
    const client = launched.client;
    const tr = client.state.tokenResponse;
    assert.equal(tr.token_type, "Bearer");
    assert.equal(tr.patient, patientUser.patient);
    assert.equal(client.patient.id, patientUser.patient);
    assert.equal(client.getPatientId(), patientUser.patient);
    assert.deepEqual(new Set(tr.scope.split(" ")), new Set(SCOPE.split(" ")));
    assert.ok(tr.refresh_token, "offline_access gives a refresh token");
    assert.equal(client.getFhirUser(), `Patient/${patientUser.patient}`);
    assert.equal(client.user.resourceType, "Patient");
    assert.equal(client.user.id, patientUser.patient);
    assert.equal(client.state.tokenUri, `${portico.baseUrl}/oauth2/token`);
    assert.ok(client.state.expiresAt > Date.now() / 1000 + 800, "expires_in 900 s");
  });

  test("the id_token is RS256, verifies against /oauth2/jwks and names the fhirUser", async () => {
    const idToken = launched.client.state.tokenResponse.id_token;
    const [h, p, s] = idToken.split(".");
    const header = b64urlJson(h);
    assert.equal(header.alg, "RS256");
    const jwks = await (await fetch(`${portico.baseUrl}/oauth2/jwks`)).json();
    const jwk = jwks.keys.find((k) => k.kid === header.kid);
    assert.ok(jwk, `no JWKS key with kid ${header.kid}`);
    const key = createPublicKey({ key: jwk, format: "jwk" });
    assert.ok(verifySignature("sha256", Buffer.from(`${h}.${p}`), key, Buffer.from(s, "base64url")));
    const claims = b64urlJson(p);
    assert.equal(claims.iss, portico.fhirUrl);
    assert.equal(claims.aud, publicClient);
    assert.equal(claims.fhirUser, `${portico.fhirUrl}/Patient/${patientUser.patient}`);
    assert.deepEqual(launched.client.getIdToken(), claims);
  });

  test("client.patient.read() returns the launch patient", async () => {
    const patient = await launched.client.patient.read();
    assert.equal(patient.resourceType, "Patient");
    assert.equal(patient.id, patientUser.patient);
    const admin = await adminGet(`Patient/${patientUser.patient}`);
    assert.deepEqual(patient.name, admin.name);
    const me = await launched.client.user.read();
    assert.equal(me.id, patientUser.patient);
  });

  test("client.request('Observation?…') returns only the patient's observations, across pages", async () => {
    const expected = (await adminGet(`Observation?patient=${patientUser.patient}&_summary=count`)).total;
    assert.ok(expected > 20, "enough observations to need several pages");
    const mine = await launched.client.request(`Observation?patient=${patientUser.patient}&_count=20`, {
      pageLimit: 0,
      flat: true,
    });
    assert.equal(mine.length, expected);
    assert.deepEqual(new Set(mine.map((o) => o.subject.reference)), new Set([`Patient/${patientUser.patient}`]));
    // No patient parameter: the patient/ scope still confines the search.
    const all = await launched.client.request("Observation?_count=50", { pageLimit: 0, flat: true });
    assert.equal(all.length, expected);
    // fhirclient's patient-compartment helper adds the patient parameter itself.
    const labs = await launched.client.patient.request("Observation?category=laboratory", {
      pageLimit: 0,
      flat: true,
    });
    assert.ok(labs.length > 0 && labs.length < expected);
    assert.ok(labs.every((o) => o.subject.reference === `Patient/${patientUser.patient}`));
  });

  test("other patients are invisible (404) to the client", async () => {
    for (const other of otherPatients) {
      await assert.rejects(launched.client.request(`Patient/${other}`), (e) => e.status === 404);
      const obs = await launched.client.request(`Observation?patient=${other}`, { flat: true });
      assert.deepEqual(obs, []);
    }
  });

  test(
    "client.refresh() with fhirclient's defaults (no client_id, as SMART specifies for public clients)",
    async () => {
      const { client } = await standaloneLaunch({ clientId: publicClient, user: patientUser });
      delete client.environment.options.refreshTokenWithClientId;
      const before = client.state.tokenResponse.access_token;
      await client.refresh();
      assert.notEqual(client.state.tokenResponse.access_token, before);
    },
  );

  test("client.refresh() (refreshTokenWithClientId) rotates the tokens; the old refresh token is spent", async () => {
    const { client } = await standaloneLaunch({ clientId: publicClient, user: patientUser });
    client.environment.options.refreshTokenWithClientId = true;
    const old = { ...client.state.tokenResponse };
    await client.refresh();
    const now = client.state.tokenResponse;
    assert.notEqual(now.access_token, old.access_token);
    assert.notEqual(now.refresh_token, old.refresh_token);
    assert.equal(now.patient, patientUser.patient);
    const patient = await client.patient.read();
    assert.equal(patient.id, patientUser.patient);
    const reuse = await fetch(`${portico.baseUrl}/oauth2/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: old.refresh_token, client_id: publicClient }),
    });
    assert.equal(reuse.status, 400);
    assert.equal((await reuse.json()).error, "invalid_grant");
  });

  test("an unticked scope is not granted, and ready() reports a denial as an error", async () => {
    const { client } = await standaloneLaunch({
      clientId: publicClient,
      user: patientUser,
      approve: { keepScopes: ["launch/patient", "patient/*.rs"] },
    });
    assert.equal(client.state.tokenResponse.scope, "launch/patient patient/*.rs");
    assert.equal(client.state.tokenResponse.refresh_token, undefined);
    assert.equal(client.state.tokenResponse.id_token, undefined);

    const authorizeUrl = await launch({ iss: portico.fhirUrl, clientId: publicClient, scope: SCOPE, redirectUri: app.redirectUri });
    const browser = new Browser(portico.baseUrl);
    const denied = await browser.authorizeAndApprove(authorizeUrl, patientUser.username, patientUser.password, {
      decision: "deny",
    });
    const res = await fetch(denied, { redirect: "manual" });
    assert.equal(res.status, 500);
    assert.match(String(app.error), /access_denied: The user did not allow access\./);
  });
});

describe("caregiver standalone launch", () => {
  test("the caregiver picks a patient on the approval page; the client is confined to that patient", async () => {
    const carer = Object.values(portico.users).find((u) => u.role === "caregiver");
    assert.ok(carer.relatedTo.length >= 2);
    const chosen = carer.relatedTo[1];
    const { client } = await standaloneLaunch({ clientId: publicClient, user: carer, approve: { patient: chosen } });
    assert.equal(client.patient.id, chosen);
    assert.equal(client.state.tokenResponse.need_patient_banner, true);
    assert.equal(client.user.resourceType, "RelatedPerson");
    assert.equal((await client.patient.read()).id, chosen);
    await assert.rejects(client.request(`Patient/${carer.relatedTo[0]}`), (e) => e.status === 404);
  });
});

describe("confidential asymmetric client (private_key_jwt on the code exchange)", () => {
  test("ES384: fhirclient signs a client assertion with clientPrivateJwk; portico accepts it once", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const kid = uid("es384");
    const publicJwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "ES384", use: "sig" };
    const privateJwk = { ...privateKey.export({ format: "jwk" }), kid, alg: "ES384" };
    const jwksPath = join(portico.work, `${kid}.json`);
    writeFileSync(jwksPath, JSON.stringify({ keys: [publicJwk] }));
    const id = uid("fhirclient-js-jwt");
    registerClient(id, app.redirectUri, ["--jwks", jwksPath]);
    const { client } = await standaloneLaunch({ clientId: id, user: patientUser, extra: { clientPrivateJwk: privateJwk } });
    assert.equal(client.patient.id, patientUser.patient);
    assert.equal((await client.patient.read()).id, patientUser.patient);
  });
});

describe("refusals", () => {
  test("a redirect URI the client did not register stops at portico's error page", async () => {
    const authorizeUrl = await launch({
      iss: portico.fhirUrl,
      clientId: publicClient,
      scope: SCOPE,
      redirectUri: `${app.baseUrl}/not-registered`,
    });
    const res = await new Browser(portico.baseUrl).request(authorizeUrl);
    assert.equal(res.status, 400);
    assert.equal(res.location, null);
    assert.match(res.text, /has not registered/);
    assert.deepEqual(parseForms(res.text), []);
  });

  test("pkceMode 'disabled' (no code_challenge) is sent back with invalid_request", async () => {
    const authorizeUrl = await launch({
      iss: portico.fhirUrl,
      clientId: publicClient,
      scope: SCOPE,
      redirectUri: app.redirectUri,
      pkceMode: "disabled",
    });
    assert.equal(new URL(authorizeUrl).searchParams.get("code_challenge"), null);
    const res = await new Browser(portico.baseUrl).request(authorizeUrl);
    assert.equal(res.status, 303);
    const back = new URL(res.location);
    assert.equal(back.searchParams.get("error"), "invalid_request");
    const ready = await fetch(res.location, { redirect: "manual" });
    assert.equal(ready.status, 500);
    assert.match(String(app.error), /PKCE with code_challenge_method=S256 is required/);
  });
});
