//! A man in the middle between the issuer and the OpenID provider of
//! [`crate::oidc`], for the tests of ID tokens the issuer must refuse.
//!
//! The issuer is configured with this proxy as its Google issuer URL. The
//! proxy serves the provider's discovery document with itself as the
//! issuer, the token endpoint and the key set (JWKS); the browser still
//! goes to the real provider's authorization endpoint, and the proxy
//! passes the token request on to the real provider. In the provider's
//! answer it re-signs the ID token with its own key (the TEST-ONLY key
//! `tests/oidc/TEST-ONLY-id-token-signing-key.pem`, RS256), with `iss` set
//! to the proxy, so an untouched sign-in through the proxy succeeds; a
//! [`Tamper`] changes one thing on the way: the audience, the issuer, the
//! expiry, the nonce, one byte of the signature, or the algorithm (none,
//! or HS256 keyed with the client secret).

use crate::loopback_server::LoopbackServer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::http::StatusCode;
use poem::{Request, Response};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2_rsa::Sha256;

use crate::repo_file;

/// The key id of the proxy's signing key in its JWKS.
const KID: &str = "coditect-test-only";

/// What the proxy changes in the ID token of the next token answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Nothing: re-signed with `iss` set to the proxy, a valid token.
    None,
    /// `aud` names another application.
    Audience,
    /// `iss` is the real provider's URL, not the discovery's issuer.
    Issuer,
    /// `exp` (and `iat`) an hour in the past.
    Expired,
    /// `nonce` is another sign-in's.
    Nonce,
    /// One byte of the signature flipped.
    Signature,
    /// No signature at all: `"alg": "none"`.
    Unsigned,
    /// HS256 with the client secret as the key (a token anyone holding
    /// the secret could make, not the provider's signature).
    Hs256WithClientSecret,
}

struct Shared {
    /// The real provider's issuer URL.
    provider: String,
    /// This proxy's URL, once known.
    base: String,
    tamper: Tamper,
    key: RsaPrivateKey,
    /// ID tokens rewritten so far.
    rewritten: u32,
    /// The last ID token the proxy answered with.
    last: Option<String>,
}

/// The running proxy; dropping it stops it.
pub struct IdTokenProxy {
    shared: Arc<Mutex<Shared>>,
    server: LoopbackServer,
}

fn json_answer(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        .content_type("application/json")
        .body(body.to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Signs `claims` as a compact RS256 JWT with `key`.
fn sign(key: &RsaPrivateKey, claims: &Value, flip_a_signature_byte: bool) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": KID});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = SigningKey::<Sha256>::new(key.clone())
        .sign(input.as_bytes())
        .to_vec();
    if flip_a_signature_byte {
        signature[10] ^= 0x01;
    }
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The provider's ID token re-signed by the proxy, changed as `tamper` says.
fn rewrite(shared: &Shared, id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["iss"] = json!(shared.base);
    match shared.tamper {
        Tamper::None | Tamper::Signature | Tamper::Unsigned | Tamper::Hs256WithClientSecret => {}
        Tamper::Audience => claims["aud"] = json!(crate::oidc::OTHER_CLIENT_ID),
        Tamper::Issuer => claims["iss"] = json!(shared.provider),
        Tamper::Expired => {
            claims["iat"] = json!(now() - 7200);
            claims["exp"] = json!(now() - 3600);
        }
        Tamper::Nonce => claims["nonce"] = json!("a-nonce-of-another-sign-in"),
    }
    match shared.tamper {
        Tamper::Unsigned => Some(format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )),
        Tamper::Hs256WithClientSecret => {
            use hmac::{Hmac, KeyInit, Mac};
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(crate::oidc::CLIENT_SECRET.as_bytes())
                    .expect("HMAC takes keys of any length");
            mac.update(input.as_bytes());
            Some(format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            ))
        }
        _ => Some(sign(
            &shared.key,
            &claims,
            shared.tamper == Tamper::Signature,
        )),
    }
}

fn discovery(shared: &Arc<Mutex<Shared>>) -> Response {
    let (provider, base) = {
        let s = shared.lock().expect("not poisoned");
        (s.provider.clone(), s.base.clone())
    };
    let url = format!("{provider}/.well-known/openid-configuration");
    let mut doc: Value = match agent().get(&url).call() {
        Ok(mut r) => match r
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_str(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => return json_answer(502, &json!({"error": e.to_string()})),
        },
        Err(e) => return json_answer(502, &json!({"error": e.to_string()})),
    };
    doc["issuer"] = json!(base);
    doc["token_endpoint"] = json!(format!("{base}/token"));
    doc["jwks_uri"] = json!(format!("{base}/jwks"));
    // Only the signing algorithm the proxy uses.
    doc["id_token_signing_alg_values_supported"] = json!(["RS256"]);
    json_answer(200, &doc)
}

fn jwks(shared: &Arc<Mutex<Shared>>) -> Response {
    let s = shared.lock().expect("not poisoned");
    let public = s.key.to_public_key();
    json_answer(
        200,
        &json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]}),
    )
}

fn token(shared: &Arc<Mutex<Shared>>, headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
    let provider = shared.lock().expect("not poisoned").provider.clone();
    let mut request = agent().post(format!("{provider}/token"));
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let mut answer = match request.send(&body[..]) {
        Ok(a) => a,
        Err(e) => return json_answer(502, &json!({"error": e.to_string()})),
    };
    let status = answer.status().as_u16();
    let mut doc: Value = match answer
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_str(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return json_answer(502, &json!({"error": e.to_string()})),
    };
    if let Some(id_token) = doc["id_token"].as_str() {
        let mut s = shared.lock().expect("not poisoned");
        match rewrite(&s, id_token) {
            Some(t) => {
                doc["id_token"] = json!(t);
                s.rewritten += 1;
                s.last = Some(t);
            }
            None => return json_answer(502, &json!({"error": "unreadable ID token"})),
        }
    }
    json_answer(status, &doc)
}

async fn handle(shared: Arc<Mutex<Shared>>, mut req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().as_str().to_owned();
    let headers: Vec<(String, String)> = ["authorization", "content-type", "accept"]
        .into_iter()
        .filter_map(|h| {
            let v = req.headers().get(h)?.to_str().ok()?;
            Some((h.to_owned(), v.to_owned()))
        })
        .collect();
    let body = req.take_body().into_vec().await.unwrap_or_default();
    // ureq is blocking: off the runtime's thread.
    tokio::task::spawn_blocking(move || match (method.as_str(), path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => discovery(&shared),
        ("GET", "/jwks") => jwks(&shared),
        ("POST", "/token") => token(&shared, headers, body),
        _ => json_answer(404, &json!({"error": "not proxied"})),
    })
    .await
    .unwrap_or_else(|e| json_answer(500, &json!({"error": e.to_string()})))
}

impl IdTokenProxy {
    /// Starts the proxy in front of the provider whose issuer URL is
    /// `provider`.
    pub fn start(provider: &str) -> IdTokenProxy {
        let pem =
            std::fs::read_to_string(repo_file("tests/oidc/TEST-ONLY-id-token-signing-key.pem"))
                .expect("read the test signing key");
        let key = RsaPrivateKey::from_pkcs8_pem(&pem).expect("the test signing key is PKCS#8");
        let shared = Arc::new(Mutex::new(Shared {
            provider: provider.trim_end_matches('/').to_owned(),
            base: String::new(),
            tamper: Tamper::None,
            key,
            rewritten: 0,
            last: None,
        }));
        let server_shared = Arc::clone(&shared);
        let server = LoopbackServer::start("ID token proxy", 1, move |req: Request| {
            handle(Arc::clone(&server_shared), req)
        });
        shared.lock().expect("not poisoned").base = format!("http://{}", server.addr());
        IdTokenProxy { shared, server }
    }

    /// `http://127.0.0.1:PORT`: the issuer's `GOOGLE_ISSUER_URL`.
    pub fn issuer_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// What to change in the ID tokens from now on.
    pub fn set(&self, tamper: Tamper) {
        self.shared.lock().expect("not poisoned").tamper = tamper;
    }

    /// The last ID token the proxy answered with.
    pub fn last_id_token(&self) -> Option<String> {
        self.shared.lock().expect("not poisoned").last.clone()
    }

    /// ID tokens the proxy has re-signed so far.
    pub fn rewritten(&self) -> u32 {
        self.shared.lock().expect("not poisoned").rewritten
    }
}
