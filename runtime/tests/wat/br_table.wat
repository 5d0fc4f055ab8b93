;; A state machine dispatched by `br_table` out of nested blocks, every state calling the unwind point;
;; the table's targets cross the rewrite's dispatch blocks.
(module
  (import "stasis" "point" (func $point (param i32) (result i32)))
  (import "env" "log" (func $log (param i32)))
  (memory (export "memory") 1)
  (func (export "run") (param $n i32) (result i32)
    (local $state i32) (local $steps i32) (local $acc i32)
    (loop $next
      (block $s3
        (block $s2
          (block $s1
            (block $s0
              (br_table $s0 $s1 $s2 $s3 (i32.rem_u (local.get $state) (i32.const 4))))
            ;; state 0
            (local.set $acc (i32.add (local.get $acc) (call $point (i32.const 10))))
            (local.set $state (i32.const 2))
            (br $s3))
          ;; state 1
          (local.set $acc (i32.mul (local.get $acc) (i32.const 3)))
          (local.set $state (call $point (i32.const 3)))
          (br $s3))
        ;; state 2
        (call $log (local.get $acc))
        (local.set $state (i32.add (call $point (local.get $steps)) (i32.const 1))))
      ;; every state ends here
      (i32.store8 (local.get $steps) (local.get $state))
      (local.set $steps (i32.add (local.get $steps) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $steps) (local.get $n))))
    (i32.add (local.get $acc) (local.get $state))))
