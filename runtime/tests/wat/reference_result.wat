;; A function that can unwind and returns a reference besides a number (found by the `unwind` fuzz
;; target): while unwinding it returns dummy results, and for the `funcref` that must be a null
;; reference; a `v128.const` there made the instrumented module invalid.
(module
  (import "stasis" "point" (func $point (param i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (memory (export "memory") 1)
  (func (export "pair") (param $n i32) (result i32 funcref)
    (local $sum i32)
    (loop $again
      (local.set $sum (i32.add (local.get $sum) (call $point (local.get $n))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (i32.gt_s (local.get $n) (i32.const 0))))
    (call $log (local.get $sum))
    (i32.store (i32.const 0) (local.get $sum))
    (local.get $sum)
    (ref.null func)))
