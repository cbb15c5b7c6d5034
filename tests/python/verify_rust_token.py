"""Verifies a license token made by the Rust signer with two independent
Python COSE implementations, pycose and cwt, using the public key only.

usage: verify_rust_token.py TOKEN_FILE JWKS_FILE PUBLIC_PEM_FILE OUT_JSON

TOKEN_FILE holds the token's raw CBOR bytes. Each library checks the
Ed25519 signature with external_aad = b"coditect-license-v1"; cwt also checks
exp/nbf against the real clock. Each library must refuse the same token with
a wrong external_aad and with a changed payload. The claims each library read
are written to OUT_JSON (bytes as hex) for the Rust test to compare:

    {"pycose": {...claims...}, "cwt": {...claims...}, "versions": {...}}

Exits non-zero, with the reason on stderr, on any failure.
"""

import base64
import sys
from importlib.metadata import version

import cbor2
import cwt
from cwt import COSE, COSEKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from coditect_profile import (
    ALG_EDDSA,
    CLAIMS,
    EXTERNAL_AAD,
    HDR_ALG,
    HDR_KID,
    ProfileError,
    check_structure,
    claims_map_to_json,
    fail,
    read_json,
    tampered,
    write_json,
)


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_pycose(token, public_keys, kid):
    for name, key in public_keys:
        msg = Sign1Message.decode(token)
        if msg.phdr != {Algorithm: EdDSA, KID: kid}:
            raise ProfileError(f"pycose read the protected header as {msg.phdr!r}")
        if msg.uhdr:
            raise ProfileError(f"pycose read a non-empty unprotected header {msg.uhdr!r}")
        msg.key = key
        msg.external_aad = EXTERNAL_AAD
        if not msg.verify_signature():
            raise ProfileError(f"pycose: signature does not verify with the {name} key")

        # Negative controls: a wrong external_aad and a changed payload fail.
        for what, data, aad in [
            ("empty external_aad", token, b""),
            ("other external_aad", token, b"coditect-license-v2"),
            ("changed claim", tampered(token), EXTERNAL_AAD),
        ]:
            bad = Sign1Message.decode(data)
            bad.key = key
            bad.external_aad = aad
            try:
                ok = bad.verify_signature()
            except Exception:  # noqa: BLE001 - any refusal is a refusal
                ok = False
            if ok:
                raise ProfileError(f"pycose accepted the token with {what}")
    return claims_map_to_json(cbor2.loads(msg.payload))


def with_cwt(token, public_keys, kid):
    claims_json = None
    for name, key in public_keys:
        protected, unprotected, payload = COSE.new().decode_with_headers(
            token, key, external_aad=EXTERNAL_AAD
        )
        if protected != {HDR_ALG: ALG_EDDSA, HDR_KID: kid}:
            raise ProfileError(f"cwt read the protected header as {protected!r}")
        if unprotected != {}:
            raise ProfileError(f"cwt read a non-empty unprotected header {unprotected!r}")
        claims_map = cbor2.loads(payload)

        # cwt.decode() has no external_aad parameter, so the COSE layer is
        # verified above with COSE.decode_with_headers(..., external_aad=...)
        # and cwt's own CWT claim checks are applied to the verified claims:
        # registered claim types (Claims.validate) and exp/nbf against the
        # real clock (CWT._verify, the check cwt.decode runs).
        cwt.Claims.validate(claims_map)
        cwt.CWT.new()._verify(claims_map, protected)
        names = {n: k for k, n, _ in CLAIMS if k < -65536}
        claims = cwt.Claims.new(claims_map, private_claim_names=names)

        # Read back through cwt's accessors. (Claims.cti decodes the id as
        # UTF-8 text, which random bytes are not: read it with get(7).)
        read = dict(claims.to_dict())
        read[1] = claims.iss
        read[2] = claims.sub
        read[4] = claims.exp
        read[5] = claims.nbf
        read[6] = claims.iat
        read[7] = claims.get(7)
        for k, n, _ in CLAIMS:
            if k < -65536:
                read[k] = claims.get(n)
        ordered = {k: read[k] for k in claims_map}
        claims_json = claims_map_to_json(ordered)

        for what, data, aad in [
            ("empty external_aad", token, b""),
            ("other external_aad", token, b"coditect-license-v2"),
            ("changed claim", tampered(token), EXTERNAL_AAD),
        ]:
            try:
                COSE.new().decode(data, key, external_aad=aad)
            except cwt.VerifyError:
                continue
            raise ProfileError(f"cwt accepted the token with {what} ({name} key)")
    return claims_json


def main(argv):
    if len(argv) != 5:
        fail(__doc__)
    _, token_path, jwks_path, pem_path, out_path = argv
    with open(token_path, "rb") as f:
        token = f.read()
    jwks = read_json(jwks_path)
    with open(pem_path, "r", encoding="ascii") as f:
        public_pem = f.read()

    if len(jwks.get("keys", [])) != 1:
        fail("expected exactly one key in the JWK Set")
    jwk = jwks["keys"][0]
    if (jwk.get("kty"), jwk.get("crv"), jwk.get("alg")) != ("OKP", "Ed25519", "EdDSA"):
        fail(f"unexpected JWK {jwk!r}")
    if "d" in jwk:
        fail("the JWK Set must hold public keys only")
    kid = jwk["kid"].encode("ascii")
    x = b64url_decode(jwk["x"])

    try:
        payload = check_structure(token, kid)

        # pycose: the OKP key from the JWK's x, and from the public PEM.
        pycose_keys = [
            ("JWK", OKPKey(crv=Ed25519, x=x)),
            ("PEM", CoseKey.from_pem_public_key(public_pem)),
        ]
        if pycose_keys[1][1].x != x:
            raise ProfileError("the public PEM and the JWK Set hold different keys")
        if any(key.d for _, key in pycose_keys):
            raise ProfileError("a public key object holds a private part")

        # cwt: the COSE key from the JWK itself, and from the public PEM.
        cwt_keys = [
            ("JWK", COSEKey.from_jwk(jwk)),
            ("PEM", COSEKey.from_pem(public_pem, kid=kid)),
        ]

        result = {
            "pycose": with_pycose(token, pycose_keys, kid),
            "cwt": with_cwt(token, cwt_keys, kid),
            "payload_hex": payload.hex(),
            "versions": {dist: version(dist) for dist in ("pycose", "cwt", "cbor2")},
        }
    except (ProfileError, ValueError, KeyError, TypeError, cwt.CWTError) as e:
        fail(f"{type(e).__name__}: {e}")
    write_json(out_path, result)


if __name__ == "__main__":
    main(sys.argv)
