//! A fake GitHub for the sign-in tests: the OAuth web flow
//! (`/login/oauth/authorize`, which consents at once and sends the browser
//! back with a code, and `/login/oauth/access_token`, which checks the
//! client, the redirect URI, the PKCE verifier and that a code is used
//! once), and the user API (`GET /user`, `GET /user/emails`). Real HTTP on
//! a loopback port, its own thread and runtime, like the fake Stripe.

use crate::loopback_server::LoopbackServer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use poem::http::StatusCode;
use poem::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "fake-github-client";
pub const CLIENT_SECRET: &str = "fake-github-secret";

/// A GitHub user: its numeric id, login and emails (address, primary,
/// verified).
#[derive(Clone, Debug)]
pub struct GitHubUser {
    pub id: u64,
    pub login: String,
    pub emails: Vec<(String, bool, bool)>,
}

struct Grant {
    login: String,
    redirect_uri: String,
    challenge: String,
}

#[derive(Default)]
struct State {
    users: Vec<GitHubUser>,
    /// Codes not yet exchanged.
    codes: HashMap<String, Grant>,
    /// Access tokens and their user's login.
    tokens: HashMap<String, String>,
    next: u64,
    /// Token requests refused (for the tests' checks).
    refused_exchanges: u32,
}

pub struct FakeGitHub {
    state: Arc<Mutex<State>>,
    server: LoopbackServer,
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `application/x-www-form-urlencoded` decoding.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json_answer(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

fn bearer(req: &Request) -> Option<String> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    matches!(scheme, "Bearer" | "bearer" | "token").then(|| token.trim().to_owned())
}

async fn handle(state: Arc<Mutex<State>>, mut req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = query_map(req.uri().query().unwrap_or_default());
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/login/oauth/authorize") => {
            let mut s = state.lock().expect("not poisoned");
            if query.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                || query.get("response_type").map(String::as_str) != Some("code")
                || query.get("code_challenge_method").map(String::as_str) != Some("S256")
            {
                return json_answer(400, &json!({"error": "bad authorization request"}));
            }
            let login = match query.get("login") {
                Some(l) => l.clone(),
                None => match s.users.first() {
                    Some(u) => u.login.clone(),
                    None => return json_answer(400, &json!({"error": "no users"})),
                },
            };
            s.next += 1;
            let code = format!("code-{}-{login}", s.next);
            let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
            s.codes.insert(
                code.clone(),
                Grant {
                    login,
                    redirect_uri: redirect_uri.clone(),
                    challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                },
            );
            let state_param = query.get("state").cloned().unwrap_or_default();
            let location = format!(
                "{redirect_uri}?code={}&state={}",
                encode(&code),
                encode(&state_param)
            );
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", location)
                .finish()
        }
        ("POST", "/login/oauth/access_token") => {
            let basic = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| STANDARD.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok());
            let body = req.take_body().into_string().await.unwrap_or_default();
            let form = query_map(&body);
            let (id, secret) = match basic.as_deref().and_then(|b| b.split_once(':')) {
                Some((i, s)) => (decode(i), decode(s)),
                None => (
                    form.get("client_id").cloned().unwrap_or_default(),
                    form.get("client_secret").cloned().unwrap_or_default(),
                ),
            };
            let mut s = state.lock().expect("not poisoned");
            let grant = form.get("code").and_then(|c| s.codes.remove(c));
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let ok = id == CLIENT_ID
                && secret == CLIENT_SECRET
                && grant.as_ref().is_some_and(|g| {
                    Some(&g.redirect_uri) == form.get("redirect_uri")
                        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
                            == g.challenge
                });
            let Some(grant) = grant.filter(|_| ok) else {
                s.refused_exchanges += 1;
                return json_answer(400, &json!({"error": "invalid_grant"}));
            };
            s.next += 1;
            let token = format!("gho_fake{}", s.next);
            s.tokens.insert(token.clone(), grant.login);
            json_answer(
                200,
                &json!({"access_token": token, "token_type": "bearer", "scope": "user:email"}),
            )
        }
        ("GET", "/user" | "/user/emails") => {
            let s = state.lock().expect("not poisoned");
            let user = bearer(&req)
                .and_then(|t| s.tokens.get(&t).cloned())
                .and_then(|login| s.users.iter().find(|u| u.login == login).cloned());
            let Some(user) = user else {
                return json_answer(401, &json!({"message": "Bad credentials"}));
            };
            if path == "/user" {
                json_answer(200, &json!({"id": user.id, "login": user.login}))
            } else {
                let emails: Vec<Value> = user
                    .emails
                    .iter()
                    .map(|(e, primary, verified)| {
                        json!({"email": e, "primary": primary, "verified": verified, "visibility": null})
                    })
                    .collect();
                json_answer(200, &Value::Array(emails))
            }
        }
        _ => json_answer(404, &json!({"message": "Not Found"})),
    }
}

impl FakeGitHub {
    /// Starts the fake on `127.0.0.1:<free port>` with these users.
    pub fn start(users: Vec<GitHubUser>) -> FakeGitHub {
        let state = Arc::new(Mutex::new(State {
            users,
            ..State::default()
        }));
        let server_state = Arc::clone(&state);
        let server = LoopbackServer::start("fake GitHub", 1, move |req: Request| {
            handle(Arc::clone(&server_state), req)
        });
        FakeGitHub { state, server }
    }

    /// `http://127.0.0.1:PORT`: both `GITHUB_BASE_URL` and `GITHUB_API_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The issuer's environment for this fake.
    pub fn issuer_env(&self) -> Vec<(String, String)> {
        vec![
            ("GITHUB_CLIENT_ID".into(), CLIENT_ID.into()),
            ("GITHUB_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("GITHUB_BASE_URL".into(), self.base_url()),
            ("GITHUB_API_URL".into(), self.base_url()),
        ]
    }

    /// Token requests refused so far (bad client, code, verifier or URI).
    pub fn refused_exchanges(&self) -> u32 {
        self.state.lock().expect("not poisoned").refused_exchanges
    }
}
