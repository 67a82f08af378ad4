use super::*;
use wasmtime::{Engine, Instance, Module, Store};

/// A module whose callbacks record their order (one digit each) and arguments.
fn recorder(request_headers: &str) -> String {
    format!(
        r#"(module
  (global $log (export "log") (mut i64) (i64.const 0))
  (global $args (export "args") (mut i64) (i64.const 0))
  (func $rec (param i32)
    global.get $log i64.const 10 i64.mul local.get 0 i64.extend_i32_u i64.add global.set $log)
  (func $arg (param i32)
    global.get $args i64.const 100 i64.mul local.get 0 i64.extend_i32_u i64.add global.set $args)
  (func (export "proxy_on_context_create") (param i32 i32)
    (call $rec (i32.const 1)) (call $arg (local.get 0)) (call $arg (local.get 1)))
  {request_headers}
  (func (export "proxy_on_done") (param i32) (result i32)
    (call $rec (i32.const 3)) (call $arg (local.get 0)) (i32.const 1))
  (func (export "proxy_on_log") (param i32) (call $rec (i32.const 4)))
  (func (export "proxy_on_delete") (param i32) (call $rec (i32.const 5)) (call $arg (local.get 0))))"#
    )
}

const HEADERS: &str = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $rec (i32.const 2)) (call $arg (local.get 1)) (call $arg (local.get 2)) (i32.const 7))"#;

fn instance(bytes: &[u8]) -> (Store<()>, Instance) {
    let engine = Engine::default();
    let module = Module::new(&engine, bytes).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    (store, instance)
}

fn global(store: &mut Store<()>, instance: &Instance, name: &str) -> i64 {
    let g = instance.get_global(&mut *store, name).unwrap();
    g.get(&mut *store).i64().unwrap()
}

#[test]
fn begin_and_finish_run_the_callbacks_in_order_with_their_arguments() {
    let wasm = wat::parse_str(recorder(HEADERS)).unwrap();
    let fused = fuse(&wasm).expect("a plain proxy-wasm module is fused");
    let (mut store, instance) = instance(&fused);
    let begin = instance
        .get_typed_func::<(u32, u32, u32, u32), u32>(&mut store, BEGIN)
        .unwrap();
    assert_eq!(begin.call(&mut store, (9, 1, 3, 1)).unwrap(), 7);
    assert_eq!(global(&mut store, &instance, "log"), 12);
    assert_eq!(global(&mut store, &instance, "args"), 9_01_03_01);
    let finish = instance
        .get_typed_func::<u32, ()>(&mut store, FINISH)
        .unwrap();
    finish.call(&mut store, 9).unwrap();
    assert_eq!(global(&mut store, &instance, "log"), 12345);
    assert_eq!(global(&mut store, &instance, "args"), 9_01_03_01_09_09);
    // The module's own exports are still there.
    assert!(instance.get_func(&mut store, "proxy_on_log").is_some());
}

#[test]
fn the_module_s_own_code_keeps_its_offsets() {
    /// The code section's payload start and each body's range relative to it.
    fn bodies(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut start = 0;
        let mut out = Vec::new();
        for p in Parser::new(0).parse_all(bytes) {
            match p.unwrap() {
                Payload::CodeSectionStart { range, .. } => start = range.start,
                Payload::CodeSectionEntry(body) => {
                    let r = body.range();
                    out.push((r.start - start, r.end - start));
                }
                _ => {}
            }
        }
        out
    }
    let wat = recorder(&response(0)).replacen(
        "(module",
        r#"(module (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        1,
    );
    let wasm = wat::parse_str(wat).unwrap();
    let fused = fuse(&wasm).unwrap();
    let (before, after) = (bodies(&wasm), bodies(&fused));
    assert_eq!(after.len(), before.len() + 3);
    assert_eq!(&after[..before.len()], &before[..]);
}

#[test]
fn an_older_abi_s_request_headers_gets_no_begin_but_still_a_finish() {
    let v010 = r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (i32.const 0))"#;
    let fused = fuse(&wat::parse_str(recorder(v010)).unwrap()).unwrap();
    let (mut store, instance) = instance(&fused);
    assert!(instance.get_func(&mut store, BEGIN).is_none());
    assert!(instance.get_func(&mut store, FINISH).is_some());
}

#[test]
fn modules_it_cannot_fuse_are_left_alone() {
    // No callbacks to fuse.
    let bare = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
    assert!(fuse(&bare).is_none());
    // A name already taken.
    let taken = recorder(HEADERS).replace("(export \"log\")", "(export \"__portcullis_begin\")");
    assert!(fuse(&wat::parse_str(taken).unwrap()).is_none());
    // Not wasm at all, and a truncated module.
    assert!(fuse(b"not wasm").is_none());
    let wasm = wat::parse_str(recorder(HEADERS)).unwrap();
    assert!(fuse(&wasm[..wasm.len() - 3]).is_none());
}

#[test]
fn imported_functions_shift_the_indices_the_fused_bodies_call() {
    let with_import = recorder(HEADERS).replacen(
        "(module",
        r#"(module (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        1,
    );
    let wasm = wat::parse_str(with_import).unwrap();
    let fused = fuse(&wasm).unwrap();
    let engine = Engine::default();
    let module = Module::new(&engine, &fused).unwrap();
    let mut store = Store::new(&engine, ());
    let log = wasmtime::Func::wrap(&mut store, |_: u32, _: u32, _: u32| -> u32 { 0 });
    let instance = Instance::new(&mut store, &module, &[log.into()]).unwrap();
    let begin = instance
        .get_typed_func::<(u32, u32, u32, u32), u32>(&mut store, BEGIN)
        .unwrap();
    assert_eq!(begin.call(&mut store, (4, 1, 2, 0)).unwrap(), 7);
    assert_eq!(global(&mut store, &instance, "log"), 12);
}

#[test]
fn leb128_widths() {
    assert_eq!(push_leb(Vec::new(), 300), vec![0xac, 0x02]);
    assert_eq!(leb(&[0xac, 0x02]), Some((300, 2)));
    assert_eq!(padded_leb(5, 2), Some(vec![0x85, 0x00]));
    assert_eq!(leb(&[0x85, 0x00]), Some((5, 2)));
    assert_eq!(padded_leb(130, 1), None);
    assert_eq!(leb(&[0x80, 0x80]), None);
}

/// Response callbacks for [`recorder`]: headers (6) answers `headers`, body (7) 5.
fn response(headers: u32) -> String {
    format!(
        r#"{HEADERS}
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $rec (i32.const 6)) (call $arg (local.get 1)) (call $arg (local.get 2)) (i32.const {headers}))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (call $rec (i32.const 7)) (call $arg (local.get 1)) (call $arg (local.get 2)) (i32.const 5))"#
    )
}

/// [`recorder`] with response callbacks and an import of `marker` (its parameter
/// count), instantiated with that import noting its first argument in the call log as
/// a digit 8 (the mark) or 9 (anything else), and answering `status`.
fn with_marker(headers: u32, marker: &str, params: usize, status: i32) -> (Store<()>, Instance) {
    let import = format!(
        r#"(module (import "env" "{marker}" (func (param {}) (result i32)))"#,
        vec!["i32"; params].join(" ")
    );
    let wat = recorder(&response(headers)).replacen("(module", &import, 1);
    let fused = fuse(&wat::parse_str(wat).unwrap()).unwrap();
    let engine = Engine::default();
    let module = Module::new(&engine, &fused).unwrap();
    let mut store = Store::new(&engine, ());
    let ty = wasmtime::FuncType::new(
        &engine,
        vec![wasmtime::ValType::I32; params],
        [wasmtime::ValType::I32],
    );
    let f = wasmtime::Func::new(&mut store, ty, move |mut caller, args, results| {
        let digit = if args[0].i32() == Some(MARK as i32) {
            8
        } else {
            9
        };
        let log = caller.get_export("log").unwrap().into_global().unwrap();
        let now = log.get(&mut caller).i64().unwrap();
        log.set(&mut caller, wasmtime::Val::I64(now * 10 + digit))?;
        results[0] = wasmtime::Val::I32(status);
        Ok(())
    });
    let instance = Instance::new(&mut store, &module, &[f.into()]).unwrap();
    (store, instance)
}

#[test]
fn respond_marks_the_body_callback_only_after_headers_that_continue() {
    for (marker, params) in [
        ("proxy_log", 3),
        ("proxy_get_header_map_value", 5),
        ("proxy_get_buffer_bytes", 5),
    ] {
        let (mut store, inst) = with_marker(0, marker, params, 0);
        let respond = inst
            .get_typed_func::<(u32, u32, u32), (u32, u32)>(&mut store, RESPOND)
            .unwrap();
        // Headers (3 of them, not the end of the stream), the mark, then the 11-byte
        // body (the end).
        assert_eq!(respond.call(&mut store, (9, 3, 11)).unwrap(), (0, 5));
        assert_eq!(global(&mut store, &inst, "log"), 687, "through {marker}");
        assert_eq!(global(&mut store, &inst, "args"), 3_00_11_01);
    }

    // Headers that stop the iteration: no mark, no body callback, their action back.
    let (mut store, inst) = with_marker(1, "proxy_log", 3, 0);
    let respond = inst
        .get_typed_func::<(u32, u32, u32), (u32, u32)>(&mut store, RESPOND)
        .unwrap();
    assert_eq!(respond.call(&mut store, (9, 3, 11)).unwrap(), (1, 0));
    assert_eq!(global(&mut store, &inst, "log"), 6);

    // A mark answered non-zero (the headers callback replied locally): no body callback.
    let (mut store, inst) = with_marker(0, "proxy_log", 3, 1);
    let respond = inst
        .get_typed_func::<(u32, u32, u32), (u32, u32)>(&mut store, RESPOND)
        .unwrap();
    assert_eq!(respond.call(&mut store, (9, 3, 11)).unwrap(), (0, 0));
    assert_eq!(global(&mut store, &inst, "log"), 68);
}

#[test]
fn respond_needs_a_marker_import_and_the_response_callbacks() {
    // No import to mark through.
    let fused = fuse(&wat::parse_str(recorder(&response(0))).unwrap()).unwrap();
    let (mut store, inst) = instance(&fused);
    assert!(inst.get_func(&mut store, RESPOND).is_none());
    assert!(inst.get_func(&mut store, BEGIN).is_some());
    // An import of that name with another signature is no marker.
    let odd = recorder(&response(0)).replacen(
        "(module",
        r#"(module (import "env" "proxy_log" (func (param i32) (result i32)))"#,
        1,
    );
    let fused = fuse(&wat::parse_str(odd).unwrap()).unwrap();
    let module = Module::new(&Engine::default(), &fused).unwrap();
    assert!(module.get_export(RESPOND).is_none());
    // No response callbacks.
    let plain = recorder(HEADERS).replacen(
        "(module",
        r#"(module (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        1,
    );
    let fused = fuse(&wat::parse_str(plain).unwrap()).unwrap();
    let module = Module::new(&Engine::default(), &fused).unwrap();
    assert!(module.get_export(RESPOND).is_none());
    assert!(module.get_export(BEGIN).is_some());
}

#[test]
fn mark_is_an_i32_const_of_its_value() {
    let mut b = push_sleb(Vec::new(), MARK);
    b.push(0x0b);
    let mut r = wasmparser::BinaryReader::new(&b, 0);
    assert_eq!(r.read_var_i32().unwrap(), MARK as i32);
    assert_eq!(push_sleb(Vec::new(), 0), vec![0x00]);
    assert_eq!(push_sleb(Vec::new(), 64), vec![0xc0, 0x00]);
    assert_eq!(push_sleb(Vec::new(), u32::MAX), vec![0x7f]);
}
