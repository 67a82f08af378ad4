// Test filter: an `http_call` made from a request, answered by an upstream, its answer
// used before the request goes on. AssemblyScript's runtime looks the call up in the
// root context's table by the context id `on_http_call_response` gets, so this fails
// unless that id is the root context's, as on Envoy.
//
// Configuration: the name of the upstream to call. Every request is held while
// `GET /check` goes there; then it goes upstream with `x-call-status` (the answer's
// status, or "none" when the call failed) and `x-call-body` (its body) added.

export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, BaseContext, registerRootContext, FilterHeadersStatusValues,
  HeaderPair, Headers, WasmResultValues, continue_request, stream_context,
} from "@solo-io/proxy-runtime";
// Not re-exported by the package's index.
import { BufferTypeValues, get_buffer_bytes } from "@solo-io/proxy-runtime/runtime";

class CallRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new CallFilter(context_id, this);
  }
}

function pair(k: string, v: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(k), String.UTF8.encode(v));
}

// A plain function: AssemblyScript 0.14 has no closures. It runs on the root context;
// the runtime has already pointed the effective context at `origin`.
function answered(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const status = stream_context.headers.http_callback.get(":status");
  const body = String.UTF8.decode(
    get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, body_size as u32));
  stream_context.headers.request.add("x-call-status", status == "" ? "none" : status);
  stream_context.headers.request.add("x-call-body", body);
  continue_request();
}

class CallFilter extends Context {
  constructor(context_id: u32, root_context: CallRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const upstream = this.root_context.getConfiguration();
    const headers: Headers = [];
    headers.push(pair(":method", "GET"));
    headers.push(pair(":path", "/check"));
    headers.push(pair(":authority", "auth.local"));
    const r = this.root_context.httpCall(upstream, headers, new ArrayBuffer(0), [], 2000,
      this as BaseContext, answered);
    if (r != WasmResultValues.Ok) {
      stream_context.headers.request.add("x-call-status", "refused");
      return FilterHeadersStatusValues.Continue;
    }
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new CallRoot(context_id); }, "as_http_call");
