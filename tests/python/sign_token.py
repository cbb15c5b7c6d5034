"""Signs a license token in Python (pycose + cbor2) with the development
private key, following the profile exactly, for the Rust verifier to check.

usage: sign_token.py PRIVATE_PEM_FILE KID CLAIMS_JSON OUT_TOKEN_FILE

CLAIMS_JSON holds the claims by name (bytes as lowercase hex, max_projects
null for unlimited), as written by tests/tests/interop_python.rs. The claims
map is built in the key order of the CDDL and encoded deterministically with
cbor2; the protected header is {1: -8, 4: kid}, the unprotected header empty,
the message tagged 18, and external_aad = b"coditect-license-v1".

Writes the token's raw CBOR bytes to OUT_TOKEN_FILE. Exits non-zero, with the
reason on stderr, on any failure.
"""

import sys

import cbor2
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, OKPKey
from pycose.messages import Sign1Message

from coditect_profile import (
    CLAIM_KEYS,
    EXTERNAL_AAD,
    ProfileError,
    check_structure,
    claims_json_to_map,
    fail,
    read_json,
)


def main(argv):
    if len(argv) != 5:
        fail(__doc__)
    _, pem_path, kid_text, claims_path, out_path = argv
    kid = kid_text.encode("ascii")
    with open(pem_path, "r", encoding="ascii") as f:
        private_pem = f.read()

    try:
        key = CoseKey.from_pem_private_key(private_pem)
        if not isinstance(key, OKPKey) or not key.d:
            raise ProfileError("the private key is not an Ed25519 private key")

        claims = claims_json_to_map(read_json(claims_path))
        if list(claims.keys()) != CLAIM_KEYS:
            raise ProfileError("claims not built in CDDL order")
        # cbor2 keeps the insertion (CDDL) order and writes shortest integers
        # and definite lengths. For these keys the CDDL order is also the
        # bytewise order of the encoded keys, so canonical encoding agrees.
        payload = cbor2.dumps(claims)
        if payload != cbor2.dumps(claims, canonical=True):
            raise ProfileError("CDDL key order differs from the deterministic order")

        msg = Sign1Message(
            phdr={Algorithm: EdDSA, KID: kid},
            uhdr={},
            payload=payload,
            external_aad=EXTERNAL_AAD,
        )
        msg.key = key
        token = msg.encode(tag=True)

        # The result must be exactly the profile, and verify with the public
        # half alone.
        if check_structure(token, kid) != payload:
            raise ProfileError("payload changed on the way into the token")
        check = Sign1Message.decode(token)
        check.key = OKPKey(crv=key.crv, x=key.x)
        check.external_aad = EXTERNAL_AAD
        if not check.verify_signature():
            raise ProfileError("pycose cannot verify its own token")
    except (ProfileError, ValueError, KeyError, TypeError) as e:
        fail(f"{type(e).__name__}: {e}")

    with open(out_path, "wb") as f:
        f.write(token)


if __name__ == "__main__":
    main(sys.argv)
