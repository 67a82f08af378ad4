# The builds and checks of benches/compat/thirdparty (sourced by it: see there). Each
# case builds its filter, serves it, tries what the filter's README shows and adds a
# row: result `as Envoy` when what we saw is what Envoy documents, else `differs` or
# `fails`, with what we saw in the notes.

rust_sdk=proxy-wasm-rust-sdk

# cargo_wasm DIR TARGET_NAME [cargo args...]: a release wasm32-wasip1 build of the crate
# in DIR; sets $wasm, or returns 1 (the log is in $WORK).
cargo_wasm() {
  local dir=$1 name=$2 target="$BUILD/$3"
  shift 3
  (cd "$dir" && CARGO_TARGET_DIR="$target" nice -n 5 cargo build --release \
    --target wasm32-wasip1 "$@") >"$WORK/build-$name.log" 2>&1 || return 1
  wasm="$target/wasm32-wasip1/release/$name.wasm"
  [ -f "$wasm" ]
}

# sdk_example NAME: builds examples/NAME of the Rust SDK; sets $wasm.
sdk_example() {
  cargo_wasm "$SRC/$rust_sdk/examples/$1" "proxy_wasm_example_$1" rustsdk
}

rust_row() { row "$1" "$rust_sdk@$(commit $rust_sdk)" "Rust, proxy-wasm-rust-sdk" "$2" "$3" "$4"; }

case_hello_world() {
  local tried="as a service (Envoy: WasmService singleton); waited 6 s"
  sdk_example hello_world || { rust_row hello_world "$tried" "not built" "$WORK/build-proxy_wasm_example_hello_world.log"; return; }
  serve rust_row hello_world hello_world "services: [{ name: hello, wasm: $wasm }]
routes: [{ name: r, upstream: echo@internal }]" || return
  sleep 6
  local hello ticks
  hello=$(grep -c 'Hello, World!' "$log") ticks=$(grep -c 'your lucky number is' "$log")
  stop
  [ "$hello" = 1 ] && [ "$ticks" -ge 1 ]
  verdict $? rust_row hello_world "as Envoy" "\"Hello, World!\" once, then a lucky number every 5 s ($ticks tick(s) in 6 s; random bytes from WASI)" "Hello lines: $hello, tick lines: $ticks"
}

case_http_headers() {
  local tried="GET /hello, GET /other"
  sdk_example http_headers || { rust_row http_headers "$tried" "not built" ""; return; }
  serve rust_row http_headers http_headers "filters: [{ name: h, wasm: $wasm }]
routes: [{ name: r, filters: [h], upstream: echo@internal }]" || return
  local hello other
  hello=$(curl -si "$url/hello" | tr -d '\r')
  other=$(status_of "$url/other")
  sleep 0.3
  local logged completed
  logged=$(grep -c -- '-> :authority: 127.0.0.1' "$log") completed=$(grep -c 'completed\.' "$log")
  stop
  grep -q '^Hello, World!$' <<<"$hello" && grep -qi '^hello: World' <<<"$hello" && [ "$other" = 200 ] && [ "$logged" -ge 2 ] && [ "$completed" -ge 2 ]
  verdict $? rust_row http_headers "as Envoy" "/hello answered by the filter (\`hello: World\`, body \"Hello, World!\"); others reach the upstream; every header logged both ways, \"completed\" from on_log" "/hello: $(head -1 <<<"$hello"); /other: $other; header lines: $logged; completed: $completed"
}

case_http_auth_random() {
  local tried="20 × GET /headers; the callout goes to a local httpbin stand-in (/bytes/1)"
  sdk_example http_auth_random || { rust_row http_auth_random "$tried" "not built" ""; return; }
  start_server http
  serve rust_row http_auth_random http_auth_random "filters: [{ name: a, wasm: $wasm }]
routes: [{ name: r, filters: [a], upstream: httpbin }]
upstreams: [{ name: httpbin, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local seen forbidden powered
  seen=$(tally 20 status_of "$url/headers")
  forbidden=$(curl -s "$url/headers" "$url/headers" "$url/headers" "$url/headers" | grep -c 'Access forbidden.')
  powered=$(curl -si "$url/headers" | grep -ci '^powered-by: proxy-wasm')
  stop
  [[ "$seen" == *200=* && "$seen" == *403=* && "$powered" = 1 ]]
  verdict $? rust_row http_auth_random "as Envoy" "statuses: $seen (random, as documented); 403 body \"Access forbidden.\"; \`powered-by: proxy-wasm\` on both" "statuses: $seen; powered-by lines: $powered; forbidden bodies in 4: $forbidden"
}

case_http_body() {
  local tried="GET /hello, GET /secret from a local upstream"
  sdk_example http_body || { rust_row http_body "$tried" "not built" ""; return; }
  start_server http
  serve rust_row http_body http_body "filters: [{ name: b, wasm: $wasm }]
routes: [{ name: r, filters: [b], upstream: app }]
upstreams: [{ name: app, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local hello secret
  hello=$(curl -s "$url/hello") secret=$(curl -s "$url/secret")
  stop
  [ "$hello" = "hello from /hello" ] && [[ "$secret" == "Original message body ("*" bytes) redacted." ]]
  verdict $? rust_row http_body "as Envoy" "/hello untouched; /secret: \"$secret\" (body paused until end of stream, then replaced)" "/hello: $hello; /secret: $secret"
}

case_http_config() {
  local tried="config: a YAML string (Envoy: StringValue); GET /hello"
  sdk_example http_config || { rust_row http_config "$tried" "not built" ""; return; }
  serve rust_row http_config http_config "filters: [{ name: c, wasm: $wasm, config: 'The secret to life is meaningless unless you discover it yourself' }]
routes: [{ name: r, filters: [c], upstream: echo@internal }]" || return
  local got
  got=$(curl -si "$url/hello" | tr -d '\r' | grep -i '^custom-header:')
  stop
  [ "$got" = "custom-header: The secret to life is meaningless unless you discover it yourself" ]
  verdict $? rust_row http_config "as Envoy" "response carries \`$got\`" "custom-header line: '$got'"
}

case_grpc_auth_random() {
  local tried="20 gRPC calls hello.HelloService/SayHello through the proxy (h2c), callout to a local grpcbin stand-in; one curl GET"
  sdk_example grpc_auth_random || { rust_row grpc_auth_random "$tried" "not built" ""; return; }
  start_server grpc
  serve rust_row grpc_auth_random grpc_auth_random "filters: [{ name: g, wasm: $wasm }]
routes: [{ name: r, filters: [g], upstream: grpcbin }]
upstreams: [{ name: grpcbin, protocol: h2c, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local lport=${url##*:} seen plain details
  seen=$(tally 20 "$PYTHON" "$here/servers.py" grpc-client "$lport" /hello.HelloService/SayHello)
  details=$(for _ in 1 2 3 4 5 6; do "$PYTHON" "$here/servers.py" grpc-client "$lport" /hello.HelloService/SayHello 2>/dev/null; done | grep -m1 ABORTED)
  plain=$(curl -s -w ' %{http_code}' "$url/x" | tr -d '\n')
  stop
  [[ "$seen" == *OK=* && "$details" == "ABORTED Aborted by Proxy-Wasm!" && "$plain" == "Service accessible only to gRPC clients."*503 ]]
  verdict $? rust_row grpc_auth_random "as Envoy" "calls: $seen — ABORTED \"Aborted by Proxy-Wasm!\" (random, as documented); plain HTTP gets 503 and the README's text" "calls: $seen; aborted: $details; plain GET: $plain"
}

case_envoy_filter_metadata() {
  local tried="GET / with and without x-custom-metadata (no Lua filter here)"
  sdk_example envoy_filter_metadata || { rust_row envoy_filter_metadata "$tried" "not built" ""; return; }
  serve rust_row envoy_filter_metadata envoy_filter_metadata "filters: [{ name: m, wasm: $wasm }]
routes: [{ name: r, filters: [m], upstream: echo@internal }]" || return
  local plain with
  plain=$(status_of "$url/") with=$(status_of -H 'x-custom-metadata: some-value' "$url/")
  stop
  [ "$plain" = 200 ] && [ "$with" = 200 ]
  verdict $? rust_row envoy_filter_metadata "as Envoy without its Lua filter" "both reach the upstream: \`metadata.filter_metadata.*\` is not found (Portcullis has no Lua filter or dynamic metadata), so the filter continues, as Envoy does when the metadata is absent" "statuses: $plain / $with"
}

cpp_row() { row "$1" "proxy-wasm-cpp-sdk@$(commit proxy-wasm-cpp-sdk)" "C++, proxy-wasm-cpp-sdk" "$2" "$3" "$4"; }

case_cpp_http_example() {
  local tried="GET / to echo@internal; clang++ 14 --target=wasm32-wasi (no Emscripten), no protobuf"
  local wasm="$BUILD/cpp/http_wasm_example.wasm" src="$SRC/proxy-wasm-cpp-sdk"
  [ -d "$src" ] || { cpp_row http_wasm_example.cc "$tried" "not fetched" ""; return; }
  mkdir -p "$BUILD/cpp"
  # The SDK builds with Emscripten, which includes <cerrno> for it, resolves the host
  # imports through a JS library and exports malloc (-sEXPORTED_FUNCTIONS=_malloc);
  # with plain clang and wasi-libc all three are said here.
  clang++ --target=wasm32-wasi -O2 -std=c++17 -mexec-model=reactor -fno-exceptions -include cerrno \
    -I "$src" -Wl,--export-dynamic -Wl,--export=malloc -Wl,--allow-undefined -Wl,--strip-all -o "$wasm" \
    "$src/example/http_wasm_example.cc" "$src/proxy_wasm_intrinsics.cc" >"$WORK/build-cpp.log" 2>&1 \
    || { cpp_row http_wasm_example.cc "$tried" "not built" "see build-cpp.log"; return; }
  serve cpp_row http_wasm_example.cc cpp "filters: [{ name: cpp, wasm: $wasm }]
routes: [{ name: r, filters: [cpp], upstream: echo@internal }]" || return
  local got body
  got=$(curl -si "$url/" | tr -d '\r')
  body=$(sed '1,/^$/d' <<<"$got")
  sleep 1.2
  local ticks=$(grep -c onTick "$log") logs=$(grep -c 'onLog\|onDone\|onDelete' "$log")
  stop
  grep -qi '^x-wasm-custom: FOO' <<<"$got" && grep -qi '^content-type: text/plain; charset=utf-8' <<<"$got" && [[ "$body" == "Hello, world"* ]]
  verdict $? cpp_row http_wasm_example.cc "as Envoy" "\`x-wasm-custom: FOO\`, content-type replaced, first 12 body bytes replaced by \"Hello, world\" (Envoy's set_buffer_bytes(0, 12)); onTick lines: $ticks, onLog/onDone/onDelete lines: $logs" "$(head -1 <<<"$got"); body starts: ${body:0:40}"
}

# higress_plugin NAME: builds plugins/wasm-rust/extensions/NAME of Higress with its
# SDK fork patched in by path (its git dependency); sets $wasm.
higress_plugin() {
  local patch="patch.\"https://github.com/higress-group/proxy-wasm-rust-sdk\".proxy-wasm.path=\"$SRC/higress-sdk\""
  [ -d "$SRC/higress" ] && [ -d "$SRC/higress-sdk" ] || return 2
  cargo_wasm "$SRC/higress/plugins/wasm-rust/extensions/$1" "${1//-/_}" higress --config "$patch"
}
higress_row() {
  row "$1" "higress@$(commit higress), SDK fork@$(commit higress-sdk)" "Rust, Higress SDK fork (ABI 0.2.100)" "$2" "$3" "$4"
}

case_higress_say_hello() {
  local tried="global config, a \`_match_route_\` rule and a \`_match_domain_\` rule"
  higress_plugin say-hello || { higress_row say-hello "$tried" "not built" "$([ -d "$SRC/higress" ] || echo 'not fetched')"; return; }
  serve higress_row say-hello say_hello "filters: [{ name: hi, wasm: $wasm, config: { name: Portcullis, _rules_: [{ _match_route_: [two], name: route-two }, { _match_domain_: ['*.example.com'], name: example } ] } }]
routes:
  - { name: one, filters: [hi], upstream: echo@internal }
  - { name: two, match: { path_prefix: /two }, filters: [hi], upstream: echo@internal }" || return
  local g r d
  g=$(curl -s "$url/") r=$(curl -s "$url/two") d=$(curl -s -H 'host: api.example.com' "$url/")
  stop
  [ "$g" = "Hello, Portcullis!" ] && [ "$r" = "Hello, route-two!" ] && [ "$d" = "Hello, example!" ]
  verdict $? higress_row say-hello "as Envoy" "\"$g\", \"$r\" (by \`route_name\`), \"$d\" (by \`:authority\`); the local reply wins although the filter returns Continue after it, as on Envoy" "global: '$g'; route: '$r'; domain: '$d'"
}

case_higress_request_block() {
  local tried="block_urls / block_headers / block_bodies, case-insensitive, from its README"
  higress_plugin request-block || { higress_row request-block "$tried" "not built" ""; return; }
  serve higress_row request-block request_block "filters: [{ name: rb, wasm: $wasm, config: { block_urls: [swagger.html, foo=bar], block_headers: [example-key, example-value], block_bodies: [hello world], case_sensitive: false, blocked_message: blocked } }]
routes: [{ name: r, filters: [rb], upstream: echo@internal }]" || return
  local ok url1 url2 h1 h2 b1 b2 body
  ok=$(status_of "$url/fine") url1=$(status_of "$url/?foo=Bar") url2=$(status_of "$url/Swagger.html")
  h1=$(status_of -H 'example-key: 123' "$url/") h2=$(status_of -H 'my-header: example-value' "$url/")
  b1=$(status_of -d 'Hello World' "$url/") b2=$(status_of -d 'nothing to see' "$url/")
  body=$(curl -s "$url/Swagger.html")
  stop
  local seen="ok=$ok url=$url1,$url2 header=$h1,$h2 body=$b1 clean-body=$b2"
  [ "$seen" = "ok=200 url=403,403 header=403,403 body=403 clean-body=200" ] && [ "$body" = blocked ]
  verdict $? higress_row request-block "as Envoy" "every README example blocked with 403 and the configured message; others pass (URL, headers and the buffered whole body checked)" "$seen; blocked body: '$body'"
}

shim_row() { row wasm-shim "wasm-shim@$(commit wasm-shim)" "Rust, Kuadrant's proxy-wasm-rust-sdk fork" "$@"; }

case_wasm_shim() {
  local tried="build only" src="$SRC/wasm-shim"
  [ -d "$src" ] || { shim_row "$tried" "not fetched" ""; return; }
  # Its dependencies are git revisions; they are patched in from SRC by path. The
  # SDK fork (Kuadrant/proxy-wasm-rust-sdk@6ceedbb) could not be fetched: the
  # upstream SDK at v0.2.5 stands in, to see how far it gets.
  local p1="patch.\"https://github.com/Kuadrant/proxy-wasm-rust-sdk.git\".proxy-wasm.path=\"$SRC/rust-sdk-0.2.5\""
  local p2="patch.\"https://github.com/cel-rust/cel-rust.git\".cel.path=\"$SRC/cel-rust/cel\""
  # A dev-dependency only (tests), also a git revision that could not be fetched.
  sed -i '/proxy-wasm-test-framework/d' "$src/crates/wasm-shim/Cargo.toml"
  if cargo_wasm "$src" wasm_shim shim -p wasm-shim --config "$p1" --config "$p2"; then
    shim_row "$tried" "built" "with the upstream SDK v0.2.5 in place of Kuadrant's fork: not run (needs Limitador / Authorino gRPC services)"
  else
    shim_row "$tried" "not built" "$(grep -c '^error\[' "$WORK/build-wasm_shim.log") compile errors against the upstream SDK v0.2.5 standing in for Kuadrant's fork@6ceedbb (not fetchable here), e.g. \`get_plugin_configuration\` returns a Result in the fork"
  fi
}

# want CASE: whether $ONLY (space-separated case names; empty: all) names it.
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

run_all() {
  local c
  for c in hello_world http_headers http_auth_random http_body http_config grpc_auth_random envoy_filter_metadata; do
    want $c || continue
    if [ -d "$SRC/$rust_sdk" ]; then "case_$c"; else rust_row $c "" "not fetched" ""; fi
  done
  go_cases
  as_cases
  for c in cpp_http_example higress_say_hello higress_request_block wasm_shim; do
    want $c && "case_$c"
  done
}
