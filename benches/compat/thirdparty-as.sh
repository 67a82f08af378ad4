# The AssemblyScript SDK's examples (github.com/solo-io/proxy-runtime, examples/)
# for benches/compat/thirdparty, which sources this. Each is built as its README says
# (`npm ci`, then asc's release target: the npm registry must be reachable).

as_sdk=proxy-runtime

# as_example NAME: builds examples/NAME; sets $wasm.
as_example() {
  local dir="$SRC/$as_sdk/examples/$1"
  wasm="$dir/build/release.wasm"
  (cd "$dir" && { [ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund; } \
    && npx asc assembly/index.ts --target release)
}
as_row() { row "$1 (AS)" "$as_sdk@$(commit $as_sdk)" "AssemblyScript, @solo-io/proxy-runtime" "$2" "$3" "$4"; }

# as_serve NAME YAML: builds and serves example NAME (see build_serve).
as_serve() { build_serve as_example as_row "$1" "as_$1" "$2"; }

case_as_addheader() {
  local tried="root_id add_header; without and with a configuration"
  as_serve addheader "filters:
  - { name: plain, wasm: @WASM@, root_id: add_header }
  - { name: configured, wasm: @WASM@, root_id: add_header, config: portcullis }
routes:
  - { name: plain, match: { path_prefix: /plain }, filters: [plain], upstream: echo@internal }
  - { name: configured, filters: [configured], upstream: echo@internal }" || return
  local a b
  a=$(curl -si "$url/plain" | tr -d '\r' | grep -i '^hello:') b=$(curl -si "$url/" | tr -d '\r' | grep -i '^hello:')
  stop
  [ "$a" = "hello: world!" ] && [ "$b" = "hello: portcullis" ]
  verdict $? as_row addheader "as Envoy" "\`$a\` with an empty configuration, \`$b\` with one" "without: '$a'; with: '$b'"
}

case_as_auth() {
  local tried="GET /ok and /deny; the callout (the request's headers) to a local auth server (403 for /deny*)"
  start_server http
  as_serve auth "filters: [{ name: auth, wasm: @WASM@, root_id: auth, config: auth_service }]
routes: [{ name: r, filters: [auth], upstream: echo@internal }]
upstreams: [{ name: auth_service, targets: [{ address: 127.0.0.1:$port }] }]" || return
  local ok deny added hello
  ok=$(status_of "$url/ok") deny=$(status_of "$url/deny")
  added=$(curl -s "$url/ok" | grep -c '"added-header": *"authorized"')
  hello=$(curl -si "$url/ok" | tr -d '\r' | grep -ci '^hello: wasm!')
  stop
  [ "$ok" = 200 ] && [ "$deny" = 401 ] && [ "$added" = 1 ] && [ "$hello" = 1 ]
  verdict $? as_row auth "as Envoy" "allowed: 200, \`added-header: authorized\` reached the upstream, \`hello: wasm!\` on the response; denied: 401 (http_call answered on the root context, as on Envoy)" "ok: $ok, deny: $deny, added-header seen: $added, hello: $hello"
}

case_as_singleton() {
  local tried="auth_singleton as a service fetching the token every second into shared data; the filter (root_id auth) checks x-auth"
  start_server http
  as_serve singleton "services: [{ name: token, wasm: @WASM@, root_id: auth_singleton, config: auth_service }]
filters: [{ name: auth, wasm: @WASM@, root_id: auth }]
routes: [{ name: r, filters: [auth], upstream: echo@internal }]
upstreams: [{ name: auth_service, targets: [{ address: 127.0.0.1:$port }] }]" || return
  sleep 2.5
  local good bad
  good=$(status_of -H 'x-auth: foo' "$url/") bad=$(status_of -H 'x-auth: bar' "$url/")
  stop
  [ "$good" = 200 ] && [ "$bad" = 401 ]
  verdict $? as_row singleton "as Envoy" "after the first ticks: \`x-auth: foo\` 200, a wrong token 401" "x-auth foo: $good; x-auth bar: $bad"
}

as_cases() {
  local c
  for c in addheader auth singleton; do
    want "as_$c" || continue
    if [ -d "$SRC/$as_sdk" ]; then "case_as_$c"; else as_row $c "" "not fetched" ""; fi
  done
}
