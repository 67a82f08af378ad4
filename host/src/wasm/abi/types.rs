//! The ABI's enumerations as types: which map, which buffer, which metric kind a guest
//! names with a bare number. Decoded once at the host-function boundary, so the code
//! behind it matches on names and an unknown number is refused in one place.

use crate::wasm::state::Status;

/// proxy-wasm's `MapType`: the header map a `proxy_*_header_map_*` call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapType {
    /// The request's headers, pseudo-headers included.
    RequestHeaders,
    /// The request's trailers.
    RequestTrailers,
    /// The response's headers, `:status` included.
    ResponseHeaders,
    /// The response's trailers.
    ResponseTrailers,
    /// The initial metadata of the gRPC stream event being delivered.
    GrpcInitialMetadata,
    /// The trailing metadata of the gRPC stream event being delivered.
    GrpcTrailingMetadata,
    /// The headers of the `http_call` response being delivered.
    CallHeaders,
    /// The trailers of the `http_call` response being delivered.
    CallTrailers,
}

impl MapType {
    /// The map a guest's number names; `BAD_ARGUMENT` for one the ABI does not define.
    pub(crate) fn from_raw(ty: u32) -> Result<Self, Status> {
        Ok(match ty {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcInitialMetadata,
            5 => Self::GrpcTrailingMetadata,
            6 => Self::CallHeaders,
            7 => Self::CallTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// proxy-wasm's `BufferType`: the buffer a `proxy_*_buffer_bytes` call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufferType {
    /// The request body chunk(s) the current callback sees.
    RequestBody,
    /// The response body chunk(s) the current callback sees.
    ResponseBody,
    /// L4 data from the client (no L4 filters here).
    DownstreamData,
    /// L4 data from the upstream (no L4 filters here).
    UpstreamData,
    /// The body of the `http_call` response being delivered.
    CallResponseBody,
    /// The gRPC message being delivered (`on_grpc_receive`).
    GrpcReceive,
    /// The VM configuration (always empty here).
    VmConfiguration,
    /// The plugin configuration `on_configure` reads.
    PluginConfiguration,
    /// A deferred foreign call's answer, during `on_foreign_function`.
    CallData,
    /// Higress's: the Redis reply being delivered (`on_redis_call_response`).
    RedisCallResponse,
}

impl BufferType {
    /// The buffer a guest's number names; `BAD_ARGUMENT` for one the ABI does not define.
    pub(crate) fn from_raw(ty: u32) -> Result<Self, Status> {
        Ok(match ty {
            0 => Self::RequestBody,
            1 => Self::ResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::CallResponseBody,
            5 => Self::GrpcReceive,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            9 => Self::RedisCallResponse,
            _ => return Err(Status::BadArgument),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_abis() {
        assert_eq!(MapType::from_raw(2), Ok(MapType::ResponseHeaders));
        assert_eq!(MapType::from_raw(7), Ok(MapType::CallTrailers));
        assert_eq!(MapType::from_raw(8), Err(Status::BadArgument));
        assert_eq!(BufferType::from_raw(7), Ok(BufferType::PluginConfiguration));
        assert_eq!(BufferType::from_raw(9), Ok(BufferType::RedisCallResponse));
        assert_eq!(BufferType::from_raw(10), Err(Status::BadArgument));
    }
}
