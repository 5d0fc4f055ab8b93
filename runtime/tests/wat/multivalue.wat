;; Multi-value everywhere: functions and blocks with several results, blocks, loops and an `if` without
;; `else` taking parameters, a branch back to a loop with parameters, and unwind points inside all of them.
(module
  (import "stasis" "point" (func $point (param i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (memory (export "memory") 1)
  (func $pair (param $x i32) (result i32 i64)
    (call $point (local.get $x))
    (i64.extend_i32_s (call $point (i32.add (local.get $x) (i32.const 1)))))
  (func $swap (param i32 i64) (result i64 i32)
    (local.get 1) (local.get 0))
  (func (export "run") (param $n i32) (result i32)
    (local $a i32) (local $b i64) (local $k i32)
    ;; a block with parameters and two results
    (i32.const 3) (i64.const 4)
    (block (param i32 i64) (result i64 i32)
      (call $swap)
      (drop)
      (call $point (i32.const 9))
      (drop)
      (i32.const 5))
    (local.set $a)
    (local.set $b)
    ;; a loop with parameters, carried around by a branch back to it
    (i32.const 0) (i32.const 1)
    (loop $l (param i32 i32) (result i32)
      ;; stack: counter, acc
      (local.set $k)                       ;; acc
      (i32.add (i32.const 1))              ;; counter+1
      (local.tee $a)
      (i32.add (local.get $k) (call $point (local.get $a)))
      (br_if $l (i32.lt_u (local.get $a) (local.get $n)))
      (i32.add))
    (local.set $k)
    ;; an if without else, with a parameter, and a call inside
    (local.get $k)
    (if (param i32) (result i32) (i32.gt_u (local.get $k) (i32.const 2))
      (then (call $point) (i32.const 1) (i32.add)))
    (call $pair)
    (i32.wrap_i64)
    (i32.add)
    (local.set $k)
    (i32.store (i32.const 0) (local.get $k))
    (call $log (local.get $k))
    (i32.add (local.get $k) (i32.wrap_i64 (local.get $b)))))
