module example.com/portcullis/go-headers

// Go 1.24 builds WASI reactors (-buildmode=c-shared with GOOS=wasip1) and has
// //go:wasmexport; the filter needs no module beyond the standard library.
go 1.24
