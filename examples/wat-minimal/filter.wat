;; The smallest useful proxy-wasm filter, written by hand: it adds
;; `x-wat: hello` to every request. No SDK, no libc, no WASI: just the ABI.
;;
;; Build: ./build.sh (wat2wasm, from Debian's `wabt`).
(module
  ;; The host function we need, from the proxy-wasm ABI 0.2.1:
  ;; proxy_add_header_map_value(map, key_ptr, key_len, value_ptr, value_len) -> status
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))

  ;; One page (64 KiB): the two strings at the bottom, the heap above them.
  (memory (export "memory") 1)
  (data (i32.const 16) "x-wat")   ;; 5 bytes at 16
  (data (i32.const 32) "hello")   ;; 5 bytes at 32

  ;; The host tells the module which ABI it speaks by this export's name.
  (func (export "proxy_abi_version_0_2_1"))

  ;; The host asks for guest memory to hand back values (a header, the
  ;; configuration...). A bump allocator that never frees is enough for a
  ;; module that is re-created on a trap and asks for little.
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    ;; Grow by as many pages as the new end needs; -1 from memory.grow traps
    ;; below, so an allocation never returns memory that is not there.
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add
                  (i32.div_u
                    (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                    (i32.const 65536))
                  (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $ptr))

  ;; Lifecycle: nothing to set up, every configuration accepted.
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))

  ;; proxy_on_request_headers(context_id, num_headers, end_of_stream) -> action
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; map 0 = request headers. The status is dropped: nothing useful to do
    ;; if the host refuses, and the request goes on either way.
    (drop (call $add_header (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 32) (i32.const 5)))
    (i32.const 0)) ;; 0 = Continue
)
