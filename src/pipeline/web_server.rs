//! Serves the analysts' page and API ([`crate::feedback::web`]) on the sensor's own thread.
//!
//! Binding policy: loopback needs no token; any other address is refused unless a token is
//! set, since the API stores labels that steer retraining.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::capture::Timestamp;
use crate::feedback::web::{MAX_BODY, WebState, handle};

/// Why the page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("refusing to serve the feedback page on {0} without a token: it is not a loopback address; pass --feedback-token (or set [feedback] token)")]
    NeedsToken(SocketAddr),
    #[error("cannot serve the feedback page on {addr}: {msg}")]
    Bind { addr: SocketAddr, msg: String },
}

/// Binds the page's address now, so that a mistake stops the sensor before it starts.
pub fn bind(addr: SocketAddr, token: Option<&str>) -> Result<tiny_http::Server, WebError> {
    if !addr.ip().is_loopback() && token.is_none_or(|t| t.is_empty()) {
        return Err(WebError::NeedsToken(addr));
    }
    tiny_http::Server::http(addr).map_err(|e| WebError::Bind { addr, msg: e.to_string() })
}

/// Answers requests until `done` is set.
pub fn serve(server: &tiny_http::Server, state: &WebState<'_>, done: &AtomicBool) {
    while !done.load(Relaxed) {
        let mut req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("feedback  the page's server stopped: {e}");
                return;
            }
        };
        let auth = req.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str().to_owned());
        // One byte more than allowed tells a too-large body from one at the limit.
        let mut body = Vec::new();
        let read = req.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
        let reply = match read {
            Ok(_) => handle(state, req.method().as_str(), req.url(), auth.as_deref(), &body, Timestamp::wall_now().as_secs_f64()),
            Err(e) => crate::feedback::web::Reply { status: 400, content_type: "application/json", body: format!("{{\"error\": \"reading the body: {e}\"}}") },
        };
        let header = tiny_http::Header::from_bytes("Content-Type", reply.content_type).expect("static header is valid");
        let resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status).with_header(header);
        let _ = req.respond(resp);
    }
}
