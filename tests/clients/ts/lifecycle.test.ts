// The TypeScript client (openapi-typescript types + openapi-fetch) against a
// running issuer: every operation of the spec, and the license lifecycle an
// integrator goes through. Run with node's test runner by
// tests/tests/clients_e2e.rs, with CODITECT_URL, SPEC, BUYER_EMAIL,
// BUYER_PASSWORD and LICENSE_KEY set (see tests/clients/python/test_lifecycle.py).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import createClient from "openapi-fetch";
import type { components, paths } from "../generated/api.js";

type Problem = components["schemas"]["Problem"];

const env = (name: string): string => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};

const URL = env("CODITECT_URL");
const PASSWORD = "correct horse battery staple";

/** `method path` (as in the spec) of every request the suite sent. */
const called = new Set<string>();

function client(headers: Record<string, string> = {}) {
  const c = createClient<paths>({ baseUrl: URL, headers });
  c.use({
    onRequest({ request, schemaPath }) {
      called.add(`${request.method.toLowerCase()} ${schemaPath}`);
    },
  });
  return c;
}

const session = (token: string) => client({ Authorization: `Bearer ${token}` });

/** The problem document of a refusal, as the client read it. */
function problem(
  result: { error?: unknown; response: Response },
  status: number,
  code: string,
): Problem {
  assert.equal(result.response.status, status);
  assert.equal(result.response.headers.get("content-type"), "application/problem+json");
  const p = result.error as Problem;
  assert.equal(p.code, code);
  assert.equal(p.status, status);
  return p;
}

describe("the TypeScript client", () => {
  it("reads the probes and the key set", async () => {
    const c = client();
    assert.equal((await c.GET("/healthz")).data?.status, "ok");
    assert.equal((await c.GET("/readyz")).data?.status, "ready");
    const keys = await c.GET("/api/v1/keys");
    assert.equal(keys.data?.keys[0]?.kty, "OKP");
    assert.equal(keys.data?.keys[0]?.crv, "Ed25519");
  });

  it("signs up, signs in, checks out and signs out", async () => {
    const c = client();
    const email = `ts-${randomBytes(4).toString("hex")}@example.com`;
    const up = await c.POST("/api/v1/auth/signup", {
      body: { email, password: PASSWORD, company_name: "TS Client Ltd" },
    });
    assert.equal(up.response.status, 202);
    assert.equal(up.data?.email, email);
    const login = await c.POST("/api/v1/auth/login", { body: { email, password: PASSWORD } });
    assert.equal(login.response.status, 200);
    assert.equal(login.data?.token_type, "Bearer");
    const s = session(login.data!.access_token);
    assert.deepEqual((await s.GET("/api/v1/licenses")).data?.licenses, []);
    // Refused: no subscription yet, so no billing portal.
    problem(await s.POST("/api/v1/billing/portal"), 409, "no_billing_account");
    const checkout = await s.POST("/api/v1/billing/checkout", {
      body: { plan: "pilot-starter", interval: "month" },
    });
    assert.equal(checkout.response.status, 200);
    assert.match(checkout.data!.url, /^http/);
    // The mailed links' operations, with a token that is no link's.
    problem(
      await c.POST("/api/v1/auth/verify-email", { body: { token: "no-such-link" } }),
      404,
      "link_invalid",
    );
    const reset = await c.POST("/api/v1/auth/password-reset", { body: { email } });
    assert.equal(reset.response.status, 202);
    problem(
      await c.POST("/api/v1/auth/new-password", {
        body: { token: "no-such-link", password: "a new long passphrase" },
      }),
      404,
      "link_invalid",
    );
    // Signing out ends the session.
    assert.equal((await s.POST("/api/v1/auth/logout")).response.status, 204);
    problem(await s.GET("/api/v1/licenses"), 401, "unauthorized");
  });

  it("runs the license lifecycle", async () => {
    const c = client();
    const key = env("LICENSE_KEY");
    const machine = randomBytes(32).toString("hex");
    const login = await c.POST("/api/v1/auth/login", {
      body: { email: env("BUYER_EMAIL"), password: env("BUYER_PASSWORD") },
    });
    assert.equal(login.response.status, 200);
    const s = session(login.data!.access_token);
    const list = await s.GET("/api/v1/licenses");
    assert.equal(list.data?.licenses.length, 1);
    const summary = list.data!.licenses[0]!.license;
    assert.equal(summary.key_hint, key.slice(-4));
    assert.equal(summary.status, "active");

    const activated = await c.POST("/api/v1/licenses/activate", {
      body: { license_key: key, hardware_id: machine, machine_name: "ts-client" },
    });
    assert.equal(activated.response.status, 201);
    assert.equal(activated.data?.activation.status, "active");
    assert.equal(activated.data?.license.devices_used, 1);
    const again = await c.POST("/api/v1/licenses/activate", {
      body: { license_key: key, hardware_id: machine },
    });
    assert.equal(again.response.status, 200);

    const renewed = await c.POST("/api/v1/licenses/validate", {
      body: { license_key: key, hardware_id: machine, client_version: "ts-1" },
    });
    assert.equal(renewed.response.status, 200);
    assert.match(renewed.data!.token.token, /^[A-Za-z0-9_-]+$/);

    const feats = await client({ "X-License-Key": key }).GET("/api/v1/licenses/features");
    assert.equal(feats.response.status, 200);
    assert.equal(feats.data?.tier, summary.tier);
    problem(
      await client({ "X-License-Key": "CODITECT-PILOT-2222-2222-2222" }).GET(
        "/api/v1/licenses/features",
      ),
      404,
      "license_not_found",
    );

    const freed = await c.POST("/api/v1/licenses/deactivate", {
      body: { license_key: key, hardware_id: machine },
    });
    assert.equal(freed.response.status, 200);
    assert.equal(freed.data?.activation.status, "deactivated");
    assert.equal(freed.data?.license.devices_used, 0);
    const refused = problem(
      await c.POST("/api/v1/licenses/validate", { body: { license_key: key, hardware_id: machine } }),
      403,
      "not_activated",
    );
    assert.match(refused.detail, /activate/);
    const bad = problem(
      await c.POST("/api/v1/licenses/activate", { body: { license_key: key, hardware_id: "xyz" } }),
      422,
      "invalid_field",
    );
    assert.equal(bad.field, "hardware_id");

    problem(
      await s.POST("/api/v1/billing/checkout", {
        body: { plan: "pilot-professional", interval: "year" },
      }),
      409,
      "already_subscribed",
    );
    const portal = await s.POST("/api/v1/billing/portal");
    assert.equal(portal.response.status, 200);
    assert.match(portal.data!.url, /^http/);
  });

  it("starts the CLI's sign-ins and reads why a code is not accepted", async () => {
    const c = client();
    const device = await c.POST("/api/v1/auth/device/code");
    assert.equal(device.response.status, 200);
    assert.match(device.data!.verification_uri, /\/device$/);
    assert.ok(device.data!.verification_uri_complete.includes(device.data!.user_code));
    const poll = { body: { device_code: device.data!.device_code } };
    // Nobody approved it yet; polling again at once is too soon.
    problem(await c.POST("/api/v1/auth/device/token", poll), 409, "authorization_pending");
    problem(await c.POST("/api/v1/auth/device/token", poll), 409, "slow_down");
    problem(
      await c.POST("/api/v1/auth/device/token", { body: { device_code: "no-such-code" } }),
      404,
      "code_invalid",
    );
    problem(
      await c.POST("/api/v1/auth/cli/token", {
        body: {
          code: "no-such-code",
          code_verifier: "v".repeat(43),
          redirect_uri: "http://127.0.0.1:49152/callback",
        },
      }),
      404,
      "code_invalid",
    );
  });

  it("called every operation of the spec", () => {
    const spec = JSON.parse(readFileSync(env("SPEC"), "utf8"));
    const missing: string[] = [];
    for (const [path, item] of Object.entries<Record<string, { operationId: string }>>(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (!called.has(`${method} ${path}`)) missing.push(op.operationId);
      }
    }
    assert.deepEqual(missing, [], "operations the TypeScript client suite did not call");
    console.log(`typescript client: ${called.size} operations called`);
  });
});
