// Start a real portico (debug binary) for the JS client suite, the way tests-py/conftest.py
// does: a temp data dir loaded with `portico demo --patients 3 --no-serve` (demo users),
// `PORTICO_LISTEN=127.0.0.1:0` and the base URL read from the
// `portico listening on http://HOST:PORT` line.
//
// The binary: PORTICO_BIN, else $CARGO_TARGET_DIR/debug/portico, else
// /var/tmp/portico-target/debug/portico, else ../target/debug/portico.

import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..", "..");
const LISTEN_RE = /^portico listening on (http:\/\/\S+?)\/?\s*$/;
const STARTUP_TIMEOUT_MS = Number(process.env.PORTICO_STARTUP_TIMEOUT || 60) * 1000;

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function findBinary() {
  if (process.env.PORTICO_BIN) return process.env.PORTICO_BIN;
  const candidates = [];
  if (process.env.CARGO_TARGET_DIR) candidates.push(join(process.env.CARGO_TARGET_DIR, "debug", "portico"));
  candidates.push("/var/tmp/portico-target/debug/portico", join(REPO, "target", "debug", "portico"));
  return candidates.find(executable) ?? candidates[0];
}

/** Parse the data dir's demo-users.txt: username → {username, role, password, totp, patient, relatedTo}. */
export function readDemoUsers(path) {
  const users = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line.trim() || line.startsWith("#")) continue;
    const [username, role, password, totp, patient, practitioner, related] = line.split("\t");
    users[username] = {
      username,
      role,
      password,
      totp,
      patient: patient || "",
      practitioner: practitioner || "",
      relatedTo: (related || "").split(",").filter(Boolean),
    };
  }
  return users;
}

/**
 * Start portico with demo data. Returns {baseUrl, fhirUrl, adminToken, users, cli(args), stop(), logTail()}.
 */
export async function startPortico({ patients = 3, env: extraEnv = {} } = {}) {
  const binary = findBinary();
  if (!executable(binary)) {
    throw new Error(
      `portico binary not found or not executable at ${binary}. Build it first ` +
        "(`cargo build -p portico`, or run scripts/test), or point PORTICO_BIN at it.",
    );
  }
  const work = mkdtempSync(join(tmpdir(), "portico-js-"));
  const dataDir = join(work, "data");
  const adminToken = randomBytes(24).toString("hex");
  const env = { ...process.env };
  delete env.PORTICO_DATABASE_URL;
  Object.assign(env, {
    PORTICO_LISTEN: "127.0.0.1:0",
    PORTICO_DATA_DIR: dataDir,
    PORTICO_ADMIN_TOKEN: adminToken,
    // Argon2id at a cost a debug build can afford; the sign-in/token limit raised (many
    // sign-ins from one address); refresh reuse grace 1 s.
    PORTICO_ARGON2_MEMORY_KIB: "256",
    PORTICO_ARGON2_ITERATIONS: "1",
    PORTICO_RATE_AUTH_PER_IP: "100000",
    PORTICO_REFRESH_GRACE_SECS: "1",
    ...extraEnv,
  });

  const cli = (args, more = {}) =>
    execFileSync(binary, args, {
      env: { ...env, ...more },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 120_000,
    });

  cli(["demo", "--patients", String(patients), "--no-serve"]);
  const users = readDemoUsers(join(dataDir, "demo-users.txt"));

  const logPath = join(work, "server.log");
  const log = createWriteStream(logPath);
  const child = spawn(binary, ["serve"], {
    env,
    cwd: work,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // own process group, so stop() reaches everything it started
  });
  child.stderr.pipe(log, { end: false });

  const baseUrl = await new Promise((resolveUrl, reject) => {
    let buffered = "";
    let done = false;
    const timer = setTimeout(() => {
      if (!done) reject(new Error(`portico printed no listening line within ${STARTUP_TIMEOUT_MS / 1000} s`));
    }, STARTUP_TIMEOUT_MS);
    child.stdout.on("data", (chunk) => {
      log.write(chunk);
      if (done) return;
      buffered += chunk.toString("utf8");
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        const m = LISTEN_RE.exec(line);
        if (m) {
          done = true;
          clearTimeout(timer);
          resolveUrl(m[1].replace(/\/$/, ""));
          return;
        }
      }
    });
    child.on("exit", (code) => {
      if (!done) {
        clearTimeout(timer);
        reject(new Error(`portico serve exited with status ${code} before listening; log: ${logPath}`));
      }
    });
  });

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
      let timer;
      const timeout = new Promise((r) => (timer = setTimeout(r, 10_000, "timeout")));
      const first = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (first === "timeout") {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
        await exited;
      }
    }
    log.end();
    if (!process.env.PORTICO_KEEP_TEST_DIRS) rmSync(work, { recursive: true, force: true });
  };

  const logTail = (n = 40) => {
    try {
      return readFileSync(logPath, "utf8").split("\n").slice(-n).join("\n");
    } catch {
      return "(no log)";
    }
  };

  return {
    baseUrl,
    fhirUrl: `${baseUrl}/fhir`,
    adminToken,
    users,
    dataDir,
    work,
    cli,
    stop,
    logTail,
  };
}
