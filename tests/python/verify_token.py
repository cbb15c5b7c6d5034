"""Verifying a CODITECT license token in Python, from the issuer's JWK Set
alone (GET /api/v1/keys), with python-cwt.

The token profile (docs/ARCHITECTURE.md, "The license token"): a COSE_Sign1
(CBOR tag 18) signed with Ed25519, protected header exactly {1: -8 (EdDSA),
4: kid}, external_aad b"coditect-license-v1", over a CWT claims set.

usage: python3 verify_token.py JWKS_FILE TOKEN
    TOKEN is the `token.token` of an activate/validate answer (base64url).
    Prints the claims as JSON and exits 0, or says why and exits 1.

(tests/python/verify_rust_token.py checks the whole profile with pycose and
cwt; this is the short version an integrator needs.)
"""

import base64
import json
import sys
import time

import cbor2
import cwt
from cwt import COSE, COSEKey

EXTERNAL_AAD = b"coditect-license-v1"


def verify_token(jwks, token, now=None):
    """The claims of `token` (base64url) if a key of `jwks` signed it and it
    is valid `now`; raises otherwise."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    keys = [COSEKey.from_jwk(jwk) for jwk in jwks["keys"] if jwk.get("crv") == "Ed25519"]
    # cwt picks the key whose kid is the token's, checks alg, the signature
    # and the external_aad.
    protected, _, payload = COSE.new().decode_with_headers(raw, keys, external_aad=EXTERNAL_AAD)
    if protected.get(1) != -8:
        raise ValueError(f"not an EdDSA token: {protected!r}")
    claims = cbor2.loads(payload)
    now = time.time() if now is None else now
    if not now < claims[4]:
        raise ValueError(f"the token expired at {claims[4]}")
    if now < claims[5]:
        raise ValueError(f"the token is not valid before {claims[5]}")
    return claims


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    with open(argv[1], encoding="utf-8") as f:
        jwks = json.load(f)
    try:
        claims = verify_token(jwks, argv[2])
    except (cwt.CWTError, ValueError, KeyError) as e:
        sys.exit(f"refused: {type(e).__name__}: {e}")
    printable = {str(k): v.hex() if isinstance(v, bytes) else v for k, v in claims.items()}
    print(json.dumps(printable))


if __name__ == "__main__":
    main(sys.argv)
