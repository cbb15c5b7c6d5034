"""The CODITECT license-token profile (schemas/license-token.cddl), written
independently of the Rust verifier for the interoperability tests.

Shared by the scripts in this folder. Only the standard library and cbor2 are
imported here, so that a missing COSE package is reported by the script that
needs it.
"""

import json
import sys

import cbor2

# Sig_structure external_aad of every license token.
EXTERNAL_AAD = b"coditect-license-v1"

# COSE: tag of COSE_Sign1, header labels, EdDSA.
TAG_COSE_SIGN1 = 18
HDR_ALG = 1
HDR_KID = 4
ALG_EDDSA = -8

# The claims, in the order of the CDDL `license-claims` rule: (key, name, kind).
CLAIMS = [
    (1, "iss", "text"),
    (2, "sub", "text"),
    (4, "exp", "time"),
    (5, "nbf", "time"),
    (6, "iat", "time"),
    (7, "cti", "bytes16"),
    (-65537, "tier", "text"),
    (-65538, "entitlements", "entitlements"),
    (-65539, "hardware_id", "bytes32"),
    (-65540, "license_exp", "time"),
    (-65541, "renew_after", "time"),
    (-65542, "organization", "text"),
    (-65543, "email", "text"),
    (-65544, "devices_used", "count"),
]
CLAIM_KEYS = [key for key, _, _ in CLAIMS]

# The entitlements map, in CDDL order. max_projects may be null (unlimited).
ENTITLEMENTS = [
    (1, "max_projects"),
    (2, "ai_requests"),
    (3, "max_devices"),
]
ENTITLEMENT_KEYS = [key for key, _ in ENTITLEMENTS]

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


class ProfileError(Exception):
    """The data does not follow the license-token profile."""


def fail(message):
    """Prints a message for the Rust test and exits non-zero."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def protected_header_bytes(kid):
    """The one encoding of {1: -8, 4: kid}: a2 01 27 04 <bstr kid>."""
    if not 1 <= len(kid) <= 23:
        # Longer kids need a longer length prefix; the dev kid is short.
        raise ProfileError("this helper only encodes kids of 1..23 bytes")
    return bytes([0xA2, 0x01, 0x27, 0x04, 0x40 + len(kid)]) + kid


def _check(condition, message):
    if not condition:
        raise ProfileError(message)


def _check_value(name, kind, value):
    if kind == "text":
        _check(isinstance(value, str), f"{name} must be text")
        _check(len(value.encode("utf-8")) <= 255, f"{name} longer than 255 bytes")
    elif kind == "time":
        _check(type(value) is int and 0 <= value <= U64_MAX, f"{name} must be a uint")
    elif kind == "count":
        _check(type(value) is int and 0 <= value <= U32_MAX, f"{name} must be a u32")
    elif kind == "bytes16":
        _check(isinstance(value, bytes) and len(value) == 16, f"{name} must be 16 bytes")
    elif kind == "bytes32":
        _check(isinstance(value, bytes) and len(value) == 32, f"{name} must be 32 bytes")
    elif kind == "entitlements":
        _check(isinstance(value, dict), "entitlements must be a map")
        _check(list(value.keys()) == ENTITLEMENT_KEYS, "entitlements keys not in CDDL order")
        for key, ent_name in ENTITLEMENTS:
            v = value[key]
            if key == 1 and v is None:
                continue
            _check(type(v) is int and 0 <= v <= U32_MAX, f"{ent_name} must be a u32")
    else:
        raise AssertionError(kind)


def claims_map_to_json(claims):
    """Checks a decoded claims map against the profile (key order included)
    and returns it with claim names, bytes as lowercase hex."""
    _check(isinstance(claims, dict), "claims must be a map")
    _check(list(claims.keys()) == CLAIM_KEYS, f"claims keys not in CDDL order: {list(claims.keys())}")
    out = {}
    for key, name, kind in CLAIMS:
        value = claims[key]
        _check_value(name, kind, value)
        if kind == "entitlements":
            out[name] = {ent_name: value[ent_key] for ent_key, ent_name in ENTITLEMENTS}
        elif isinstance(value, bytes):
            out[name] = value.hex()
        else:
            out[name] = value
    return out


def claims_json_to_map(claims):
    """The claims map, keys in CDDL order, from the JSON form of
    claims_map_to_json (bytes as hex, max_projects null for unlimited)."""
    out = {}
    for key, name, kind in CLAIMS:
        value = claims[name]
        if kind == "entitlements":
            value = {ent_key: value[ent_name] for ent_key, ent_name in ENTITLEMENTS}
        elif kind in ("bytes16", "bytes32"):
            value = bytes.fromhex(value)
        _check_value(name, kind, value)
        out[key] = value
    return out


def check_structure(token, kid):
    """The envelope, read with plain cbor2: tag 18, [bstr, {}, bstr, bstr(64)],
    protected header exactly {1: -8, 4: kid} in its one encoding."""
    outer = cbor2.loads(token)
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != TAG_COSE_SIGN1:
        raise ProfileError("not a COSE_Sign1 (tag 18)")
    parts = outer.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise ProfileError("COSE_Sign1 must have four elements")
    protected, unprotected, payload, signature = parts
    if protected != protected_header_bytes(kid):
        raise ProfileError(f"protected header is {protected.hex()}")
    if unprotected != {}:
        raise ProfileError(f"unprotected header must be empty, is {unprotected!r}")
    if not isinstance(payload, bytes):
        raise ProfileError("payload must be attached")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise ProfileError("signature must be 64 bytes")
    if cbor2.dumps(outer) != token:
        raise ProfileError("token is not in its deterministic encoding")
    if cbor2.dumps(cbor2.loads(payload)) != payload:
        raise ProfileError("claims are not in their deterministic encoding")
    return payload


def tampered(token):
    """The same token with one claim changed (devices_used + 1) and the
    original signature: no verifier may accept it."""
    outer = cbor2.loads(token)
    protected, unprotected, payload, signature = outer.value
    claims = cbor2.loads(payload)
    claims[-65544] = claims[-65544] + 1
    return cbor2.dumps(
        cbor2.CBORTag(TAG_COSE_SIGN1, [protected, unprotected, cbor2.dumps(claims), signature])
    )
