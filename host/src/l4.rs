//! Layer 4: TCP and UDP relayed to upstreams without HTTP in between (`tcp_routes`,
//! `udp_routes`), SNI routing of TLS passed through untouched, and the PROXY protocol
//! both ways. The pieces here know nothing of workers or snapshots: the server
//! (`server::tcp`, `server::udp`) drives them.
//!
//! - [`routes`]: which route a connection takes, by listener and server name.
//! - [`client_hello`]: the server name of a ClientHello, without terminating TLS.
//! - [`proxy_protocol`]: PROXY v1/v2 headers, read and written.
//! - [`relay`]: copying both ways under an idle timeout (WebSocket tunnels use it too).

pub mod client_hello;
pub mod proxy_protocol;
pub mod relay;
pub mod routes;

pub use routes::{L4Route, L4Routes};
