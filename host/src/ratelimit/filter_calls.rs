//! Filters' own Redis calls (`proxy_redis_call`, see `crate::wasm::redis`) on the
//! connections of the `redis:` block: the one Redis the configuration names, under its
//! `name`. The guest sends one command RESP-encoded and gets Redis' reply RESP-encoded.
//!
//! The connections are multiplexed (every worker's commands, the rate limiter's
//! included, pipeline on a few sockets), so commands that change a connection's state
//! or block it are refused: a `MULTI` would capture other filters' commands, a `BLPOP`
//! would hold everyone's. `EVAL` does atomically what a transaction would.

use std::time::Duration;

use redis::Value;

use super::RateLimits;
use crate::wasm::redis::{RedisCalls, RedisFuture, Refused};

/// Commands a filter may not send on a shared, multiplexed connection.
const REFUSED: &[&str] = &[
    // Connection state.
    "AUTH",
    "HELLO",
    "SELECT",
    "QUIT",
    "RESET",
    "CLIENT",
    "READONLY",
    "READWRITE",
    // Transactions (interleaved with other commands on the same connection).
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH", // Push modes.
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SYNC",
    "PSYNC",
    "REPLCONF", // Blocking.
    "BLPOP",
    "BRPOP",
    "BLMOVE",
    "BRPOPLPUSH",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "WAIT",
    "WAITAOF",
    "XREAD",
    "XREADGROUP",
    "SHUTDOWN",
    "DEBUG",
];

impl RedisCalls for RateLimits {
    fn call(
        &self,
        cluster: &str,
        query: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RedisFuture, Refused> {
        let store = self.globals.store().ok_or_else(|| {
            Refused("the configuration has no `redis:` block: filters reach no Redis".into())
        })?;
        let name = &store.config().name;
        if cluster != name {
            return Err(Refused(format!(
                "no Redis is named `{cluster}`: the `redis:` block is named `{name}`"
            )));
        }
        let cmd = command(query).map_err(Refused)?;
        let reply = store.command(cmd, timeout.unwrap_or(store.config().timeout));
        Ok(Box::pin(async move {
            match reply.await {
                Ok(Ok(v)) => {
                    let mut out = Vec::new();
                    encode(&v, &mut out);
                    Ok(out)
                }
                Ok(Err(error)) => Ok(format!("-{}\r\n", one_line(&error)).into_bytes()),
                Err(e) => Err(e.to_string()),
            }
        }))
    }
}

/// The command a RESP array of bulk strings (or simple strings, integers) asks for.
fn command(query: &[u8]) -> Result<redis::Cmd, String> {
    let parts = match redis::parse_redis_value(query) {
        Ok(Value::Array(parts)) if !parts.is_empty() => parts,
        Ok(_) => return Err("the query is not a RESP array holding a command".into()),
        Err(e) => return Err(format!("the query is not RESP: {e}")),
    };
    let mut cmd = redis::Cmd::new();
    for (i, part) in parts.into_iter().enumerate() {
        let bytes = match part {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            Value::Int(n) => n.to_string().into_bytes(),
            other => {
                return Err(format!(
                    "argument {i} of the query is {other:?}, not a string"
                ));
            }
        };
        if i == 0 {
            let name = String::from_utf8_lossy(&bytes).to_ascii_uppercase();
            if REFUSED.contains(&name.as_str()) {
                return Err(format!(
                    "{name} is not allowed: filters share multiplexed connections, on which \
                     it would change or block other filters' commands (use EVAL for atomic work)"
                ));
            }
        }
        cmd.arg(bytes);
    }
    Ok(cmd)
}

/// `v` in RESP2, as Higress's SDKs read replies: RESP3-only types (from a server that
/// speaks it) become their nearest RESP2 form.
fn encode(v: &Value, out: &mut Vec<u8>) {
    let bulk = |b: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    };
    let array = |items: &[Value], out: &mut Vec<u8>| {
        out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
        for item in items {
            encode(item, out);
        }
    };
    match v {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::BulkString(b) => bulk(b, out),
        Value::Array(items) | Value::Set(items) => array(items, out),
        Value::Push { data, .. } => array(data, out),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{}\r\n", one_line(s)).as_bytes()),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Map(pairs) => {
            out.extend_from_slice(format!("*{}\r\n", pairs.len() * 2).as_bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Attribute { data, .. } => encode(data, out),
        Value::Double(d) => bulk(d.to_string().as_bytes(), out),
        Value::Boolean(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
        Value::VerbatimString { text, .. } => bulk(text.as_bytes(), out),
        Value::BigNumber(digits) => bulk(digits, out),
        Value::ServerError(e) => {
            let text = match e.details() {
                Some(d) => format!("{} {d}", e.code()),
                None => e.code().to_string(),
            };
            out.extend_from_slice(format!("-{}\r\n", one_line(&text)).as_bytes());
        }
        // A kind newer than this code: said as an error the guest can read.
        other => out.extend_from_slice(
            format!(
                "-ERR unsupported reply {}\r\n",
                one_line(&format!("{other:?}"))
            )
            .as_bytes(),
        ),
    }
}

/// `s` with line breaks made spaces: a simple string or error is one RESP line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_resp_array_becomes_the_command_and_replies_go_back_as_resp() {
        let cmd = command(b"*2\r\n$4\r\nINCR\r\n$3\r\nhit\r\n").unwrap();
        assert_eq!(
            cmd.get_packed_command(),
            b"*2\r\n$4\r\nINCR\r\n$3\r\nhit\r\n"
        );
        let mut out = Vec::new();
        encode(
            &Value::Array(vec![
                Value::Int(7),
                Value::Nil,
                Value::BulkString(b"a\r\nb".to_vec()),
                Value::Okay,
            ]),
            &mut out,
        );
        assert_eq!(out, b"*4\r\n:7\r\n$-1\r\n$4\r\na\r\nb\r\n+OK\r\n");
    }

    #[test]
    fn commands_that_would_disturb_a_shared_connection_are_refused() {
        for q in [
            &b"*1\r\n$5\r\nmulti\r\n"[..],
            b"*3\r\n$5\r\nBLPOP\r\n$1\r\nk\r\n$1\r\n0\r\n",
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n",
        ] {
            let e = command(q).unwrap_err();
            assert!(e.contains("not allowed"), "{e}");
        }
        assert!(command(b"*0\r\n").unwrap_err().contains("not a RESP array"));
        assert!(
            command(b"GET k\r\n").is_err(),
            "an inline command is not RESP"
        );
        assert!(
            command(b"*1\r\n*1\r\n$1\r\nx\r\n")
                .unwrap_err()
                .contains("argument 0")
        );
    }
}
