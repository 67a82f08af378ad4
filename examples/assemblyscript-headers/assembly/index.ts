// A Portcullis (proxy-wasm) filter in AssemblyScript, on @solo-io/proxy-runtime.
//
// - Every request goes upstream with `x-assemblyscript: <configuration>` added
//   (the configuration is a YAML string, handed over as its raw bytes; none: "hello").
// - Every response gets `x-filter-language: assemblyscript`.
// - `/teapot` is answered by the filter itself: 418, without reaching the upstream.
//
// Build: ./build.sh (npm ci, then asc from the assemblyscript 0.14 package).

// The runtime's exports are the ABI the host calls: proxy_on_*, malloc, the version.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  GrpcStatusValues, HeaderPair, Headers, send_local_response, stream_context,
} from "@solo-io/proxy-runtime";

class HeadersRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new HeadersFilter(context_id, this);
  }
}

class HeadersFilter extends Context {
  constructor(context_id: u32, root_context: HeadersRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get(":path") == "/teapot") {
      const headers: Headers = [];
      headers.push(new HeaderPair(
        String.UTF8.encode("x-filter-language"), String.UTF8.encode("assemblyscript")));
      send_local_response(418, "teapot", String.UTF8.encode("I'm a teapot (AssemblyScript)\n"),
        headers, GrpcStatusValues.Unknown);
      // The local response replaces the upstream's: stop this request here.
      return FilterHeadersStatusValues.StopIteration;
    }
    const config = this.root_context.getConfiguration();
    stream_context.headers.request.add("x-assemblyscript", config == "" ? "hello" : config);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-filter-language", "assemblyscript");
    return FilterHeadersStatusValues.Continue;
  }
}

// The root context is looked up by the filter's `root_id` (conf: root_id: as_headers).
registerRootContext((context_id: u32) => { return new HeadersRoot(context_id); }, "as_headers");
