//! Serves the analysts' page and API ([`crate::feedback::web`]) on the sensor's own thread.
//!
//! Access policy ([`crate::feedback::access`]): a token on every address, loopback included,
//! generated at start-up unless one is given; `--feedback-no-token` only on loopback. While
//! the page is up, its URL (with the token) is kept in the data directory ([`UrlFile`]), so
//! that scripts on the same machine can reach the API without the terminal's output.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::capture::Timestamp;
use crate::feedback::access::{Access, AccessError, TOKEN_FILE};
use crate::feedback::web::{MAX_BODY, Reply, Request, WebState, handle};

/// Refused requests logged to standard error before the log goes quiet (a hostile page can
/// send them in a loop).
const LOGGED_REFUSALS: u32 = 100;

/// Why the page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("cannot serve the feedback page on {addr}: {msg}")]
    Bind { addr: SocketAddr, msg: String },
    #[error("cannot write the feedback page's URL to {path}: {source}")]
    UrlFile { path: PathBuf, source: std::io::Error },
}

/// Who may use the page, as the command line and configuration say.
#[derive(Debug, Clone, Default)]
pub struct PageAccess {
    /// `SECRET` or `NAME:SECRET` each; none: one is generated.
    pub tokens: Vec<String>,
    /// `--feedback-no-token` (loopback only).
    pub no_token: bool,
    /// `[feedback] hosts`: names the page may be reached by.
    pub hosts: Vec<String>,
}

/// Binds the page's address now, so that a mistake stops the sensor before it starts. The
/// rules are checked before binding (no socket opens for a refused `--feedback-no-token`)
/// and then follow the address actually bound (port 0).
pub fn bind(addr: SocketAddr, page: &PageAccess) -> Result<(tiny_http::Server, Access), WebError> {
    let access = Access::new(addr, &page.tokens, page.no_token, &page.hosts)?;
    let server =
        tiny_http::Server::http(addr).map_err(|e| WebError::Bind { addr, msg: e.to_string() })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    Ok((server, access.bound_to(bound)))
}

/// The page's URL, with its token, in the data directory ([`TOKEN_FILE`]) while the sensor
/// runs: readable by its owner only (mode 0600), removed when dropped.
#[derive(Debug)]
pub struct UrlFile {
    path: PathBuf,
}

impl UrlFile {
    /// Writes `url` to `data_dir`/[`TOKEN_FILE`], replacing a file a killed sensor left. The
    /// file is created 0600 under a temporary name and renamed, so that the token is never
    /// readable by others, not even for a moment.
    pub fn write(data_dir: &Path, url: &str) -> Result<UrlFile, WebError> {
        let path = data_dir.join(TOKEN_FILE);
        let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
        let err = |source| WebError::UrlFile { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let written = opts.open(&tmp).and_then(|mut f| {
            f.write_all(format!("{url}\n").as_bytes())?;
            f.sync_all()
        });
        written.and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })?;
        Ok(UrlFile { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UrlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The value of a request header (several `Cookie` headers are joined, as HTTP/2 proxies
/// may split them).
fn header(req: &tiny_http::Request, name: &'static str) -> Option<String> {
    let mut values = req.headers().iter().filter(|h| h.field.equiv(name)).map(|h| h.value.as_str());
    let first = values.next()?.to_owned();
    if name.eq_ignore_ascii_case("Cookie") {
        return Some(values.fold(first, |acc, v| acc + "; " + v));
    }
    Some(first)
}

/// Answers requests until `done` is set. Refused attempts to change state and requests for a
/// foreign Host go to standard error, the first [`LOGGED_REFUSALS`] of them: they mean a
/// hostile page, a stale token, or a proxy whose name `[feedback] hosts` lacks.
pub fn serve(server: &tiny_http::Server, state: &WebState<'_>, done: &AtomicBool) {
    let mut refusals = 0u32;
    while !done.load(Relaxed) {
        let mut req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("feedback  the page's server stopped: {e}");
                return;
            }
        };
        let [host, origin, referer, content_type, authorization, cookie] =
            ["Host", "Origin", "Referer", "Content-Type", "Authorization", "Cookie"]
                .map(|n| header(&req, n));
        // One byte more than allowed tells a too-large body from one at the limit.
        let mut body = Vec::new();
        let read = req.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
        let (method, url) = (req.method().as_str().to_owned(), req.url().to_owned());
        let reply = match read {
            Ok(_) => {
                let r = Request {
                    method: &method,
                    url: &url,
                    host: host.as_deref(),
                    origin: origin.as_deref(),
                    referer: referer.as_deref(),
                    content_type: content_type.as_deref(),
                    authorization: authorization.as_deref(),
                    cookie: cookie.as_deref(),
                    body: &body,
                };
                handle(state, &r, Timestamp::wall_now().as_secs_f64())
            }
            Err(e) => Reply::error(400, format!("reading the body: {e}")),
        };
        // A foreign Host, and any refused attempt to change state, is worth a line; a GET
        // without the token (a tab left open across a restart polls every 2 s) is not.
        let changes_state = method != "GET" && method != "HEAD";
        if reply.status == 403 || (changes_state && matches!(reply.status, 401 | 415)) {
            refusals += 1;
            if refusals <= LOGGED_REFUSALS {
                let path = url.split('?').next().unwrap_or("");
                let from = origin.as_deref().or(referer.as_deref()).unwrap_or("no web page");
                eprintln!(
                    "feedback  refused {method} {path} from {from} (Host {}): {} {}",
                    host.as_deref().unwrap_or("none"),
                    reply.status,
                    error_of(&reply)
                );
            }
            if refusals == LOGGED_REFUSALS {
                eprintln!(
                    "feedback  {LOGGED_REFUSALS} requests refused; further refusals are not logged"
                );
            }
        }
        let mut resp =
            tiny_http::Response::from_string(reply.body.as_str()).with_status_code(reply.status);
        let headers =
            std::iter::once(("Content-Type", reply.content_type)).chain(reply.all_headers());
        for h in headers
            .filter_map(|(k, v)| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok())
        {
            resp.add_header(h);
        }
        let _ = req.respond(resp);
    }
}

/// The `error` text of a JSON error reply.
fn error_of(reply: &Reply) -> String {
    serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_is_private_and_goes_with_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // A killed sensor's file, readable by all: replaced, not reused.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(TOKEN_FILE), "stale").unwrap();
        let f = UrlFile::write(&state, "http://127.0.0.1:1/?token=abc").unwrap();
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "http://127.0.0.1:1/?token=abc\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "no temporary left");
    }

    #[test]
    fn no_token_off_loopback_binds_nothing() {
        let page = PageAccess { no_token: true, ..PageAccess::default() };
        let e = match bind("0.0.0.0:0".parse().unwrap(), &page) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("bound 0.0.0.0 without a token"),
        };
        assert!(e.contains("--feedback-no-token is for loopback only"), "{e}");
        let (server, access) =
            bind("127.0.0.1:0".parse().unwrap(), &PageAccess::default()).unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        assert_ne!(port, 0);
        assert!(
            access.page_url().starts_with(&format!("http://127.0.0.1:{port}/?token=")),
            "{}",
            access.page_url()
        );
    }
}
