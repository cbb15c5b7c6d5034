//! Conformance checks of [`Identities`](crate::store::Identities): a
//! started provider sign-in is taken once and not after it expires;
//! identities are tied to one user, one per provider; a provider signup
//! makes a verified account tied to its identity, and refuses a taken
//! email or identity.

use super::NOW;
use crate::domain::account::AccountError;
use crate::domain::provider::{CliCode, DeviceCode, DevicePoll, ProviderLogin};
use crate::store::SharedStore;

fn login(n: u8, expires_at: i64) -> ProviderLogin {
    ProviderLogin {
        state_hash: format!("{n:02x}").repeat(32),
        provider: "google".into(),
        nonce: format!("nonce-{n}"),
        pkce_verifier: format!("verifier-{n}"),
        link_user_id: None,
        then_go: Some("checkout:pilot-starter:month".into()),
        created_at: NOW,
        expires_at,
    }
}

pub async fn provider_logins_are_taken_once_and_expire(store: SharedStore) {
    let a = login(1, NOW + 600);
    store.begin_provider_login(&a, NOW).await.unwrap();
    let b = login(2, NOW + 10);
    store.begin_provider_login(&b, NOW).await.unwrap();
    let taken = store.take_provider_login(&a.state_hash, NOW + 1).await;
    assert_eq!(taken.unwrap(), Some(a.clone()));
    assert_eq!(
        store
            .take_provider_login(&a.state_hash, NOW + 1)
            .await
            .unwrap(),
        None,
        "a state works once"
    );
    assert_eq!(
        store
            .take_provider_login(&b.state_hash, NOW + 10)
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store
            .take_provider_login(&"ff".repeat(32), NOW)
            .await
            .unwrap(),
        None
    );
    // A signed-in user's link request keeps who asked.
    let user = store
        .signup("owner@example.com", "hash", "Acme", None, NOW)
        .await
        .unwrap();
    let mut c = login(3, NOW + 600);
    c.link_user_id = Some(user.id.clone());
    c.then_go = None;
    store.begin_provider_login(&c, NOW).await.unwrap();
    assert_eq!(
        store.take_provider_login(&c.state_hash, NOW).await.unwrap(),
        Some(c)
    );
}

pub async fn identities_are_tied_to_one_user_one_per_provider(store: SharedStore) {
    let ann = store
        .signup("ann@example.com", "hash", "Acme", None, NOW)
        .await
        .unwrap();
    let bob = store
        .signup("bob@example.com", "hash", "Bobs", None, NOW)
        .await
        .unwrap();
    assert_eq!(store.identity_user("github", "42").await.unwrap(), None);
    assert_eq!(
        store.user_by_email("ANN@example.com").await.unwrap(),
        Some(ann.clone())
    );
    assert_eq!(
        store.user_by_email("nobody@example.com").await.unwrap(),
        None
    );
    assert!(
        store
            .link_identity(&ann.id, "github", "42", "ann@example.com", NOW)
            .await
            .unwrap()
    );
    assert_eq!(
        store.identity_user("github", "42").await.unwrap(),
        Some(ann.clone())
    );
    assert_eq!(store.identity_user("google", "42").await.unwrap(), None);
    // Tied already: to Bob it is refused, and stays Ann's.
    assert!(
        !store
            .link_identity(&bob.id, "github", "42", "bob@example.com", NOW)
            .await
            .unwrap()
    );
    // Ann has a GitHub identity already.
    assert!(
        !store
            .link_identity(&ann.id, "github", "43", "ann@example.com", NOW)
            .await
            .unwrap()
    );
    assert_eq!(
        store.identity_user("github", "42").await.unwrap(),
        Some(ann.clone())
    );
    assert!(
        store
            .link_identity(&ann.id, "google", "g-1", "ann@example.com", NOW)
            .await
            .unwrap()
    );
}

pub async fn a_provider_signup_is_verified_and_tied_to_its_identity(store: SharedStore) {
    let user = store
        .provider_signup(
            "new@example.com",
            "new@example.com",
            Some(10),
            "google",
            "g-7",
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(user.email, "new@example.com");
    assert_eq!(user.role, "owner");
    assert_eq!(
        store.identity_user("google", "g-7").await.unwrap(),
        Some(user.clone())
    );
    // Verified: the housekeeping of unverified accounts leaves it.
    assert_eq!(
        store
            .delete_unverified_accounts(NOW + 1_000_000, None)
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        store
            .provider_signup("NEW@example.com", "x", None, "github", "9", NOW)
            .await,
        Err(AccountError::EmailTaken)
    ));
    // An identity tied already: refused, and no account is left behind.
    assert!(matches!(
        store
            .provider_signup("other@example.com", "x", None, "google", "g-7", NOW)
            .await,
        Err(AccountError::EmailTaken)
    ));
    assert_eq!(
        store.user_by_email("other@example.com").await.unwrap(),
        None
    );
    // No password signs in to it.
    let (_, found) = store
        .sign_in_lookup("new@example.com", "client", NOW)
        .await
        .unwrap();
    assert!(found.is_some());
}

pub async fn cli_codes_are_taken_once_with_their_user_and_expire(store: SharedStore) {
    let user = store
        .signup("cli@example.com", "hash", "Acme", None, NOW)
        .await
        .unwrap();
    let code = |n: u8, expires_at: i64| CliCode {
        code_hash: format!("{n:02x}").repeat(32),
        user_id: user.id.clone(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        redirect_uri: "http://127.0.0.1:5555/callback".into(),
        created_at: NOW,
        expires_at,
    };
    let a = code(1, NOW + 120);
    let b = code(2, NOW + 5);
    store.issue_cli_code(&a, NOW).await.unwrap();
    store.issue_cli_code(&b, NOW).await.unwrap();
    assert_eq!(
        store.take_cli_code(&a.code_hash, NOW + 1).await.unwrap(),
        Some((a.clone(), user.clone()))
    );
    assert_eq!(
        store.take_cli_code(&a.code_hash, NOW + 1).await.unwrap(),
        None
    );
    assert_eq!(
        store.take_cli_code(&b.code_hash, NOW + 5).await.unwrap(),
        None
    );
    assert_eq!(
        store.take_cli_code(&"ee".repeat(32), NOW).await.unwrap(),
        None
    );
}

pub async fn device_codes_wait_for_approval_are_polled_slowly_and_used_once(store: SharedStore) {
    let user = store
        .signup("device@example.com", "hash", "Acme", None, NOW)
        .await
        .unwrap();
    let code = DeviceCode {
        device_code_hash: "d1".repeat(32),
        user_code: "BCDF-GHJK".into(),
        interval_seconds: 5,
        created_at: NOW,
        expires_at: NOW + 600,
    };
    store.begin_device(&code, NOW).await.unwrap();
    let poll = |at: i64| {
        let store = store.clone();
        let hash = code.device_code_hash.clone();
        async move { store.poll_device(&hash, at).await.unwrap() }
    };
    assert_eq!(poll(NOW).await, DevicePoll::Pending);
    assert_eq!(poll(NOW + 2).await, DevicePoll::SlowDown);
    // The slow poll counts: the interval runs from it.
    assert_eq!(poll(NOW + 6).await, DevicePoll::SlowDown);
    assert_eq!(poll(NOW + 11).await, DevicePoll::Pending);
    assert!(
        !store
            .approve_device("ZZZZ-ZZZZ", &user.id, NOW + 12)
            .await
            .unwrap()
    );
    assert!(
        store
            .approve_device("BCDF-GHJK", &user.id, NOW + 12)
            .await
            .unwrap()
    );
    assert!(
        !store
            .approve_device("BCDF-GHJK", &user.id, NOW + 12)
            .await
            .unwrap(),
        "approved once"
    );
    assert_eq!(poll(NOW + 20).await, DevicePoll::Approved(user.clone()));
    assert_eq!(poll(NOW + 30).await, DevicePoll::Expired, "used up");
    assert_eq!(
        store.poll_device(&"ee".repeat(32), NOW).await.unwrap(),
        DevicePoll::Expired
    );
    // Expired codes are neither approved nor answered.
    let late = DeviceCode {
        device_code_hash: "d2".repeat(32),
        user_code: "BCDF-GHJL".into(),
        ..code.clone()
    };
    store.begin_device(&late, NOW).await.unwrap();
    assert!(
        !store
            .approve_device("BCDF-GHJL", &user.id, NOW + 600)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .poll_device(&late.device_code_hash, NOW + 600)
            .await
            .unwrap(),
        DevicePoll::Expired
    );
}
