//! Byte-stream connections to an upstream's targets, for `tcp_routes`: the same
//! balancer, passive health, outlier detection, circuit breaker and connect retries
//! as HTTP requests, with a connection in place of a request (it counts as one in
//! flight while it is open).

use std::net::SocketAddr;

use http::uri::Authority;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::balance::PickRequest;
use super::retry::Failure;
use super::target::InFlight;
use super::{Upstream, UpstreamError, now_ms, outlier, worker};
use crate::tls::connector::{ConnectError, MaybeTls};

/// An open connection to a target.
pub struct Stream {
    /// The target it goes to.
    pub target: Authority,
    /// The connection (TLS when the upstream has `tls`).
    pub io: TokioIo<MaybeTls>,
    /// Counts the connection as in flight to its target while it lives.
    pub flight: InFlight,
    /// Counts it as open within the breaker's `max_connections`, if set.
    _open: Option<super::limits::Open>,
}

impl Upstream {
    /// Picks a target for a UDP session of `client` (the balancer, over the targets
    /// in rotation), counted in flight while the returned token lives.
    pub fn pick_for(&self, client: SocketAddr) -> Option<(Authority, InFlight)> {
        let i = self.pick_stream(client)?;
        let target = self.targets.list.get(i)?;
        Some((target.address.clone(), InFlight::start(&self.targets, i)))
    }

    /// Connects to a target picked for `client`, trying other targets after a failed
    /// connect as the upstream's `retries` allow, and writes `preamble` first (a
    /// PROXY protocol header, when the upstream asks for one).
    pub async fn connect_stream(
        &self,
        client: SocketAddr,
        preamble: &[u8],
    ) -> Result<Stream, UpstreamError> {
        if let Some(e) = self.over_max_requests() {
            return Err(e);
        }
        // Every TCP connection is a new upstream connection: pending until it is set
        // up, open while it lives, within the breaker's connection limits.
        let (pending, open) = match &self.limits {
            Some(limits) => match limits.admit() {
                Ok((pending, open)) => (Some(pending), Some(open)),
                Err(o) => return Err(self.overloaded(o.limit, o.max)),
            },
            None => (None, None),
        };
        let attempts = if self.retries.retries(Failure::Connect) {
            self.retries.attempts()
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            let i = self.pick_stream(client).ok_or(UpstreamError::NoTarget)?;
            let target = self.targets.list.get(i).ok_or(UpstreamError::NoTarget)?;
            let flight = InFlight::start(&self.targets, i);
            match self.open(&target.address, preamble).await {
                Ok(io) => {
                    if let Some(config) = &self.config.outlier_detection {
                        outlier::record(config, &self.targets, target, None, now_ms);
                    }
                    drop(pending);
                    return Ok(Stream {
                        target: target.address.clone(),
                        io,
                        flight,
                        _open: open,
                    });
                }
                Err(source) => {
                    drop(flight);
                    self.mark_down(target);
                    if let Some(config) = &self.config.outlier_detection {
                        let failure = Some(Failure::Connect);
                        outlier::record(config, &self.targets, target, failure, now_ms);
                    }
                    crate::metrics::global().upstream_error(&self.config.name, "connect");
                    let error = UpstreamError::Connect {
                        target: target.address.to_string(),
                        source,
                    };
                    if attempt >= attempts {
                        return Err(error);
                    }
                    let Some(_permit) = self.retries.admit(self.targets.active()) else {
                        crate::metrics::global().upstream_retry_denied(&self.config.name);
                        return Err(error);
                    };
                    crate::metrics::global().upstream_retry(&self.config.name, "connect-failure");
                    tokio::time::sleep(self.retries.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The target this worker's balancer picks for a stream or session of `client`:
    /// a policy keyed on the request sees no path nor header, only `client_ip`.
    fn pick_stream(&self, client: SocketAddr) -> Option<usize> {
        let uri = http::Uri::from_static("/");
        let headers = http::HeaderMap::new();
        let request = PickRequest {
            uri: &uri,
            headers: &headers,
            client: Some(client.ip()),
        };
        worker::pick_index(self, &request)
    }

    /// Connects to `target` (TCP, then TLS when configured) within the connect
    /// timeout, and writes `preamble`.
    async fn open(
        &self,
        target: &Authority,
        preamble: &[u8],
    ) -> Result<TokioIo<MaybeTls>, ConnectError> {
        let uri = format!("http://{target}/")
            .parse::<http::Uri>()
            .map_err(|e| ConnectError::Tcp(Box::new(e)))?;
        let mut connector = self.connector();
        let io = tower_service::Service::call(&mut connector, uri).await?;
        let mut io = TokioIo::new(io);
        if !preamble.is_empty() {
            io.write_all(preamble)
                .await
                .map_err(|e| ConnectError::Tcp(Box::new(e)))?;
        }
        Ok(io)
    }
}
