//! Password hashing: Argon2id, m = 19 MiB, t = 2, p = 1 (OWASP's minimum),
//! as PHC strings.
//!
//! Hashes run on a few dedicated threads (one per spare core) that keep
//! their 19 MiB of working memory between hashes and run at the lowest
//! scheduling priority: logins are slow on purpose, and must not take the
//! cores, nor gigabytes of fragmented heap, from the license renewals that
//! share the machine.

use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// Argon2id parameters, documented in the README.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

fn params() -> Params {
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).unwrap_or_default()
}

/// Working memory of one hashing thread.
pub struct Memory(Vec<Block>);

impl Memory {
    pub fn new() -> Self {
        Memory(vec![Block::default(); params().block_count()])
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash_with(memory: &mut Memory, password: &str) -> Result<String, String> {
    let params = params();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut *out, &mut memory.0)
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&*out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`. A malformed or
/// foreign hash never matches.
pub fn verify_with(memory: &mut Memory, stored: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    if hash.algorithm != ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let computed = if params.block_count() <= memory.0.len() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory.0)
    } else {
        argon.hash_password_into(password.as_bytes(), salt, &mut out)
    };
    // Output's equality is constant-time.
    computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

enum Job {
    Hash {
        password: Zeroizing<String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Verify {
        stored: Option<String>,
        password: Zeroizing<String>,
        reply: oneshot::Sender<bool>,
    },
}

struct Pool {
    jobs: mpsc::Sender<Job>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        for i in 0..cores.saturating_sub(1).max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Pool { jobs: tx }
    })
}

/// Hashing runs on what renewals leave over: SCHED_IDLE on Linux (any
/// runnable normal thread preempts it at once), the lowest priority
/// elsewhere. Failing to lower it is not an error.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if idle.is_ok() {
            return;
        }
    }
    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    let mut memory = Memory::new();
    // A dummy hash for unknown users, so that they cost one Argon2 run too.
    let dummy = hash_with(&mut memory, "no such user").unwrap_or_default();
    loop {
        let job = match rx.lock() {
            Ok(mut guard) => guard.blocking_recv(),
            Err(_) => return,
        };
        match job {
            None => return,
            Some(Job::Hash { password, reply }) => {
                let _ = reply.send(hash_with(&mut memory, &password));
            }
            Some(Job::Verify {
                stored,
                password,
                reply,
            }) => {
                let ok = verify_with(&mut memory, stored.as_deref().unwrap_or(&dummy), &password);
                let _ = reply.send(ok && stored.is_some());
            }
        }
    }
}

/// Hashes a password on the hashing threads.
pub async fn hash(password: Zeroizing<String>) -> Result<String, String> {
    let (reply, answer) = oneshot::channel();
    pool()
        .jobs
        .send(Job::Hash { password, reply })
        .await
        .map_err(|_| "password hashing is not available".to_owned())?;
    answer
        .await
        .map_err(|_| "password hashing failed".to_owned())?
}

/// Checks a password on the hashing threads. With no stored hash (unknown
/// user) a dummy hash is checked, so both cases cost the same; the answer
/// is then always no.
pub async fn verify(stored: Option<String>, password: Zeroizing<String>) -> bool {
    let (reply, answer) = oneshot::channel();
    let sent = pool()
        .jobs
        .send(Job::Verify {
            stored,
            password,
            reply,
        })
        .await;
    sent.is_ok() && answer.await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let mut m = Memory::new();
        let h = hash_with(&mut m, "correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_with(&mut m, &h, "correct horse battery"));
        assert!(!verify_with(&mut m, &h, "wrong"));
        assert!(!verify_with(&mut m, "not a hash", "x"));
        assert_ne!(h, hash_with(&mut m, "correct horse battery").unwrap());
        // Hashes made by the argon2 crate's own API verify too.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let other = Argon2::default()
            .hash_password(b"pw-from-elsewhere", &salt)
            .unwrap()
            .to_string();
        assert!(verify_with(&mut m, &other, "pw-from-elsewhere"));
    }

    #[tokio::test]
    async fn the_pool_hashes_and_refuses_unknown_users() {
        let h = hash(Zeroizing::new("pool password!".into())).await.unwrap();
        assert!(verify(Some(h.clone()), Zeroizing::new("pool password!".into())).await);
        assert!(!verify(Some(h), Zeroizing::new("nope".into())).await);
        assert!(!verify(None, Zeroizing::new("no such user".into())).await);
    }
}
