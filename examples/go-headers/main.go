// A Portcullis (proxy-wasm) filter in Go, on proxy-wasm-go-sdk. UNTESTED here: our CI
// machines have no Go >= 1.24 (see README.md).
//
//   - Every request goes upstream with `x-go: <configuration>` added (a YAML string,
//     handed over as its raw bytes; none: "hello from Go").
//   - `/gopher` is answered by the filter itself: 200, without reaching the upstream.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// main is unused: the module is a WASI reactor whose exports the host calls.
func main() {}

func init() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &pluginContext{greeting: "hello from Go"}
}

// pluginContext is the filter's root context: it holds the configuration.
type pluginContext struct {
	types.DefaultPluginContext
	greeting string
}

func (p *pluginContext) OnPluginStart(pluginConfigurationSize int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	// No configuration at all reads as NotFound or Empty, depending on the host.
	if err != nil && err != types.ErrorStatusNotFound && err != types.ErrorStatusEmpty {
		proxywasm.LogCriticalf("cannot read the configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if len(data) > 0 {
		p.greeting = string(data)
	}
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{greeting: p.greeting}
}

// httpContext is one request's context.
type httpContext struct {
	types.DefaultHttpContext
	greeting string
}

func (h *httpContext) OnHttpRequestHeaders(numHeaders int, endOfStream bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	if path == "/gopher" {
		headers := [][2]string{{"content-type", "text/plain"}}
		if err := proxywasm.SendHttpResponse(200, headers, []byte("answered by a Go filter\n"), -1); err != nil {
			proxywasm.LogErrorf("cannot answer locally: %v", err)
			return types.ActionContinue
		}
		// The local response replaces the upstream's: stop this request here.
		return types.ActionPause
	}
	if err := proxywasm.AddHttpRequestHeader("x-go", h.greeting); err != nil {
		proxywasm.LogErrorf("cannot add x-go: %v", err)
	}
	return types.ActionContinue
}
