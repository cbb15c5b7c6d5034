// Verifying a CODITECT license token in TypeScript, from the issuer's JWK
// Set alone (GET /api/v1/keys), with Auth0's COSE library (@auth0/cose).
//
// The token profile (docs/ARCHITECTURE.md, "The license token"): a
// COSE_Sign1 (CBOR tag 18) signed with Ed25519, protected header exactly
// {1: -8 (EdDSA), 4: kid}, external_aad "coditect-license-v1", over a CWT
// claims set (exp = 4, nbf = 5, iat = 6).
//
// usage: npx tsx verify-token.ts JWKS_FILE TOKEN
//   TOKEN is the `token.token` of an activate/validate answer (base64url).
//   Prints the claims as JSON and exits 0, or says why and exits 1.

import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { Algorithms, Sign1 } from "@auth0/cose";
import { Decoder } from "cbor-x";

const EXTERNAL_AAD = new TextEncoder().encode("coditect-license-v1");
// Claims are a map with integer keys: read it as a Map, not an object.
const cbor = new Decoder({ mapsAsObjects: false, useRecords: false });

export interface Jwk {
  kty: string;
  crv: string;
  x: string;
  kid: string;
  alg: string;
  use?: string;
}

/** Verifies `token` (base64url) with the keys of `jwks`; its claims, or throws. */
export async function verifyToken(
  jwks: { keys: Jwk[] },
  token: string,
  now: number = Date.now() / 1000,
): Promise<Map<number, unknown>> {
  const message = Sign1.decode(Buffer.from(token, "base64url"));
  if (message.alg !== Algorithms.EdDSA) {
    throw new Error(`not an EdDSA token (alg ${message.alg})`);
  }
  const kid = new TextDecoder().decode(message.kid);
  const jwk = jwks.keys.find((k) => k.kid === kid);
  if (!jwk || jwk.kty !== "OKP" || jwk.crv !== "Ed25519") {
    throw new Error(`no Ed25519 key "${kid}" in the JWK Set`);
  }
  const key = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: "jwk" });
  // Throws when the signature does not verify.
  await message.verify(key, { externalAAD: EXTERNAL_AAD, algorithms: [Algorithms.EdDSA] });
  const claims = cbor.decode(message.payload) as Map<number, unknown>;
  const exp = Number(claims.get(4));
  const nbf = Number(claims.get(5));
  if (!(now < exp)) throw new Error(`the token expired at ${exp}`);
  if (now < nbf) throw new Error(`the token is not valid before ${nbf}`);
  return claims;
}

async function main(args: string[]): Promise<void> {
  if (args.length !== 2) {
    throw new Error("usage: verify-token.ts JWKS_FILE TOKEN");
  }
  const jwks = JSON.parse(readFileSync(args[0], "utf8"));
  const claims = await verifyToken(jwks, args[1]);
  // As JSON: maps as objects, bytes as hex.
  const printable = (v: unknown): unknown =>
    v instanceof Map
      ? Object.fromEntries([...v].map(([k, x]) => [String(k), printable(x)]))
      : v instanceof Uint8Array
        ? Buffer.from(v).toString("hex")
        : typeof v === "bigint"
          ? v.toString()
          : v;
  console.log(JSON.stringify(printable(claims)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(`refused: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
