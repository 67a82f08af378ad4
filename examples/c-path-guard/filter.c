/*
 * A path guard in plain C: requests whose path starts with the configured prefix
 * (default "/admin") are answered 403 by the filter itself; every other request
 * goes on upstream with `x-c-filter: passed` added.
 *
 * The configuration is the prefix, as a YAML string:  config: /private
 * Build: ./build.sh (Debian's clang, lld and wasi-libc).
 */
#include <stdbool.h>
#include <string.h>

#include "proxy_wasm.h"

PROXY_WASM_ABI_0_2_1();

/* One VM serves one filter, and each worker has its own VM: plain globals are
 * per-filter, per-thread state, which is what the root context's configuration is. */
static char prefix[256] = "/admin";
static size_t prefix_len = 6;

static void log_str(proxy_log_level_t level, const char *msg) {
  proxy_log(level, msg, strlen(msg));
}

PROXY_EXPORT(proxy_on_configure)
uint32_t on_configure(uint32_t root_context_id, size_t config_size) {
  (void)root_context_id;
  if (config_size == 0) return 1; /* keep the default */
  uint8_t *data = NULL;
  size_t size = 0;
  if (proxy_get_buffer_bytes(PROXY_BUFFER_PLUGIN_CONFIGURATION, 0, config_size, &data, &size) !=
      PROXY_STATUS_OK) {
    log_str(PROXY_LOG_ERROR, "c-path-guard: cannot read the configuration");
    return 0;
  }
  bool ok = size > 0 && size < sizeof(prefix) && data[0] == '/';
  if (ok) {
    memcpy(prefix, data, size);
    prefix_len = size;
  } else {
    /* Refusing the configuration fails the load, and the proxy keeps its old one. */
    log_str(PROXY_LOG_ERROR, "c-path-guard: config must be a path prefix starting with '/'");
  }
  free(data);
  return ok ? 1 : 0;
}

PROXY_EXPORT(proxy_on_request_headers)
proxy_action_t on_request_headers(uint32_t context_id, size_t num_headers,
                                  uint32_t end_of_stream) {
  (void)context_id, (void)num_headers, (void)end_of_stream;
  uint8_t *path = NULL;
  size_t path_len = 0;
  if (proxy_get_header_map_value(PROXY_MAP_HTTP_REQUEST_HEADERS, ":path", 5, &path, &path_len) !=
      PROXY_STATUS_OK) {
    return PROXY_ACTION_CONTINUE;
  }
  bool blocked = path_len >= prefix_len && memcmp(path, prefix, prefix_len) == 0;
  free(path);

  if (!blocked) {
    proxy_add_header_map_value(PROXY_MAP_HTTP_REQUEST_HEADERS, "x-c-filter", 10, "passed", 6);
    return PROXY_ACTION_CONTINUE;
  }

  /* Extra response headers, serialized as the ABI wants: one pair,
   * x-blocked-by: c-path-guard. */
  static const char key[] = "x-blocked-by", value[] = "c-path-guard";
  uint8_t headers[4 + 8 + sizeof(key) + sizeof(value)];
  uint32_t n = 1, klen = sizeof(key) - 1, vlen = sizeof(value) - 1;
  memcpy(headers, &n, 4); /* wasm32 is little-endian, as the ABI wants */
  memcpy(headers + 4, &klen, 4);
  memcpy(headers + 8, &vlen, 4);
  memcpy(headers + 12, key, sizeof(key));                  /* with its NUL */
  memcpy(headers + 12 + sizeof(key), value, sizeof(value)); /* with its NUL */

  static const char body[] = "forbidden by c-path-guard\n";
  proxy_send_local_response(403, "c-path-guard", 12, (const uint8_t *)body, sizeof(body) - 1,
                            headers, sizeof(headers), -1);
  /* The local response replaces the rest of the chain and the upstream; pausing
   * tells the host not to go on with this request. */
  return PROXY_ACTION_PAUSE;
}
