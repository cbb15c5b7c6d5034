//! The fuzz target's seeds and whatever the fuzzer saved (its working
//! corpus and crash, timeout and OOM reproducers, when present on this
//! machine) replayed once each through the target's own checks
//! (`check_input` in `fuzz/src/lib.rs`, shared with
//! `fuzz/fuzz_targets/decode_verify.rs`): a crash once found stays fixed.
//! Runs in `cargo test --workspace` (CI), in well under a second.

#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_seeds_and_saved_inputs_pass_the_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = files(&root.join("seeds/decode_verify"));
    assert!(
        seeds.len() >= 5,
        "the committed seeds are missing: {}",
        root.display()
    );
    let saved = [
        files(&root.join("corpus/decode_verify")),
        files(&root.join("artifacts/decode_verify")),
    ]
    .concat();
    let fx = fuzz::Fixture::new();
    let mut accepted = 0;
    for path in seeds.iter().chain(&saved) {
        let data = std::fs::read(path).expect("a readable input");
        let result = std::panic::catch_unwind(|| {
            fuzz::check_input(&fx, &data);
            fuzz::check_token(&fx, &data).is_ok()
        });
        match result {
            Ok(ok) => accepted += usize::from(ok),
            Err(_) => panic!("{} breaks an invariant of the fuzz target", path.display()),
        }
    }
    // The seeds include well-formed tokens that verify: the replay reaches
    // the claims and the re-encoding check, not only the decoder's refusals.
    assert!(accepted > 0, "no seed was accepted");
}
