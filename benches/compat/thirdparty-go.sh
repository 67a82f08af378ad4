# The Go SDK's examples (github.com/proxy-wasm/proxy-wasm-go-sdk, Go ≥ 1.24,
# GOOS=wasip1 -buildmode=c-shared) for benches/compat/thirdparty, which sources this.
# The Go module proxy is not needed: each example's go.sum is there and it imports
# only the SDK (a `replace` to the checkout), except http_headers and json_validation
# (tidwall/gjson), which are reported as not built when the proxy is unreachable.

go_sdk=proxy-wasm-go-sdk

# go_example NAME: builds examples/NAME; sets $wasm.
go_example() {
  wasm="$BUILD/go/$1.wasm"
  mkdir -p "$BUILD/go"
  (cd "$SRC/$go_sdk/examples/$1" && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm \
    nice -n 5 go build -buildmode=c-shared -o "$wasm" ./main.go)
}
go_row() { row "$1 (Go)" "$go_sdk@$(commit $go_sdk)" "Go $(go env GOVERSION 2>/dev/null), proxy-wasm-go-sdk" "$2" "$3" "$4"; }

# go_serve NAME YAML: builds and serves example NAME (see build_serve).
go_serve() { build_serve go_example go_row "$1" "go_$1" "$2"; }

case_go_helloworld() {
  local tried="on a route, no traffic, 2.5 s"
  go_serve helloworld "filters: [{ name: hello, wasm: @WASM@ }]
routes: [{ name: r, filters: [hello], upstream: echo@internal }]" || return
  sleep 2.5
  local start ticks
  start=$(grep -c 'OnPluginStart from Go!' "$log") ticks=$(grep -c 'OnTick' "$log")
  stop
  [ "$start" -ge 1 ] && [ "$ticks" -ge 2 ]
  verdict $? go_row helloworld "as Envoy" "OnPluginStart logged, then OnTick every second without a request ($ticks lines)" "OnPluginStart lines: $start, OnTick lines: $ticks"
}

case_go_http_auth_random() {
  local tried="20 × GET /uuid; the callout (the request's own headers) to a local httpbin stand-in"
  start_server http
  go_serve http_auth_random "filters: [{ name: a, wasm: @WASM@ }]
routes: [{ name: r, filters: [a], upstream: httpbin }]
upstreams: [{ name: httpbin, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local seen denied
  seen=$(tally 20 status_of "$url/uuid")
  denied=$(for _ in 1 2 3 4 5 6; do curl -s -D - "$url/uuid"; done | tr -d '\r' | grep -c '^powered-by: proxy-wasm-go-sdk!!')
  stop
  [[ "$seen" == *200=* && "$seen" == *403=* && "$denied" -ge 1 ]]
  verdict $? go_row http_auth_random "as Envoy" "statuses: $seen (by the answer's hash, as documented); 403 carries \`powered-by: proxy-wasm-go-sdk!!\`" "statuses: $seen; denied with header: $denied"
}

case_go_http_body() {
  local tried="PUT with buffer-operation prepend / append / replace, on the request and on the response"
  start_server http
  go_serve http_body "filters: [{ name: b, wasm: @WASM@ }]
routes: [{ name: r, filters: [b], upstream: app }]
upstreams: [{ name: app, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local got="" op at
  for at in request response; do
    for op in prepend append replace; do
      got+="$(curl -s -XPUT "$url/" --data '[initial body]' -H "buffer-operation: $op" -H "buffer-replace-at: $at")|"
    done
  done
  local nobody=$(curl -s "$url/")
  stop
  local want="[this is prepended body][initial body]|[initial body][this is appended body]|[this is replaced body]|"
  [ "$got" = "$want$want" ] && [ "$nobody" = "content must be provided" ]
  verdict $? go_row http_body "as Envoy" "the six README outputs exactly; a GET without body gets its 400" "got: $got; bodiless GET: $nobody"
}

case_go_vm_plugin_configuration() {
  local tried="config: the README's plugin configuration (a JSON string)"
  go_serve vm_plugin_configuration "filters: [{ name: c, wasm: @WASM@, root_id: my_root_id, config: '{\"name\": \"plugin configuration\"}' }]
routes: [{ name: r, filters: [c], upstream: echo@internal }]" || return
  sleep 0.3
  local plugin vm
  plugin=$(grep -c 'plugin config: {"name": "plugin configuration"}' "$log") vm=$(grep -o 'vm config: .*filter=' "$log" | head -1)
  stop
  [ "$plugin" -ge 1 ]
  verdict $? go_row vm_plugin_configuration "partial" "plugin configuration read as on Envoy; the VM configuration is empty (\`${vm% filter=}\`): Portcullis has no \`vm_config.configuration\` setting" "plugin config lines: $plugin; $vm"
}

case_go_shared_data() {
  local tried="5 requests"
  go_serve shared_data "filters: [{ name: s, wasm: @WASM@ }]
routes: [{ name: r, filters: [s], upstream: echo@internal }]" || return
  for _ in 1 2 3 4 5; do curl -s -o /dev/null "$url/"; done
  sleep 0.2
  local values
  values=$(grep -o 'shared value: [0-9]*' "$log" | awk '{printf "%s ", $3}')
  stop
  [ "$values" = "1 2 3 4 5 " ]
  verdict $? go_row shared_data "as Envoy" "\"shared value: 1\" … 5, compare-and-swap on shared data" "values logged: $values"
}

case_go_metrics() {
  local tried="2 × GET with my-custom-header: foo, then the admin /metrics"
  go_serve metrics "filters: [{ name: m, wasm: @WASM@ }]
routes: [{ name: r, filters: [m], upstream: echo@internal }]" || return
  curl -s -o /dev/null -H 'my-custom-header: foo' "$url/"
  curl -s -o /dev/null -H 'my-custom-header: foo' "$url/"
  local line
  line=$(curl -s "${admin_url}/metrics" | grep '^custom_header_value_counts')
  stop
  [[ "$line" == *" 2" ]]
  verdict $? go_row metrics "as Envoy, named differently" "\`$line\`: counted; Envoy shows \`custom_header_value_counts{value=\"foo\",reporter=\"wasmgosdk\"}\` because its envoy.yaml declares tag-extraction regexes, which Portcullis does not have" "metric line: '$line'"
}

case_go_dispatch_call_on_tick() {
  local tried="no traffic, 1 s; callouts to a local upstream \`web_service\`"
  start_server http
  go_serve dispatch_call_on_tick "filters: [{ name: d, wasm: @WASM@ }]
routes: [{ name: r, filters: [d], upstream: echo@internal }]
upstreams: [{ name: web_service, targets: [{ address: 127.0.0.1:$port }] }]" || return
  sleep 1
  local called answered
  called=$(grep -c 'called [0-9]* for contextID' "$log") answered=$(grep -c 'response header for the dispatched call: :status: 200' "$log")
  stop
  [ "$called" -ge 3 ] && [ "$answered" -ge 3 ]
  verdict $? go_row dispatch_call_on_tick "as Envoy" "$called answers in 1 s (every 100 ms, from the root context, answers delivered to it)" "answers: $called, with :status 200: $answered"
}

case_go_postpone_requests() {
  local tried="3 GETs, each to be held until the next tick (1 s), then 1.2 s more"
  go_serve postpone_requests "filters: [{ name: p, wasm: @WASM@ }]
routes: [{ name: r, filters: [p], upstream: echo@internal }]" || return
  local seen took
  took=$(curl -s -o /dev/null -w '%{time_total}' "$url/")
  seen=$(tally 2 status_of "$url/")
  sleep 1.2
  local postponed resumed
  postponed=$(grep -c 'postpone request with contextID' "$log") resumed=$(grep -c 'resume request with contextID' "$log")
  stop
  [ "$seen" = "200=2" ] && [ "$postponed" = 3 ] && [ "$resumed" = 3 ] && awk "BEGIN {exit !($took >= 0.1)}"
  verdict $? go_row postpone_requests "as Envoy" "each postponed, then resumed by the root context's tick; the first took ${took}s" "answered at once (${took}s, statuses $seen), not held: a header phase paused with no callout outstanding continues here, and the tick's SetEffectiveContext(stream) + ResumeHttpRequest ($resumed resume lines) acts on no stream. Envoy keeps the stream paused until another context resumes it. Not small: a stream's data is in the VM only during its own callbacks"
}

case_go_http_routing() {
  local tried="20 × GET; routes by host \`primary\` and \`primary-canary\`, as its envoy.yaml's virtual hosts"
  go_serve http_routing "filters: [{ name: rt, wasm: @WASM@ }]
routes:
  - { name: primary, match: { host: primary }, filters: [rt], upstream: echo@internal }
  - { name: canary, match: { host: primary-canary }, filters: [rt], upstream: echo@internal }" || return
  local routes
  routes=$(tally 20 sh -c "curl -s -H 'host: primary' '$url/' | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)[\"route\"])'")
  stop
  if [[ "$routes" == *canary=* ]]; then
    go_row http_routing "$tried" "as Envoy" "routes: $routes"
  else
    go_row http_routing "$tried" "differs" "routes: $routes — the filter appends \`-canary\` to \`:authority\` (the echo shows it), but the route was chosen before the filters ran; Envoy re-picks the route when a filter changes request headers (clearRouteCache). Not small: a route owns its filter chain here"
  fi
}

go_cases() {
  local c
  for c in helloworld http_auth_random http_body vm_plugin_configuration shared_data metrics \
    dispatch_call_on_tick postpone_requests http_routing; do
    want "go_$c" || continue
    if [ -d "$SRC/$go_sdk" ]; then "case_go_$c"; else go_row $c "" "not fetched" ""; fi
  done
}
