;; Nested loops whose bodies call the unwind point, values live on the operand stack across those calls,
;; an `if` with calls in both arms, and a counter kept in memory: the shape of an interpreter's main loop.
(module
  (import "stasis" "point" (func $point (param i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (memory (export "memory") 1)
  (global $total (mut i64) (i64.const 0))
  (func $step (param $i i32) (param $j i32) (result i32)
    ;; 7 + point(i*16+j) + j, with 7 and j on the stack across the call
    (i32.add
      (i32.add (i32.const 7) (call $point (i32.add (i32.mul (local.get $i) (i32.const 16)) (local.get $j))))
      (local.get $j)))
  (func (export "run") (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $acc i32)
    (block $done
      (loop $outer
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $j (i32.const 0))
        (loop $inner
          (local.set $acc
            (i32.xor (i32.rotl (local.get $acc) (i32.const 5)) (call $step (local.get $i) (local.get $j))))
          (if (i32.and (local.get $j) (i32.const 1))
            (then (call $log (call $point (i32.const 1000))))
            (else (i32.store (i32.mul (local.get $j) (i32.const 4)) (call $point (local.get $acc)))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $inner (i32.lt_u (local.get $j) (i32.const 5))))
        (global.set $total (i64.add (global.get $total) (i64.extend_i32_u (local.get $acc))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.store (i32.const 100) (local.get $acc))
    (i32.wrap_i64 (global.get $total))))
