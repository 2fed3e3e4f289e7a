//! A peer that opens connections as fast as it can, for the end-to-end tests: one QUIC endpoint
//! (one source address) with a valid node certificate, so its attempts would pass the TLS
//! handshake; the connections it gets it holds open and never speaks on.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use shoal_net::transport::Congestion;
use std::net::SocketAddr;

/// What a flood of connection attempts got.
#[derive(Debug, Default)]
pub struct Flooded {
    /// Attempts the target refused outright (QUIC's CONNECTION_REFUSED, before any handshake).
    pub refused: usize,
    /// Attempts that got a connection.
    pub connected: usize,
    /// Attempts that failed any other way (timed out, closed during the handshake).
    pub other: usize,
}

/// The flooding endpoint; its connections close when it is dropped.
pub struct Flooder {
    runtime: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    held: Vec<quinn::Connection>,
}

impl Flooder {
    /// A flooder on a free loopback port.
    pub fn new() -> Self {
        let (runtime, _identity, endpoint) = super::quic_peer::start(Congestion::Cubic);
        Self {
            runtime,
            endpoint,
            held: Vec::new(),
        }
    }

    /// Starts `attempts` connections to `target` at once and waits for every one to end.
    pub fn flood(&mut self, target: SocketAddr, attempts: usize) -> Flooded {
        let endpoint = self.endpoint.clone();
        let results = self.runtime.block_on(async move {
            let tries: Vec<_> = (0..attempts)
                .map(|_| {
                    let connecting = endpoint.connect(target, "shoal").unwrap();
                    tokio::spawn(connecting)
                })
                .collect();
            let mut results = Vec::new();
            for t in tries {
                results.push(t.await.unwrap());
            }
            results
        });
        let mut flooded = Flooded::default();
        for result in results {
            match result {
                Ok(conn) => {
                    flooded.connected += 1;
                    self.held.push(conn);
                }
                Err(quinn::ConnectionError::ConnectionClosed(close))
                    if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
                {
                    flooded.refused += 1;
                }
                Err(_) => flooded.other += 1,
            }
        }
        flooded
    }
}
