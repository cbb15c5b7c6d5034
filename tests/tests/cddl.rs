//! Tokens signed by `verifier::TokenSigner` conform to `schemas/license-token.cddl`,
//! checked with an independent CDDL validator (the Rust `cddl` crate).
//!
//! The validator checks the whole token against the first rule of the
//! document (`license-token`), including the `.cbor` controls that describe the
//! protected header and the payload inside their byte strings. The negative
//! tests below prove that those nested controls are really enforced (a bad
//! payload inside a token makes the whole token fail), so a pass here means
//! something. The header and the payload are *also* checked against their own
//! rules, so that a failure points at the part that is wrong.
//!
//! What CDDL cannot express, and so is checked here by other means: the key
//! order of the claims map (CDDL maps are unordered; see
//! `claims_keys_follow_the_schema_order`) and the deterministic encoding
//! (the verifier's own tests cover that).

use ciborium::value::{Integer, Value};
use coditect_tests::{
    DAY, FIXED_NOW, HOUR, dev_key_ring, dev_signer, read_repo_file, sample_claims,
};
use verifier::{Entitlements, HardwareId, LicenseClaims, MAX_TOKEN_LEN, ProjectLimit};

const SCHEMA_PATH: &str = "schemas/license-token.cddl";

fn schema() -> String {
    read_repo_file(SCHEMA_PATH)
}

/// The schema with `rule` as its root. The `cddl` crate validates against the
/// first rule of a document, so a rule of our own naming `rule` goes first.
fn schema_rooted_at(rule: &str) -> String {
    format!("coditect-test-root = {rule}\n\n{}", schema())
}

/// `Err` with the validator's reasons when `cbor` does not match. Anything
/// other than a validation failure (a schema that does not parse, CBOR that
/// is not well-formed) panics, so a negative test cannot pass by accident.
fn validate(cddl: &str, cbor: &[u8]) -> Result<(), String> {
    use cddl::validator::cbor::Error;
    match cddl::validate_cbor_from_slice(cddl, cbor, None) {
        Ok(()) => Ok(()),
        Err(Error::Validation(errors)) => {
            assert!(!errors.is_empty(), "validation failed without a reason");
            Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Err(other) => panic!("the CDDL validator could not run: {other}"),
    }
}

fn assert_valid(rule: &str, cbor: &[u8], what: &str) {
    let cddl = if rule == "license-token" {
        schema()
    } else {
        schema_rooted_at(rule)
    };
    if let Err(e) = validate(&cddl, cbor) {
        panic!(
            "{what} does not match `{rule}` of {SCHEMA_PATH}:\n{e}\nCBOR: {}",
            hex::encode(cbor)
        );
    }
}

fn assert_invalid(rule: &str, cbor: &[u8], what: &str) {
    let cddl = if rule == "license-token" {
        schema()
    } else {
        schema_rooted_at(rule)
    };
    match validate(&cddl, cbor) {
        Ok(()) => panic!(
            "{what} was accepted by `{rule}` of {SCHEMA_PATH}, but it must not be\nCBOR: {}",
            hex::encode(cbor)
        ),
        Err(reasons) => {
            if std::env::var_os("CDDL_TEST_VERBOSE").is_some() {
                eprintln!("{what} refused by `{rule}`: {reasons}");
            }
        }
    }
}

fn to_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("a ciborium Value always serialises");
    out
}

fn from_cbor(bytes: &[u8]) -> Value {
    ciborium::de::from_reader(bytes).expect("well-formed CBOR")
}

/// The four parts of a COSE_Sign1, taken apart with plain ciborium.
#[derive(Clone)]
struct Parts {
    tag: u64,
    protected: Vec<u8>,
    unprotected: Value,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl Parts {
    fn of(token: &[u8]) -> Parts {
        let Value::Tag(tag, inner) = from_cbor(token) else {
            panic!("token is not tagged");
        };
        let Value::Array(items) = *inner else {
            panic!("token is not an array");
        };
        let [protected, unprotected, payload, signature]: [Value; 4] =
            items.try_into().expect("COSE_Sign1 has four elements");
        let bytes = |v: Value| match v {
            Value::Bytes(b) => b,
            other => panic!("expected a byte string, got {other:?}"),
        };
        Parts {
            tag,
            protected: bytes(protected),
            unprotected,
            payload: bytes(payload),
            signature: bytes(signature),
        }
    }

    fn to_token(&self) -> Vec<u8> {
        to_cbor(&Value::Tag(
            self.tag,
            Box::new(Value::Array(vec![
                Value::Bytes(self.protected.clone()),
                self.unprotected.clone(),
                Value::Bytes(self.payload.clone()),
                Value::Bytes(self.signature.clone()),
            ])),
        ))
    }
}

fn int(k: i64) -> Value {
    Value::Integer(Integer::from(k))
}

fn map_entry_mut(map: &mut Value, key: i64) -> &mut Value {
    let Value::Map(entries) = map else {
        panic!("not a map: {map:?}");
    };
    entries
        .iter_mut()
        .find(|(k, _)| *k == int(key))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key} in the map"))
}

/// Realistic tokens and some at the edges of the profile, all signed with
/// the development key.
fn claim_sets() -> Vec<(&'static str, LicenseClaims)> {
    let limited = sample_claims(
        FIXED_NOW,
        "4c4c4544-0042-3510-8052-b4c04f4e4b31",
        ProjectLimit::Limited(5),
    );
    let unlimited = LicenseClaims {
        tier: "pilot-enterprise".to_owned(),
        entitlements: Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 250_000,
            max_devices: 25,
        },
        devices_used: 17,
        organization: "Großhandel Müller & Söhne KG".to_owned(),
        ..sample_claims(
            FIXED_NOW + 3 * HOUR,
            "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
            ProjectLimit::Unlimited,
        )
    };
    // A token renewed near the end of the license: exp capped at license expiry.
    let capped = LicenseClaims {
        expires_at: FIXED_NOW + 30 * HOUR,
        license_expires_at: FIXED_NOW + 30 * HOUR,
        renew_after: FIXED_NOW + 6 * HOUR,
        ..sample_claims(FIXED_NOW, "machine-c", ProjectLimit::Limited(1))
    };
    // The edges of the types in the CDDL: empty and 255-byte texts, zero and
    // u32::MAX counts, times at both ends of `uint .size 8`.
    let edges = LicenseClaims {
        issuer: String::new(),
        license_id: "L".repeat(255),
        expires_at: u64::MAX,
        not_before: 0,
        issued_at: 0,
        token_id: [0xff; 16],
        tier: "t".repeat(255),
        entitlements: Entitlements {
            max_projects: ProjectLimit::Limited(u32::MAX),
            ai_requests: 0,
            max_devices: u32::MAX,
        },
        hardware_id: HardwareId::from_bytes([0; 32]),
        license_expires_at: u64::MAX,
        renew_after: u64::MAX,
        organization: "o".repeat(255),
        email: String::new(),
        devices_used: u32::MAX,
    };
    let zero_projects = LicenseClaims {
        entitlements: Entitlements {
            max_projects: ProjectLimit::Limited(0),
            ai_requests: 1,
            max_devices: 1,
        },
        ..sample_claims(FIXED_NOW - 2 * DAY, "machine-e", ProjectLimit::Limited(0))
    };
    vec![
        ("limited projects", limited),
        ("unlimited projects", unlimited),
        ("exp capped at license expiry", capped),
        ("edge values", edges),
        ("zero projects", zero_projects),
    ]
}

fn signed_tokens() -> Vec<(&'static str, LicenseClaims, Vec<u8>)> {
    let signer = dev_signer();
    claim_sets()
        .into_iter()
        .map(|(name, claims)| {
            let token = signer
                .sign(&claims)
                .unwrap_or_else(|e| panic!("signing the {name} token: {e}"));
            assert!(token.len() <= MAX_TOKEN_LEN);
            (name, claims, token)
        })
        .collect()
}

#[test]
fn the_schema_parses() {
    let schema = schema();
    cddl::cddl_from_str(&schema, true).unwrap_or_else(|e| panic!("{SCHEMA_PATH}: {e}"));
}

#[test]
fn signed_tokens_match_the_schema() {
    let ring = dev_key_ring();
    for (name, claims, token) in signed_tokens() {
        // These are real tokens: the verifier accepts them and reads back the claims.
        let verified = verifier::authenticate(&token, &ring)
            .unwrap_or_else(|e| panic!("the {name} token does not authenticate: {e}"));
        assert_eq!(verified.claims, claims, "{name}");
        assert_eq!(verified.kid, "coditect-dev");

        // The whole token, with its `.cbor`-embedded header and claims.
        assert_valid("license-token", &token, name);

        // And each part against its own rule.
        let parts = Parts::of(&token);
        assert_eq!(parts.tag, 18, "{name}: COSE_Sign1 tag");
        assert_valid("protected-header", &parts.protected, name);
        assert_valid("empty-header", &to_cbor(&parts.unprotected), name);
        assert_valid("license-claims", &parts.payload, name);
        let mut payload = from_cbor(&parts.payload);
        let entitlements = to_cbor(map_entry_mut(&mut payload, -65538));
        assert_valid("entitlements", &entitlements, name);
        assert_eq!(
            parts.signature.len(),
            64,
            "{name}: Ed25519 signature length"
        );
    }
}

#[test]
fn cwt_tagged_token_matches_the_schema() {
    // `#6.61(#6.18(...))`: the CWT tag around the COSE tag is allowed.
    let (_, claims, token) = signed_tokens().swap_remove(0);
    let mut wrapped = vec![0xd8, 0x3d];
    wrapped.extend_from_slice(&token);
    assert_valid("license-token", &wrapped, "CWT-tagged token");
    let hw = claims.hardware_id;
    let got = verifier::verify(&wrapped, &dev_key_ring(), FIXED_NOW + HOUR, &hw)
        .expect("the verifier accepts the CWT tag around the COSE tag");
    assert_eq!(got, claims);
}

#[test]
fn unlimited_is_null_and_limited_is_a_count() {
    let signer = dev_signer();
    for (limit, expected) in [
        (ProjectLimit::Unlimited, Value::Null),
        (ProjectLimit::Limited(7), Value::Integer(7.into())),
    ] {
        let token = signer
            .sign(&sample_claims(FIXED_NOW, "m", limit))
            .expect("signs");
        let mut payload = from_cbor(&Parts::of(&token).payload);
        let entitlements = map_entry_mut(&mut payload, -65538);
        assert_eq!(*map_entry_mut(entitlements, 1), expected, "{limit:?}");
        assert_valid("license-token", &token, &format!("{limit:?}"));
    }
}

/// The claims keys of the `license-claims` rule, in the order the schema
/// lists them (read from the schema text: CDDL itself has no map order).
fn schema_claim_keys(rule: &str) -> Vec<i64> {
    let schema = schema();
    let start = schema
        .find(&format!("\n{rule} = {{"))
        .unwrap_or_else(|| panic!("rule {rule} not found in {SCHEMA_PATH}"));
    let body = &schema[start..];
    let end = body.find("\n}").expect("rule body ends with `}`");
    body[..end]
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (key, _) = line.trim().split_once("=>")?;
            Some(key.trim().parse::<i64>().expect("integer map key"))
        })
        .collect()
}

fn map_keys(map: &Value) -> Vec<i64> {
    let Value::Map(entries) = map else {
        panic!("not a map");
    };
    entries
        .iter()
        .map(|(k, _)| match k {
            Value::Integer(i) => i64::try_from(i128::from(*i)).expect("small key"),
            other => panic!("non-integer key {other:?}"),
        })
        .collect()
}

#[test]
fn claims_keys_follow_the_schema_order() {
    let claims_order = schema_claim_keys("license-claims");
    let entitlements_order = schema_claim_keys("entitlements");
    assert_eq!(claims_order.len(), 14, "{claims_order:?}");
    assert_eq!(entitlements_order, [1, 2, 3]);
    for (name, _, token) in signed_tokens() {
        let parts = Parts::of(&token);
        let mut payload = from_cbor(&parts.payload);
        assert_eq!(map_keys(&payload), claims_order, "{name}: claims key order");
        assert_eq!(
            map_keys(map_entry_mut(&mut payload, -65538)),
            entitlements_order,
            "{name}: entitlements key order"
        );
        assert_eq!(
            map_keys(&from_cbor(&parts.protected)),
            [1, 4],
            "{name}: protected header key order"
        );
    }
}

/// A claims set built by hand with ciborium, a wrong type in one claim: the
/// checker must refuse it, alone and inside a token.
#[test]
fn wrong_claim_types_fail_validation() {
    let (_, _, token) = signed_tokens().swap_remove(0);
    let good = Parts::of(&token);
    let good_payload = from_cbor(&good.payload);
    // The unmodified parts pass, so a failure below is due to the change alone.
    assert_valid("license-claims", &good.payload, "unmodified payload");
    assert_valid("license-token", &good.to_token(), "re-assembled token");

    let cases: Vec<(&str, i64, Value)> = vec![
        (
            "exp as text",
            4,
            Value::Text("2026-01-04T00:00:00Z".to_owned()),
        ),
        ("nbf negative", 5, Value::Integer((-1).into())),
        ("iat as float", 6, Value::Float(1_767_225_600.0)),
        (
            "iss as bytes",
            1,
            Value::Bytes(b"https://licenses.coditect.ai".to_vec()),
        ),
        ("sub of 256 bytes", 2, Value::Text("x".repeat(256))),
        ("cti of 15 bytes", 7, Value::Bytes(vec![1; 15])),
        (
            "hardware id as hex text",
            -65539,
            Value::Text("ab".repeat(32)),
        ),
        ("hardware id of 31 bytes", -65539, Value::Bytes(vec![7; 31])),
        (
            "devices used above u32",
            -65544,
            Value::Integer((1u64 << 32).into()),
        ),
        ("tier null", -65537, Value::Null),
        ("entitlements as array", -65538, Value::Array(vec![])),
    ];
    for (what, key, bad) in cases {
        let mut payload = good_payload.clone();
        *map_entry_mut(&mut payload, key) = bad;
        let payload = to_cbor(&payload);
        assert_invalid("license-claims", &payload, what);
        // Inside a token, the `.cbor` control must catch it too.
        let token = Parts {
            payload,
            ..good.clone()
        }
        .to_token();
        assert_invalid("license-token", &token, &format!("token with {what}"));
    }
}

#[test]
fn wrong_claims_shapes_fail_validation() {
    let (_, _, token) = signed_tokens().swap_remove(0);
    let good = Parts::of(&token);
    let Value::Map(entries) = from_cbor(&good.payload) else {
        panic!("claims are a map");
    };

    let mut missing = entries.clone();
    missing.retain(|(k, _)| *k != int(-65543));
    assert_invalid(
        "license-claims",
        &to_cbor(&Value::Map(missing)),
        "claims without email",
    );

    let mut extra = entries.clone();
    extra.push((int(-65600), Value::Text("surprise".to_owned())));
    assert_invalid(
        "license-claims",
        &to_cbor(&Value::Map(extra)),
        "claims with an unknown key",
    );

    let mut entitlements = Value::Map(entries.clone());
    *map_entry_mut(map_entry_mut(&mut entitlements, -65538), 1) =
        Value::Text("unlimited".to_owned());
    assert_invalid(
        "license-claims",
        &to_cbor(&entitlements),
        "max projects as text",
    );

    assert_invalid(
        "license-claims",
        &to_cbor(&Value::Array(vec![])),
        "claims as an array",
    );
}

#[test]
fn wrong_envelopes_fail_validation() {
    let (_, _, token) = signed_tokens().swap_remove(0);
    let good = Parts::of(&token);

    let header = |entries: Vec<(Value, Value)>| to_cbor(&Value::Map(entries));
    let kid = Value::Bytes(b"coditect-dev".to_vec());

    let cases: Vec<(&str, Parts)> = vec![
        (
            "alg ES256 (-7)",
            Parts {
                protected: header(vec![(int(1), int(-7)), (int(4), kid.clone())]),
                ..good.clone()
            },
        ),
        (
            "protected header without kid",
            Parts {
                protected: header(vec![(int(1), int(-8))]),
                ..good.clone()
            },
        ),
        (
            "empty kid",
            Parts {
                protected: header(vec![(int(1), int(-8)), (int(4), Value::Bytes(vec![]))]),
                ..good.clone()
            },
        ),
        (
            "content type in the protected header",
            Parts {
                protected: header(vec![
                    (int(1), int(-8)),
                    (int(4), kid.clone()),
                    (int(3), int(61)),
                ]),
                ..good.clone()
            },
        ),
        (
            "kid in the unprotected header",
            Parts {
                unprotected: Value::Map(vec![(int(4), kid.clone())]),
                ..good.clone()
            },
        ),
        (
            "signature of 63 bytes",
            Parts {
                signature: good.signature[..63].to_vec(),
                ..good.clone()
            },
        ),
        (
            "COSE_Mac0 tag 17",
            Parts {
                tag: 17,
                ..good.clone()
            },
        ),
    ];
    for (what, parts) in cases {
        assert_invalid("license-token", &parts.to_token(), what);
    }

    // Untagged, and detached payload (nil).
    let untagged = to_cbor(&Value::Array(vec![
        Value::Bytes(good.protected.clone()),
        Value::Map(vec![]),
        Value::Bytes(good.payload.clone()),
        Value::Bytes(good.signature.clone()),
    ]));
    assert_invalid("license-token", &untagged, "untagged COSE_Sign1");
    let detached = to_cbor(&Value::Tag(
        18,
        Box::new(Value::Array(vec![
            Value::Bytes(good.protected.clone()),
            Value::Map(vec![]),
            Value::Null,
            Value::Bytes(good.signature.clone()),
        ])),
    ));
    assert_invalid("license-token", &detached, "detached payload");
}

/// The schema and the signer draw the text-length line at the same place:
/// 255 bytes (not characters), inclusive.
#[test]
fn schema_and_signer_agree_on_text_lengths() {
    let signer = dev_signer();
    let base = sample_claims(FIXED_NOW, "machine-t", ProjectLimit::Limited(2));
    let good_payload = from_cbor(&Parts::of(&signer.sign(&base).expect("signs")).payload);
    let texts = [
        ("empty", String::new(), true),
        ("255 ASCII bytes", "a".repeat(255), true),
        ("256 ASCII bytes", "a".repeat(256), false),
        (
            "255 bytes of 2-byte characters",
            format!("{}a", "é".repeat(127)),
            true,
        ),
        (
            "128 two-byte characters (256 bytes)",
            "é".repeat(128),
            false,
        ),
    ];
    for (what, text, fits) in texts {
        let claims = LicenseClaims {
            email: text.clone(),
            ..base.clone()
        };
        let signed = signer.sign(&claims);
        assert_eq!(
            signed.is_ok(),
            fits,
            "signer on an email of {what}: {signed:?}"
        );

        let mut payload = good_payload.clone();
        *map_entry_mut(&mut payload, -65543) = Value::Text(text);
        let payload = to_cbor(&payload);
        if fits {
            assert_valid("license-claims", &payload, what);
            assert_eq!(signed.map(|t| Parts::of(&t).payload), Ok(payload));
        } else {
            assert_invalid("license-claims", &payload, what);
        }
    }
}
