//! `http_call` under test: answered from the responses the test gave, by upstream name,
//! and recorded so the outcome can list them.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::outcome::HttpCallRecord;
use super::request::UpstreamResponse;
use crate::wasm::{CallFuture, HttpCaller};

/// Canned answers by upstream name, and the calls made so far.
pub(crate) struct CannedCalls {
    answers: Vec<(String, UpstreamResponse)>,
    made: Mutex<Vec<HttpCallRecord>>,
}

impl CannedCalls {
    pub fn new(answers: Vec<(String, UpstreamResponse)>) -> Self {
        Self {
            answers,
            made: Mutex::new(Vec::new()),
        }
    }

    /// The calls made since the last time this was asked.
    pub fn take(&self) -> Vec<HttpCallRecord> {
        std::mem::take(&mut *self.made.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl HttpCaller for CannedCalls {
    fn call(&self, upstream: &str, request: http::Request<Bytes>, _: Duration) -> CallFuture {
        let answer = self
            .answers
            .iter()
            .find(|(u, _)| u == upstream)
            .map(|(_, r)| r.parts());
        self.made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(HttpCallRecord {
                upstream: upstream.to_string(),
                method: request.method().to_string(),
                path: request.uri().to_string(),
                answered: answer.is_some(),
            });
        let upstream = upstream.to_string();
        Box::pin(async move {
            match answer {
                Some(Ok((head, body))) => Ok(http::Response::from_parts(head, body)),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(format!(
                    "the test gives no answer for upstream `{upstream}` \
                     (a spec's `http_calls:`, or Filter::http_call_response)"
                )),
            }
        })
    }
}
