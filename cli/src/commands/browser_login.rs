//! `coditect login` through the browser (RFC 8252). The CLI listens on
//! `127.0.0.1` at a random port and opens the issuer's `/cli/login` with
//! that loopback redirect, a random `state` and a PKCE (S256) challenge.
//! The person signs in there (Google, GitHub, or a browser session they
//! have); the issuer sends the browser back to the loopback with a one-time
//! code, which the CLI exchanges with its verifier for a session
//! (`POST /auth/cli/token`), stored like the password login's. The URL is
//! always printed (the browser is opened only from a terminal), to open
//! in a browser on this computer, since the redirect is to its loopback;
//! `coditect login --password` is the way without a browser.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::server_or_default;
use crate::api::{self, Client, Reply};
use crate::error::{CliError, CliResult};
use crate::license::Context;
use crate::state::{self, Session};

/// How long the CLI waits for the browser.
const WAIT: Duration = Duration::from_secs(300);

fn random() -> CliResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| CliError::unexpected("internal", format!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
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

fn io_error(what: &str, e: &std::io::Error) -> CliError {
    CliError::unexpected("io", format!("{what}: {e}"))
}

/// The page the browser shows at the loopback, and the connection closed.
fn answer(mut stream: TcpStream, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>CODITECT</title></head>\
         <body><p>{text}</p></body></html>"
    );
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// The request line's target of one HTTP request on `stream`.
fn request_target(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "GET").then_some(())?;
    parts.next().map(str::to_owned)
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Waits for the browser's redirect with our state; answers its code.
fn wait_for_code(listener: &TcpListener, state: &str) -> CliResult<String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("cannot listen for the browser", &e))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(CliError::user(
                        "timeout",
                        "the browser sign-in did not finish in 5 minutes",
                        Some(
                            "run `coditect login` again, or `coditect login --password`".to_owned(),
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(io_error("cannot listen for the browser", &e)),
        };
        let _ = stream.set_nonblocking(false);
        let Some(target) = request_target(&mut stream) else {
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/callback" {
            answer(stream, "404 Not Found", "Nothing here.");
            continue;
        }
        if query_value(query, "state") != Some(state) {
            // Not the answer to our request: keep waiting for it.
            answer(
                stream,
                "400 Bad Request",
                "This sign-in does not belong to the waiting <code>coditect login</code>.",
            );
            continue;
        }
        if let Some(error) = query_value(query, "error") {
            answer(stream, "400 Bad Request", "Sign-in cancelled.");
            return Err(CliError::user(
                "login_cancelled",
                format!("the browser sign-in was cancelled ({error})"),
                Some("run `coditect login` again".to_owned()),
            ));
        }
        let Some(code) = query_value(query, "code").filter(|c| !c.is_empty()) else {
            answer(stream, "400 Bad Request", "No sign-in code.");
            continue;
        };
        answer(
            stream,
            "200 OK",
            "Signed in. You can close this page and go back to the terminal.",
        );
        return Ok(code.to_owned());
    }
}

/// Stores the session the server gave and says so.
fn signed_in(ctx: &Context<'_>, server: String, body: proto::CliTokenResponse) -> CliResult<()> {
    let email = body.email;
    let expires = body.expires_at;
    state::save_session(
        ctx.paths,
        &Session::new(server, email.clone(), body.access_token, expires.clone()),
    )?;
    ctx.printer.success(&format!("Signed in as {email}"));
    ctx.printer
        .json(&json!({ "signed_in": true, "email": email, "expires_at": expires }));
    Ok(())
}

/// `coditect login --device` (RFC 8628): shows a code to approve in a
/// browser anywhere, and polls until it is (waiting longer after each
/// `slow_down`).
pub fn device(ctx: &Context<'_>) -> CliResult<()> {
    let server = server_or_default(ctx.server);
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let start = match ctx
        .printer
        .spin("Asking for a code…", || client.device_code())?
    {
        Reply::Ok(body) => body,
        Reply::Refused { problem, .. } => {
            return Err(api::refusal_error(&problem.code, &problem.detail, &server));
        }
    };
    eprintln!(
        "To sign in, open {} in a browser (on any device) and enter the code {}
  or open {}",
        start.verification_uri, start.user_code, start.verification_uri_complete
    );
    let deadline = Instant::now() + Duration::from_secs(start.expires_in);
    let mut interval = Duration::from_secs(start.interval.max(1));
    let request = proto::DeviceTokenRequest {
        device_code: start.device_code,
    };
    ctx.printer.spin("Waiting for the approval…", || {
        loop {
            std::thread::sleep(interval);
            if Instant::now() >= deadline {
                return Err(CliError::user(
                    "timeout",
                    "the code was not approved in time",
                    Some("run `coditect login --device` again".to_owned()),
                ));
            }
            match client.device_token(&request)? {
                Reply::Ok(body) => return signed_in(ctx, server.clone(), body),
                Reply::Refused { problem, .. } => match problem.code.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += Duration::from_secs(5),
                    _ => {
                        return Err(CliError::user(
                            &problem.code,
                            problem.detail,
                            Some("run `coditect login --device` again".to_owned()),
                        ));
                    }
                },
            }
        }
    })
}

pub fn run(ctx: &Context<'_>) -> CliResult<()> {
    let server = server_or_default(ctx.server);
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io_error("cannot listen on 127.0.0.1 for the browser", &e))?;
    let port = listener
        .local_addr()
        .map_err(|e| io_error("cannot listen on 127.0.0.1 for the browser", &e))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let state = random()?;
    let verifier = random()?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let url = format!(
        "{}/cli/login?redirect_uri={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        server.trim_end_matches('/'),
        encode(&redirect_uri)
    );
    let opened = std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
        && webbrowser::open(&url).is_ok();
    // On standard error, whatever the output mode: the person (or a
    // script) needs it to go on.
    if opened {
        eprintln!(
            "Your browser was opened to sign in. If it did not open, open this page:\n  {url}"
        );
    } else {
        eprintln!(
            "Open this page in a browser on this computer to sign in:\n  {url}\n\
             (No browser here? Use `coditect login --password`.)"
        );
    }
    let code = ctx.printer.spin("Waiting for the browser…", || {
        wait_for_code(&listener, &state)
    })?;
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let request = proto::CliTokenRequest {
        code,
        code_verifier: verifier,
        redirect_uri,
    };
    match ctx
        .printer
        .spin("Signing in…", || client.cli_token(&request))?
    {
        Reply::Ok(body) => signed_in(ctx, server, body),
        Reply::Refused { problem, .. } => Err(CliError::user(
            &problem.code,
            problem.detail,
            Some("run `coditect login` again".to_owned()),
        )),
    }
}
