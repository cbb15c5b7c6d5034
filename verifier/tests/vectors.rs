//! Public Ed25519 and COSE test vectors (see `vectors/README.md` for sources
//! and what each file must give).

use serde_json::Value;
use verifier::{VerifyError, verify_cose_sign1, verify_ed25519};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex_field(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .unwrap()
}

#[test]
fn cose_wg_eddsa_sign1_example_verifies_with_the_low_level_check() {
    let v = load("cose-wg-eddsa-sig-01.json");
    let token = hex::decode(v["output"]["cbor"].as_str().unwrap()).unwrap();
    let key: [u8; 32] = hex::decode(v["input"]["sign0"]["key"]["x_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let payload = verify_cose_sign1(&token, &key, b"").expect("the cose-wg example verifies");
    assert_eq!(
        payload,
        v["input"]["plaintext"].as_str().unwrap().as_bytes()
    );

    // The same bytes under another external_aad, or with one bit of the
    // signature changed, do not.
    assert_eq!(
        verify_cose_sign1(&token, &key, b"coditect-license-v1"),
        Err(VerifyError::BadSignature)
    );
    let mut flipped = token.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        verify_cose_sign1(&flipped, &key, b""),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn cose_wg_example_is_refused_by_the_license_profile() {
    // Its kid sits in the unprotected header, which license tokens may not use.
    let v = load("cose-wg-eddsa-sig-01.json");
    let token = hex::decode(v["output"]["cbor"].as_str().unwrap()).unwrap();
    let key: [u8; 32] = hex::decode(v["input"]["sign0"]["key"]["x_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let ring = verifier::KeyRing::new().with_key("11", &key).unwrap();
    let hw = verifier::HardwareId::from_machine_id("m");
    assert_eq!(
        verifier::verify(&token, &ring, 0, &hw),
        Err(VerifyError::Malformed(
            verifier::Malformed::UnprotectedHeader
        ))
    );
}

#[test]
fn wycheproof_ed25519_cases_give_their_expected_result() {
    let v = load("wycheproof-ed25519_test.json");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for group in v["testGroups"].as_array().unwrap() {
        let pk = hex_field(&group["publicKey"], "pk");
        for case in group["tests"].as_array().unwrap() {
            let msg = hex_field(case, "msg");
            let sig = hex_field(case, "sig");
            let accepted = verify_ed25519(&pk, &msg, &sig).is_ok();
            let expected = match case["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                other => panic!("tcId {}: unexpected result {other}", case["tcId"]),
            };
            if accepted != expected {
                wrong.push(case["tcId"].as_u64().unwrap());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, v["numberOfTests"].as_u64().unwrap());
    assert!(wrong.is_empty(), "cases with the wrong result: {wrong:?}");
}

#[test]
fn cctv_edge_cases_accept_exactly_the_43_strict_ones() {
    let v = load("cctv-ed25519vectors.json");
    let cases = v.as_array().unwrap();
    assert_eq!(cases.len(), 914);
    let mut accepted = 0;
    let mut wrong = Vec::new();
    for case in cases {
        let flags: Vec<&str> = case["flags"]
            .as_array()
            .map(|f| f.iter().map(|x| x.as_str().unwrap()).collect())
            .unwrap_or_default();
        let should_accept = flags.iter().all(|f| f.starts_with("low_order_component"));
        let msg = case["msg"].as_str().unwrap().as_bytes();
        let ok = verify_ed25519(&hex_field(case, "key"), msg, &hex_field(case, "sig")).is_ok();
        if ok {
            accepted += 1;
        }
        if ok != should_accept {
            wrong.push(case["number"].as_u64().unwrap());
        }
    }
    assert!(wrong.is_empty(), "cases with the wrong result: {wrong:?}");
    assert_eq!(accepted, 43);
}
