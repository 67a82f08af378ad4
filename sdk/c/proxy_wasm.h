/*
 * proxy_wasm.h — the proxy-wasm ABI 0.2.1 for C and C++ filters.
 *
 * One header, no library: it declares the functions the host (Portcullis, Envoy, ...)
 * offers a filter, the enums they speak, and two macros for the exports every filter
 * needs. The callbacks a filter implements (proxy_on_request_headers, ...) are listed
 * at the end; define the ones you need with PROXY_EXPORT(name).
 *
 * Build a filter with Debian's clang, lld and wasi-libc:
 *
 *   clang --target=wasm32-wasi -O2 -mexec-model=reactor -I sdk/c \
 *         -o filter.wasm filter.c
 *
 * A minimal filter:
 *
 *   #include "proxy_wasm.h"
 *   PROXY_WASM_ABI_0_2_1();
 *   PROXY_EXPORT(proxy_on_request_headers)
 *   proxy_action_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
 *     proxy_add_header_map_value(PROXY_MAP_HTTP_REQUEST_HEADERS, "x-c", 3, "yes", 3);
 *     return PROXY_ACTION_CONTINUE;
 *   }
 *
 * Memory: every "return_*_data" a host function fills points to memory the host
 * obtained from this module's proxy_on_memory_allocate (malloc, with
 * PROXY_WASM_ABI_0_2_1): the filter owns it and free()s it.
 *
 * Specification: https://github.com/proxy-wasm/spec (abi-versions/v0.2.1).
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef PORTCULLIS_PROXY_WASM_H
#define PORTCULLIS_PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* === Types === */

/** What a host function reports. */
typedef enum {
  PROXY_STATUS_OK = 0,
  PROXY_STATUS_NOT_FOUND = 1,
  PROXY_STATUS_BAD_ARGUMENT = 2,
  PROXY_STATUS_SERIALIZATION_FAILURE = 3,
  PROXY_STATUS_PARSE_FAILURE = 4,
  PROXY_STATUS_INVALID_MEMORY_ACCESS = 6,
  PROXY_STATUS_EMPTY = 7,
  PROXY_STATUS_CAS_MISMATCH = 8,
  PROXY_STATUS_INTERNAL_FAILURE = 10,
  PROXY_STATUS_UNIMPLEMENTED = 12,
} proxy_status_t;

/** What a stream callback tells the host: go on, or hold the stream until
 *  proxy_continue_stream / proxy_send_local_response. */
typedef enum {
  PROXY_ACTION_CONTINUE = 0,
  PROXY_ACTION_PAUSE = 1,
} proxy_action_t;

/** Log levels for proxy_log. */
typedef enum {
  PROXY_LOG_TRACE = 0,
  PROXY_LOG_DEBUG = 1,
  PROXY_LOG_INFO = 2,
  PROXY_LOG_WARN = 3,
  PROXY_LOG_ERROR = 4,
  PROXY_LOG_CRITICAL = 5,
} proxy_log_level_t;

/** Buffers a filter can read (and some it can write). */
typedef enum {
  PROXY_BUFFER_HTTP_REQUEST_BODY = 0,
  PROXY_BUFFER_HTTP_RESPONSE_BODY = 1,
  PROXY_BUFFER_DOWNSTREAM_DATA = 2,
  PROXY_BUFFER_UPSTREAM_DATA = 3,
  PROXY_BUFFER_HTTP_CALL_RESPONSE_BODY = 4,
  PROXY_BUFFER_GRPC_CALL_MESSAGE = 5,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
  PROXY_BUFFER_FOREIGN_FUNCTION_ARGUMENTS = 8,
} proxy_buffer_type_t;

/** Header maps. Request headers carry :method, :path, :authority, :scheme;
 *  response headers carry :status. */
typedef enum {
  PROXY_MAP_HTTP_REQUEST_HEADERS = 0,
  PROXY_MAP_HTTP_REQUEST_TRAILERS = 1,
  PROXY_MAP_HTTP_RESPONSE_HEADERS = 2,
  PROXY_MAP_HTTP_RESPONSE_TRAILERS = 3,
  PROXY_MAP_GRPC_CALL_INITIAL_METADATA = 4,
  PROXY_MAP_GRPC_CALL_TRAILING_METADATA = 5,
  PROXY_MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
  PROXY_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
} proxy_map_type_t;

/** Which side closed a connection. */
typedef enum {
  PROXY_PEER_UNKNOWN = 0,
  PROXY_PEER_LOCAL = 1,
  PROXY_PEER_REMOTE = 2,
} proxy_peer_type_t;

/** Streams for proxy_continue_stream / proxy_close_stream. */
typedef enum {
  PROXY_STREAM_HTTP_REQUEST = 0,
  PROXY_STREAM_HTTP_RESPONSE = 1,
  PROXY_STREAM_DOWNSTREAM = 2,
  PROXY_STREAM_UPSTREAM = 3,
} proxy_stream_type_t;

/** Metric kinds for proxy_define_metric. */
typedef enum {
  PROXY_METRIC_COUNTER = 0,
  PROXY_METRIC_GAUGE = 1,
  PROXY_METRIC_HISTOGRAM = 2,
} proxy_metric_type_t;

/* === Host functions (imported from "env") === */

#define PROXY_IMPORT(name) \
  __attribute__((import_module("env"), import_name(#name)))

/* Logging and time. */
PROXY_IMPORT(proxy_log)
proxy_status_t proxy_log(proxy_log_level_t level, const char *message, size_t size);
PROXY_IMPORT(proxy_get_log_level)
proxy_status_t proxy_get_log_level(proxy_log_level_t *return_level);
PROXY_IMPORT(proxy_get_current_time_nanoseconds)
proxy_status_t proxy_get_current_time_nanoseconds(uint64_t *return_time);
PROXY_IMPORT(proxy_set_tick_period_milliseconds)
proxy_status_t proxy_set_tick_period_milliseconds(uint32_t period);

/* Contexts. */
PROXY_IMPORT(proxy_set_effective_context)
proxy_status_t proxy_set_effective_context(uint32_t context_id);
PROXY_IMPORT(proxy_done)
proxy_status_t proxy_done(void);

/* Buffers: bodies, configuration, http_call responses. */
PROXY_IMPORT(proxy_get_buffer_bytes)
proxy_status_t proxy_get_buffer_bytes(proxy_buffer_type_t buffer, size_t start, size_t max_size,
                                      uint8_t **return_data, size_t *return_size);
PROXY_IMPORT(proxy_get_buffer_status)
proxy_status_t proxy_get_buffer_status(proxy_buffer_type_t buffer, size_t *return_size,
                                       uint32_t *return_unused);
PROXY_IMPORT(proxy_set_buffer_bytes)
proxy_status_t proxy_set_buffer_bytes(proxy_buffer_type_t buffer, size_t start, size_t size,
                                      const uint8_t *data, size_t data_size);

/* Header maps. A serialized map is: u32 count; count x (u32 key_len, u32 value_len);
 * then each key and value, each followed by a NUL byte; integers little-endian. */
PROXY_IMPORT(proxy_get_header_map_size)
proxy_status_t proxy_get_header_map_size(proxy_map_type_t map, size_t *return_size);
PROXY_IMPORT(proxy_get_header_map_pairs)
proxy_status_t proxy_get_header_map_pairs(proxy_map_type_t map, uint8_t **return_data,
                                          size_t *return_size);
PROXY_IMPORT(proxy_set_header_map_pairs)
proxy_status_t proxy_set_header_map_pairs(proxy_map_type_t map, const uint8_t *data, size_t size);
PROXY_IMPORT(proxy_get_header_map_value)
proxy_status_t proxy_get_header_map_value(proxy_map_type_t map, const char *key, size_t key_size,
                                          uint8_t **return_value, size_t *return_size);
PROXY_IMPORT(proxy_add_header_map_value)
proxy_status_t proxy_add_header_map_value(proxy_map_type_t map, const char *key, size_t key_size,
                                          const char *value, size_t value_size);
PROXY_IMPORT(proxy_replace_header_map_value)
proxy_status_t proxy_replace_header_map_value(proxy_map_type_t map, const char *key,
                                              size_t key_size, const char *value,
                                              size_t value_size);
PROXY_IMPORT(proxy_remove_header_map_value)
proxy_status_t proxy_remove_header_map_value(proxy_map_type_t map, const char *key,
                                             size_t key_size);

/* Streams. */
PROXY_IMPORT(proxy_continue_stream)
proxy_status_t proxy_continue_stream(proxy_stream_type_t stream);
PROXY_IMPORT(proxy_close_stream)
proxy_status_t proxy_close_stream(proxy_stream_type_t stream);
PROXY_IMPORT(proxy_send_local_response)
proxy_status_t proxy_send_local_response(uint32_t status_code, const char *details,
                                         size_t details_size, const uint8_t *body,
                                         size_t body_size, const uint8_t *serialized_headers,
                                         size_t headers_size, int32_t grpc_status);

/* Properties (Envoy attribute names; a path's segments are separated by NUL bytes,
 * e.g. "request\0path"). */
PROXY_IMPORT(proxy_get_property)
proxy_status_t proxy_get_property(const char *path, size_t path_size, uint8_t **return_value,
                                  size_t *return_size);
PROXY_IMPORT(proxy_set_property)
proxy_status_t proxy_set_property(const char *path, size_t path_size, const uint8_t *value,
                                  size_t value_size);

/* Out-of-band HTTP calls; the answer arrives in proxy_on_http_call_response. */
PROXY_IMPORT(proxy_http_call)
proxy_status_t proxy_http_call(const char *upstream, size_t upstream_size,
                               const uint8_t *serialized_headers, size_t headers_size,
                               const uint8_t *body, size_t body_size,
                               const uint8_t *serialized_trailers, size_t trailers_size,
                               uint32_t timeout_ms, uint32_t *return_token);

/* Shared data and queues (process-wide). */
PROXY_IMPORT(proxy_get_shared_data)
proxy_status_t proxy_get_shared_data(const char *key, size_t key_size, uint8_t **return_value,
                                     size_t *return_size, uint32_t *return_cas);
PROXY_IMPORT(proxy_set_shared_data)
proxy_status_t proxy_set_shared_data(const char *key, size_t key_size, const uint8_t *value,
                                     size_t value_size, uint32_t cas);
PROXY_IMPORT(proxy_register_shared_queue)
proxy_status_t proxy_register_shared_queue(const char *name, size_t name_size,
                                           uint32_t *return_queue_id);
PROXY_IMPORT(proxy_resolve_shared_queue)
proxy_status_t proxy_resolve_shared_queue(const char *vm_id, size_t vm_id_size, const char *name,
                                          size_t name_size, uint32_t *return_queue_id);
PROXY_IMPORT(proxy_enqueue_shared_queue)
proxy_status_t proxy_enqueue_shared_queue(uint32_t queue_id, const uint8_t *value,
                                          size_t value_size);
PROXY_IMPORT(proxy_dequeue_shared_queue)
proxy_status_t proxy_dequeue_shared_queue(uint32_t queue_id, uint8_t **return_value,
                                          size_t *return_size);

/* Metrics. */
PROXY_IMPORT(proxy_define_metric)
proxy_status_t proxy_define_metric(proxy_metric_type_t type, const char *name, size_t name_size,
                                   uint32_t *return_metric_id);
PROXY_IMPORT(proxy_increment_metric)
proxy_status_t proxy_increment_metric(uint32_t metric_id, int64_t delta);
PROXY_IMPORT(proxy_record_metric)
proxy_status_t proxy_record_metric(uint32_t metric_id, uint64_t value);
PROXY_IMPORT(proxy_get_metric)
proxy_status_t proxy_get_metric(uint32_t metric_id, uint64_t *return_value);

/* Host extensions, e.g. Portcullis's shared rate-limit buckets. */
PROXY_IMPORT(proxy_call_foreign_function)
proxy_status_t proxy_call_foreign_function(const char *name, size_t name_size,
                                           const uint8_t *arguments, size_t arguments_size,
                                           uint8_t **return_results, size_t *return_size);

#undef PROXY_IMPORT

/* === Exports === */

/** Exports the function defined next under the name `name`, whatever its C name. */
#define PROXY_EXPORT(name) __attribute__((export_name(#name)))

/**
 * Defines the two exports every filter needs: the ABI version marker by which the host
 * recognises a proxy-wasm 0.2.1 module, and the allocator through which the host hands
 * the filter memory (malloc; the filter free()s what it receives).
 */
#define PROXY_WASM_ABI_0_2_1()                                                  \
  PROXY_EXPORT(proxy_abi_version_0_2_1) void proxy_wasm_abi_version_0_2_1(void) {} \
  PROXY_EXPORT(proxy_on_memory_allocate) void *proxy_wasm_on_memory_allocate(size_t size) { \
    return malloc(size);                                                        \
  }                                                                             \
  typedef int proxy_wasm_abi_defined_t

/* === Callbacks a filter may export (all optional; a missing one is a no-op) ===
 *
 * void           proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id);
 *                  parent 0: a root context (one per filter per VM), else an HTTP stream.
 * uint32_t       proxy_on_vm_start(uint32_t root_context_id, size_t vm_config_size);
 * uint32_t       proxy_on_configure(uint32_t root_context_id, size_t plugin_config_size);
 *                  return 0 to refuse the configuration: the load fails, naming the filter.
 * void           proxy_on_tick(uint32_t root_context_id);
 * proxy_action_t proxy_on_request_headers(uint32_t context_id, size_t num_headers, uint32_t end_of_stream);
 * proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size, uint32_t end_of_stream);
 * proxy_action_t proxy_on_request_trailers(uint32_t context_id, size_t num_trailers);
 * proxy_action_t proxy_on_response_headers(uint32_t context_id, size_t num_headers, uint32_t end_of_stream);
 * proxy_action_t proxy_on_response_body(uint32_t context_id, size_t body_size, uint32_t end_of_stream);
 * proxy_action_t proxy_on_response_trailers(uint32_t context_id, size_t num_trailers);
 * void           proxy_on_http_call_response(uint32_t root_or_stream_id, uint32_t token,
 *                                            size_t num_headers, size_t body_size, size_t num_trailers);
 * void           proxy_on_queue_ready(uint32_t root_context_id, uint32_t queue_id);
 * uint32_t       proxy_on_done(uint32_t context_id);   return 1 when done.
 * void           proxy_on_log(uint32_t context_id);
 * void           proxy_on_delete(uint32_t context_id);
 */

#ifdef __cplusplus
}
#endif

#endif /* PORTCULLIS_PROXY_WASM_H */
