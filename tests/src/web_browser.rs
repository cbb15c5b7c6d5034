//! A browser for the sign-in tests, played over plain HTTP: it follows
//! redirects one by one (so a test can stop at any of them, or change a
//! URL as an attacker would) and keeps cookies by name and path, like a
//! browser on one host (every server of the tests is on 127.0.0.1).

use std::collections::BTreeMap;
use std::time::Duration;

/// One answer: status, `Location` if any, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

pub struct WebBrowser {
    agent: ureq::Agent,
    /// (path, name) → value.
    cookies: BTreeMap<(String, String), String>,
}

impl Default for WebBrowser {
    fn default() -> Self {
        Self::new()
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

impl WebBrowser {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        WebBrowser {
            agent: config.into(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap_or("/");
        self.cookies
            .iter()
            .filter(|((p, _), _)| {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path[p.len()..].starts_with('/')))
            })
            .map(|((_, n), v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, set_cookie: &str, request_path: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            return;
        };
        let mut path = request_path
            .rsplit_once('/')
            .map_or("/".to_owned(), |(d, _)| format!("{d}/"));
        let mut gone = value.is_empty();
        for attr in parts {
            let attr = attr.trim();
            let lower = attr.to_ascii_lowercase();
            if let Some(p) = attr.get(5..).filter(|_| lower.starts_with("path=")) {
                path = p.to_owned();
            }
            if lower == "max-age=0" || lower.starts_with("max-age=-") {
                gone = true;
            }
        }
        let key = (path, name.trim().to_owned());
        if gone {
            self.cookies.remove(&key);
        } else {
            self.cookies.insert(key, value.trim().to_owned());
        }
    }

    /// The value of cookie `name`, whatever its path.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Sets cookie `name` for every path (as a page of the site would).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies
            .insert(("/".to_owned(), name.to_owned()), value.to_owned());
    }

    /// Forgets every cookie (another browser).
    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    /// `POST url` with a form body (`a=b&c=d`, encoded), one step.
    pub fn post_form(&mut self, url: &str, body: &str) -> Answer {
        let (_, path) = split_url(url);
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded");
        let cookies = self.cookie_header(&path);
        if !cookies.is_empty() {
            req = req.header("Cookie", &cookies);
        }
        let resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.answer(url, &path, resp)
    }

    fn answer(
        &mut self,
        url: &str,
        path: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Answer {
        for v in resp.headers().get_all("set-cookie") {
            if let Ok(v) = v.to_str() {
                self.keep(v, path);
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| {
                if l.starts_with('/') {
                    let (host, _) = split_url(url);
                    let scheme = url.split_once("://").map_or("http", |(s, _)| s);
                    format!("{scheme}://{host}{l}")
                } else {
                    l.to_owned()
                }
            });
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Answer {
            status,
            location,
            body,
        }
    }

    /// `GET url` (absolute), one step: no redirect followed.
    pub fn get(&mut self, url: &str) -> Answer {
        let (_, path) = split_url(url);
        let mut req = self.agent.get(url);
        let cookies = self.cookie_header(&path);
        if !cookies.is_empty() {
            req = req.header("Cookie", &cookies);
        }
        let resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.answer(url, &path, resp)
    }

    /// `GET url`, then every redirect while `stop` says no to its URL;
    /// returns the last answer (a redirect that `stop` caught, or a page).
    pub fn follow_until(&mut self, url: &str, stop: impl Fn(&str) -> bool) -> Answer {
        let mut answer = self.get(url);
        for _ in 0..20 {
            let Some(next) = answer.location.clone() else {
                return answer;
            };
            if stop(&next) {
                return answer;
            }
            answer = self.get(&next);
        }
        panic!("too many redirects from {url}");
    }

    /// `GET url` and every redirect.
    pub fn follow(&mut self, url: &str) -> Answer {
        self.follow_until(url, |_| false)
    }
}
