//! Writes the seed corpus of the `decode_verify` fuzz target.
//!
//! ```text
//! cd fuzz
//! cargo run --example gen_seeds                 # -> seeds/decode_verify and corpus/decode_verify
//! cargo run --example gen_seeds -- DIR [DIR...] # -> the given directories
//! ```
//!
//! Each seed is a raw binary file: signed tokens (tag 18, and one inside CWT
//! tag 61), a token signed by a key the fuzz ring lacks, and bare claims sets
//! (which the target also signs itself to reach the claims decoder). The
//! output is deterministic: Ed25519 signatures are, and so is the fixture.

use std::path::PathBuf;

use coditect_verifier_fuzz::{CWT_TAG_HEAD, Fixture, NOW, expected_check, payload_of, seed_claims};
use verifier::TokenSigner;
use verifier::ed25519_dalek::SigningKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fx = Fixture::new();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, claims) in seed_claims() {
        let token = fx.signer.sign(&claims)?;
        let auth = verifier::authenticate(&token, &fx.ring)?;
        assert_eq!(auth.claims, claims, "{name}: round trip");
        assert_eq!(
            verifier::verify(&token, &fx.ring, NOW, &fx.hardware_id).map(|_| ()),
            expected_check(&claims, NOW, &fx.hardware_id),
            "{name}: verify at NOW"
        );
        let payload = payload_of(&token).ok_or("seed token has no payload")?;
        assert_eq!(fx.sign_payload(&payload), token, "{name}: fixture encoder");
        if name == "typical" {
            let mut cwt = CWT_TAG_HEAD.to_vec();
            cwt.extend_from_slice(&token);
            verifier::verify(&cwt, &fx.ring, NOW, &fx.hardware_id)?;
            seeds.push(("typical_cwt61".to_owned(), cwt));

            let stranger = TokenSigner::new("other-key", SigningKey::from_bytes(&[0x42; 32]))?;
            seeds.push(("unknown_kid".to_owned(), stranger.sign(&claims)?));
        }
        if matches!(name, "typical" | "limited" | "extreme") {
            seeds.push((format!("{name}_claims"), payload));
        }
        seeds.push((name.to_owned(), token));
    }

    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs: Vec<PathBuf> = match std::env::args_os().skip(1).collect::<Vec<_>>() {
        args if args.is_empty() => vec![
            manifest.join("seeds/decode_verify"),
            manifest.join("corpus/decode_verify"),
        ],
        args => args.into_iter().map(PathBuf::from).collect(),
    };
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("{name}.cbor")), bytes)?;
        }
        println!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
    Ok(())
}
