module example.com/portcullis/go-headers

// Go 1.24 builds WASI reactors (-buildmode=c-shared with GOOS=wasip1), which is what
// proxy-wasm-go-sdk needs. Run `go mod tidy` once to record go.sum.
go 1.24

require github.com/proxy-wasm/proxy-wasm-go-sdk v0.0.0-20260105142703-44c7d5847745
