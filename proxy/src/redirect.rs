//! Redirect handling: sends a single-slot request to the slot's master and follows the
//! cluster's answers — MOVED (patch the map, retry on the new owner), ASK (ASKING + the
//! command on the target, map unchanged), TRYAGAIN / CLUSTERDOWN and unreachable nodes
//! (bounded retries with backoff inside the request's deadline).

use crate::metrics as m;
use crate::pool::BackendError;
use crate::router::Router;
use crate::slotmap::{error_text, parse_redirect};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: u32 = 16;

/// An error reply built by the proxy.
pub fn error_reply(msg: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 3);
    slotgate_protocol::resp::write_error(&mut b, msg.as_bytes());
    b.freeze()
}

/// Runs `data` (one encoded command) against the owner of `slot`; returns the raw reply.
pub async fn execute(
    router: &Router,
    client: u64,
    slot: u16,
    data: Bytes,
    resp3: bool,
    deadline: Instant,
    first_ask: Option<Arc<str>>,
) -> Bytes {
    let mut redirects = 0;
    let mut ask_to: Option<Arc<str>> = first_ask;
    let mut backoff = Duration::from_millis(20);
    loop {
        let (addr, payload, frames) = match ask_to.take() {
            Some(a) => {
                let mut b = BytesMut::with_capacity(data.len() + 16);
                b.put_slice(b"*1\r\n$6\r\nASKING\r\n");
                b.put_slice(&data);
                (a, b.freeze(), 2)
            }
            None => match router.map().master_of(slot) {
                Some(a) => (a.clone(), data.clone(), 1),
                None => {
                    router.schedule_refresh(None);
                    if Instant::now() + backoff < deadline {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    m::error("clusterdown");
                    return error_reply("CLUSTERDOWN Hash slot not served");
                }
            },
        };
        let res = router.send(&addr, resp3, client, &payload, frames).await;
        let reply = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                router.schedule_refresh(None);
                let retryable = matches!(e, BackendError::Unreachable(..));
                if retryable && Instant::now() + backoff < deadline {
                    m::error("backend_unreachable_retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
                m::error(match e {
                    BackendError::Unreachable(..) => "backend_unreachable",
                    BackendError::Lost(..) => "backend_lost",
                    BackendError::Protocol(..) => "backend_protocol",
                });
                return error_reply(&format!("ERR slotgate: {e}"));
            }
            Err(_) => return error_reply("ERR slotgate: backend connection closed"),
        };
        let Some(text) = error_text(&reply) else {
            return reply;
        };
        if let Some((ask, rslot, target)) = parse_redirect(text) {
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                m::error("too_many_redirects");
                return reply;
            }
            if ask {
                m::redirect("ask");
                ask_to = Some(Arc::from(target.as_str()));
            } else {
                m::redirect("moved");
                router.moved(rslot, &target);
            }
            continue;
        }
        let transient = text.starts_with(b"TRYAGAIN") || text.starts_with(b"CLUSTERDOWN");
        if transient {
            m::redirect(if text.starts_with(b"TRYAGAIN") {
                "tryagain"
            } else {
                "clusterdown"
            });
            if text.starts_with(b"CLUSTERDOWN") {
                router.schedule_refresh(None);
            }
            if Instant::now() + backoff < deadline {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        }
        return reply;
    }
}
