//! A proxy-wasm filter for testing the host. The plugin configuration is a mode name,
//! optionally followed by `:` and an argument; each mode exercises part of the ABI
//! (the behaviours of the Rust SDK's examples included).

mod flood;

use std::cell::Cell;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { mode: String::new(), arg: String::new(), queue: 0, requests: Cell::new(0), ticks: 0 })
    });
}}

struct Root {
    mode: String,
    arg: String,
    queue: u32,
    /// Streams this VM has seen: tells a kept VM from a fresh one across reloads.
    requests: Cell<u32>,
    ticks: u64,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        log::info!("probe vm started");
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let (mode, arg) = config.split_once(':').unwrap_or((config.as_str(), ""));
        self.mode = mode.to_string();
        self.arg = arg.to_string();
        match mode {
            "trap_configure" => panic!("probe: refusing to configure"),
            "reject_configure" => return false,
            "tick" => self.set_tick_period(Duration::from_millis(10)),
            "queue" => self.queue = self.register_shared_queue("probe-queue"),
            _ => {}
        }
        // plugin_root_id / plugin_name must be readable from here on.
        let name = self.get_property(vec!["plugin_name"]).unwrap_or_default();
        self.set_shared_data(
            &format!("configured:{}", String::from_utf8_lossy(&name)),
            Some(config.as_bytes()),
            None,
        )
        .is_ok()
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let key = format!("ticks:{}", self.arg);
        let _ = self.set_shared_data(&key, Some(self.ticks.to_string().as_bytes()), None);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            let _ = self.set_shared_data("queue-last", Some(&item), None);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            mode: self.mode.clone(),
            arg: self.arg.clone(),
            queue: self.queue,
            counter: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "probe_requests_total",
            )
            .ok(),
            number: {
                self.requests.set(self.requests.get() + 1);
                self.requests.get()
            },
        }))
    }
}

struct Stream {
    id: u32,
    mode: String,
    arg: String,
    queue: u32,
    counter: Option<u32>,
    number: u32,
}

/// Envoy attributes the `attrs` mode reports, in each phase.
const ATTRS: &[&str] = &[
    "request.time",
    "request.duration",
    "request.size",
    "request.total_size",
    "response.size",
    "response.total_size",
    "response.code",
    "response.code_details",
    "response.flags",
    "cluster_name",
    "route_name",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "upstream.address",
    "source.port",
    "destination.address",
    "destination.port",
    "connection.mtls",
    "connection.subject_peer_certificate",
];

impl Stream {
    /// Every attribute of [`ATTRS`] as `name=hex` (`name=-` when not found), `;`-joined.
    fn attrs(&self) -> String {
        ATTRS
            .iter()
            .map(|name| {
                let v = match self.get_property(name.split('.').collect()) {
                    Some(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    None => "-".to_string(),
                };
                format!("{name}={v}")
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        nheaders: usize,
        body_size: usize,
        _nt: usize,
    ) {
        let status = self.get_http_call_response_header(":status");
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        match status.as_deref() {
            Some("200") if nheaders > 0 => {
                self.set_http_request_header("x-call-status", Some("200"));
                self.set_http_request_header(
                    "x-call-body",
                    Some(String::from_utf8_lossy(&body).trim()),
                );
                self.resume_http_request();
            }
            other => {
                let s = other.unwrap_or("none").to_string();
                self.send_http_response(
                    403,
                    vec![("x-call-status", &s)],
                    Some(b"Access forbidden.\n"),
                );
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.mode.as_str() {
            "flood" => return flood::request_headers(),
            "flood_local" => return flood::local_response(),
            _ => {}
        }
        if self.mode == "min" {
            // The benchmark's minimal filter: read one header, add one.
            let v = self.get_http_request_header("x-in").unwrap_or_default();
            self.add_http_request_header("x-min", &v);
            return Action::Continue;
        }
        let seen = self
            .get_http_request_header("x-in")
            .unwrap_or_else(|| "none".into());
        // The argument may be an upstream name such as echo@internal: keep the header
        // name a valid token.
        let tag: String = self
            .arg
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.set_http_request_header(&format!("x-seen-{tag}"), Some(&seen));
        self.add_http_request_header("x-chain", &self.arg.clone());
        match self.mode.as_str() {
            "local" => {
                self.send_http_response(
                    403,
                    vec![("x-denied-by", &self.arg.clone())],
                    Some(b"denied by probe\n"),
                );
                return Action::Pause;
            }
            "grpc_deny" => {
                // As the Rust SDK's grpc_auth_random denies: a gRPC status and message.
                self.send_grpc_response(
                    GrpcStatusCode::Aborted,
                    Some("Aborted by probe"),
                    vec![("x-denied-by", self.arg.as_bytes())],
                );
                return Action::Pause;
            }
            "close" => {
                self.reset_http_request();
                return Action::Pause;
            }
            "rewrite" => {
                let path = self.get_http_request_header(":path").unwrap_or_default();
                self.set_http_request_header(":path", Some(&format!("/rewritten{path}")));
                self.set_http_request_header(":authority", Some("rewritten.example"));
            }
            "spin" if self.get_http_request_header("x-spin").is_some() => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" if self.get_http_request_header("x-oom").is_some() => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" if self.get_http_request_header("x-trap").is_some() => {
                panic!("probe: asked to trap");
            }
            "props" => {
                for name in [
                    "request.path",
                    "request.url_path",
                    "request.host",
                    "request.scheme",
                    "request.method",
                    "request.query",
                    "request.id",
                    "source.address",
                    "destination.address",
                    "plugin_name",
                    "plugin_root_id",
                    "route_name",
                    "connection.tls_version",
                ] {
                    let path: Vec<&str> = name.split('.').collect();
                    let v = self
                        .get_property(path)
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    self.set_http_request_header(
                        &format!("x-prop-{name}"),
                        Some(&v.unwrap_or_else(|| "-".into())),
                    );
                }
                if let Some(port) = self.get_property(vec!["source", "port"]) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&port[..8.min(port.len())]);
                    self.set_http_request_header(
                        "x-prop-source.port",
                        Some(&u64::from_le_bytes(b).to_string()),
                    );
                }
                self.set_property(vec!["probe", "note"], Some(b"from-props"));
            }
            "cluster_metadata" => {
                let path = vec!["cluster_metadata", "filter_metadata", "portcullis", "tier"];
                let v = self
                    .get_property(path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| "-".into());
                self.set_http_request_header("x-cluster-tier", Some(&v));
            }
            "node" => {
                for name in [
                    "id",
                    "cluster",
                    "metadata.region",
                    "metadata.weight",
                    "metadata.gone",
                ] {
                    let mut path = vec!["node"];
                    path.extend(name.split('.'));
                    let v = self
                        .get_property(path)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_else(|| "-".into());
                    self.set_http_request_header(
                        &format!("x-node-{}", name.replace('.', "-")),
                        Some(&v),
                    );
                }
            }
            "attrs" => {
                let v = self.attrs();
                self.set_http_request_header("x-attrs", Some(&v));
            }
            "readprop" => {
                let v = self.get_property(vec!["probe", "note"]).unwrap_or_default();
                self.set_http_request_header("x-note", Some(&String::from_utf8_lossy(&v)));
            }
            "call" => {
                let r = self.dispatch_http_call(
                    &self.arg.clone(),
                    vec![
                        (":method", "GET"),
                        (":path", "/auth"),
                        (":authority", "auth.local"),
                    ],
                    None,
                    vec![],
                    Duration::from_secs(5),
                );
                return match r {
                    Ok(_) => Action::Pause,
                    Err(_) => {
                        self.send_http_response(500, vec![], Some(b"dispatch failed\n"));
                        Action::Pause
                    }
                };
            }
            "shared" => loop {
                let (v, cas) = self.get_shared_data("probe-counter");
                let n: u64 = v
                    .map(|b| String::from_utf8_lossy(&b).parse().unwrap_or(0))
                    .unwrap_or(0);
                if self
                    .set_shared_data("probe-counter", Some((n + 1).to_string().as_bytes()), cas)
                    .is_ok()
                {
                    self.set_http_request_header("x-counter", Some(&(n + 1).to_string()));
                    break;
                }
            },
            "tick" => {
                let (v, _) = self.get_shared_data(&format!("ticks:{}", self.arg));
                let v = v
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| "0".into());
                self.set_http_request_header("x-ticks", Some(&v));
            }
            "queue" => {
                let id = self
                    .resolve_shared_queue("", "probe-queue")
                    .unwrap_or(self.queue);
                let r = self.enqueue_shared_queue(id, Some(format!("item-{}", self.id).as_bytes()));
                self.set_http_request_header("x-enqueued", Some(&format!("{id}:{r:?}")));
            }
            "foreign" => {
                let r = self.call_foreign_function(&self.arg.clone(), Some(b"ping"));
                let v = match r {
                    Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    Ok(None) => "empty".into(),
                    Err(s) => format!("{s:?}"),
                };
                self.add_http_request_header("x-foreign", &v);
            }
            "misc" => {
                use proxy_wasm::hostcalls;
                let time = self
                    .get_current_time()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() > 1_600_000_000)
                    .unwrap_or(false);
                let level = hostcalls::get_log_level().is_ok();
                let grpc = self
                    .dispatch_grpc_call("up", "svc", "m", vec![], None, Duration::from_secs(1))
                    .is_err();
                let gauge = hostcalls::define_metric(MetricType::Gauge, "probe_gauge")
                    .and_then(|g| {
                        hostcalls::record_metric(g, 42).and_then(|_| hostcalls::get_metric(g))
                    })
                    .unwrap_or(0);
                let effective = hostcalls::set_effective_context(self.id).is_ok();
                let (code, _) = self.get_grpc_status();
                let done = hostcalls::done().is_ok();
                self.set_http_request_header(
                    "x-misc",
                    Some(&format!(
                        "time={time} level={level} grpc_refused={grpc} gauge={gauge} effective={effective} status={code} done={done}"
                    )),
                );
            }
            "count" => {
                self.set_http_request_header("x-vm-count", Some(&self.number.to_string()));
            }
            "pairs" => {
                let mut all = self.get_http_request_headers();
                all.retain(|(k, _)| k != "x-drop");
                all.push(("x-pairs".into(), format!("{}", all.len())));
                let refs: Vec<(&str, &str)> =
                    all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.set_http_request_headers(refs);
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _size: usize, eos: bool) -> Action {
        if self.mode == "body_local" && eos {
            // Refuses once it has seen the whole body, as a body-size or content
            // filter does.
            self.send_http_response(413, vec![], Some(b"body refused by probe\n"));
            return Action::Pause;
        }
        if self.mode != "body" {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        let body = self
            .get_http_request_body(0, usize::MAX)
            .unwrap_or_default();
        let upper = String::from_utf8_lossy(&body).to_uppercase();
        self.set_http_request_body(0, body.len(), upper.as_bytes());
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        self.add_http_request_trailer("x-probe-trailer", &self.arg.clone());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        // A flooded map takes no more names (see `flood`).
        if matches!(self.mode.as_str(), "min" | "flood_local") {
            return Action::Continue;
        }
        self.add_http_response_header("x-resp-chain", &self.arg.clone());
        if self.mode == "body" || self.mode == "late" {
            self.set_http_response_header("content-length", None);
        }
        if self.mode == "status" {
            self.set_http_response_header(":status", Some("418"));
        }
        if self.mode == "attrs" {
            let v = self.attrs();
            self.set_http_response_header("x-attrs", Some(&v));
        }
        if self.mode == "answer" {
            // A local reply that lets the iteration go on, as some filters write it.
            self.send_http_response(502, vec![], Some(b"answered by probe\n"));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _size: usize, eos: bool) -> Action {
        if self.mode == "answer" {
            let _ = self.set_shared_data(&format!("answer:{}", self.arg), Some(b"body"), None);
        }
        if self.mode == "late" && eos {
            // The head has gone downstream: a body callback no longer sees it.
            let head = self.get_http_response_header("x-resp-chain");
            let body = self
                .get_http_response_body(0, usize::MAX)
                .unwrap_or_default();
            let note = match head {
                Some(v) => format!(" [late {}: head {v}]", self.arg),
                None => format!(" [late {}: head gone]", self.arg),
            };
            self.set_http_response_body(body.len(), 0, note.as_bytes());
            return Action::Continue;
        }
        if self.mode != "body" {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        let body = self
            .get_http_response_body(0, usize::MAX)
            .unwrap_or_default();
        self.set_http_response_body(body.len(), 0, b" [probed]");
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.mode == "min" {
            return;
        }
        if self.mode == "attrs" {
            let v = self.attrs();
            let _ = self.set_shared_data(&format!("attrs:{}", self.arg), Some(v.as_bytes()), None);
        }
        if let Some(id) = self.counter {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
        let _ = self.set_shared_data(
            &format!("logged:{}:{}", self.arg, self.number),
            Some(b"1"),
            None,
        );
        let key = format!("logs:{}", self.arg);
        loop {
            let (v, cas) = self.get_shared_data(&key);
            let n: u64 = v
                .map(|b| String::from_utf8_lossy(&b).parse().unwrap_or(0))
                .unwrap_or(0);
            if self
                .set_shared_data(&key, Some((n + 1).to_string().as_bytes()), cas)
                .is_ok()
            {
                break;
            }
        }
    }
}
