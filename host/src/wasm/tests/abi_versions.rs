//! Which `proxy_abi_version_*` exports load, Higress's variant among them, and how a
//! module the host cannot run is refused: with the export or import named.

use super::*;

/// A minimal module exporting `version` and importing `imports` (WAT fragments).
fn module(version: &str, imports: &str) -> Vec<u8> {
    format!(
        r#"(module
        {imports}
        (memory (export "memory") 1)
        (func (export "{version}"))
        (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#
    )
    .into_bytes()
}

fn runtime() -> Runtime {
    Runtime::new().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn higress_modules_load_as_their_own_abi() {
    // A Higress SDK import we have no use for links to an UNIMPLEMENTED stub.
    let wasm = module(
        "proxy_abi_version_0_2_100",
        r#"(import "env" "proxy_get_upstream_hosts" (func (param i32 i32) (result i32)))"#,
    );
    match runtime().plugin_from_bytes(&filter("higress", ""), &wasm) {
        Ok(p) => assert_eq!(p.compiled.abi, crate::wasm::state::AbiVersion::V0_2_100),
        Err(e) => panic!("a Higress module was refused: {e}"),
    }
}

#[test]
fn host_functions_we_cannot_offer_are_refused_by_name() {
    for name in [
        "proxy_set_upstream_override_host",
        "proxy_inject_encoded_data_to_filter_chain",
    ] {
        let wasm = module(
            "proxy_abi_version_0_2_100",
            &format!(r#"(import "env" "{name}" (func (param i32 i32) (result i32)))"#),
        );
        match runtime().plugin_from_bytes(&filter("higress-redis", ""), &wasm) {
            Ok(_) => panic!("a module importing {name} was accepted"),
            Err(e) => assert!(e.contains(&format!("env.{name}")), "{e}"),
        }
    }
}

#[test]
fn an_unknown_abi_version_is_named() {
    let wasm = module("proxy_abi_version_0_3_0", "");
    match runtime().plugin_from_bytes(&filter("future", ""), &wasm) {
        Ok(_) => panic!("a module of an unknown ABI was accepted"),
        Err(e) => assert!(
            e.contains("exports proxy_abi_version_0_3_0") && e.contains("0_2_100"),
            "{e}"
        ),
    }
}
