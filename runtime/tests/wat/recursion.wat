;; Recursion whose depth is the argument, an unwind point at every level and at the bottom, and
;; indirect calls through a table to functions that can unwind and one that cannot.
(module
  (import "stasis" "point" (func $point (param i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (type $unary (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (table 3 funcref)
  (elem (i32.const 0) func $down $leaf $plain)
  (func $plain (param $x i32) (result i32) (i32.mul (local.get $x) (i32.const 2)))
  (func $leaf (param $x i32) (result i32) (call $point (local.get $x)))
  (func $down (param $d i32) (result i32)
    (if (result i32) (i32.eqz (local.get $d))
      (then (call_indirect (type $unary) (i32.const 7) (i32.const 1)))
      (else
        (i32.add
          (call_indirect (type $unary) (local.get $d) (i32.const 2))
          (i32.add
            (call_indirect (type $unary) (i32.sub (local.get $d) (i32.const 1)) (i32.const 0))
            (if (result i32) (i32.eqz (i32.rem_u (local.get $d) (i32.const 97)))
              (then (call $point (local.get $d)))
              (else (i32.const 1))))))))
  (func (export "run") (param $depth i32) (result i32)
    (local $r i32)
    (local.set $r (call $down (local.get $depth)))
    (call $log (local.get $r))
    (i32.store (i32.const 0) (local.get $r))
    (local.get $r)))
