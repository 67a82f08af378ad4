// A Portcullis (proxy-wasm) filter in Go, written against the ABI itself with
// //go:wasmexport and //go:wasmimport (Go >= 1.24): no SDK, no module to download.
//
//   - Every request goes upstream with `x-go: <configuration>` added (a YAML string,
//     handed over as its raw bytes; none: "hello from Go").
//   - `/gopher` is answered by the filter itself: 200, without reaching the upstream.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
package main

import "unsafe"

// main is unused: the module is a WASI reactor whose exports the host calls.
func main() {}

// The ABI's numbers this filter uses (proxy-wasm 0.2.1).
const (
	statusOK          = 0
	mapRequestHeaders = 0
	bufPluginConfig   = 7
	actionContinue    = 0
	actionPause       = 1
	logError          = 4
	noGrpcStatus      = -1
	configuredOK      = 1
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(buf, start, max uint32, data unsafe.Pointer, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, data unsafe.Pointer, size unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsSize uint32, body unsafe.Pointer, bodySize uint32, headers unsafe.Pointer, headersSize uint32, grpcStatus int32) uint32

// live keeps the buffers the host asked for reachable until the filter has read them:
// Go's collector does not move objects, but it would free one nobody points to.
var live = map[uintptr][]byte{}

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		return 0
	}
	b := make([]byte, size)
	p := uintptr(unsafe.Pointer(&b[0]))
	live[p] = b
	return uint32(p)
}

// take hands back (and forgets) a buffer the host filled through onMemoryAllocate.
func take(ptr, size uint32) []byte {
	if ptr == 0 || size == 0 {
		return nil
	}
	b, ok := live[uintptr(ptr)]
	if !ok {
		return nil
	}
	delete(live, uintptr(ptr))
	return b[:size]
}

// The configured greeting, shared by every request of this VM.
var greeting = "hello from Go"

//go:wasmexport proxy_on_context_create
func onContextCreate(context, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func onVMStart(root, size uint32) uint32 { return configuredOK }

//go:wasmexport proxy_on_configure
func onConfigure(root, size uint32) uint32 {
	if size == 0 {
		return configuredOK
	}
	var ptr, n uint32
	if proxyGetBufferBytes(bufPluginConfig, 0, size, unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		logf("cannot read the configuration")
		return 0
	}
	if cfg := take(ptr, n); len(cfg) > 0 {
		greeting = string(cfg)
	}
	return configuredOK
}

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(context, headers, endOfStream uint32) uint32 {
	if requestHeader(":path") == "/gopher" {
		body := []byte("answered by a Go filter\n")
		// One header, `content-type: text/plain`, in the ABI's pair encoding.
		pairs := encodePairs([][2]string{{"content-type", "text/plain"}})
		details := []byte("go-gopher")
		if proxySendLocalResponse(200, unsafe.Pointer(&details[0]), uint32(len(details)),
			unsafe.Pointer(&body[0]), uint32(len(body)),
			unsafe.Pointer(&pairs[0]), uint32(len(pairs)), noGrpcStatus) != statusOK {
			logf("cannot answer locally")
			return actionContinue
		}
		// The local response replaces the upstream's: stop this request here.
		return actionPause
	}
	key, value := []byte("x-go"), []byte(greeting)
	if len(value) == 0 {
		value = []byte("hello from Go")
	}
	if proxyAddHeaderMapValue(mapRequestHeaders, unsafe.Pointer(&key[0]), uint32(len(key)),
		unsafe.Pointer(&value[0]), uint32(len(value))) != statusOK {
		logf("cannot add x-go")
	}
	return actionContinue
}

//go:wasmexport proxy_on_done
func onDone(context uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func onDelete(context uint32) {}

// requestHeader is the first value of request header `name`, "" when absent.
func requestHeader(name string) string {
	key := []byte(name)
	var ptr, n uint32
	if proxyGetHeaderMapValue(mapRequestHeaders, unsafe.Pointer(&key[0]), uint32(len(key)),
		unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		return ""
	}
	return string(take(ptr, n))
}

// encodePairs is the ABI's header map encoding: the pair count, each name's and
// value's length, then every name and value followed by a NUL (all little-endian u32).
func encodePairs(pairs [][2]string) []byte {
	out := le32(nil, uint32(len(pairs)))
	for _, p := range pairs {
		out = le32(le32(out, uint32(len(p[0]))), uint32(len(p[1])))
	}
	for _, p := range pairs {
		out = append(append(out, p[0]...), 0)
		out = append(append(out, p[1]...), 0)
	}
	return out
}

func le32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

func logf(msg string) {
	b := []byte("go-headers: " + msg)
	proxyLog(logError, unsafe.Pointer(&b[0]), uint32(len(b)))
}
