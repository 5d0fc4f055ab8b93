;; The guest of the committed format-2.0 blob (`v2-reactor.blob`), paused by the Stasis of format 2.0
;; (before the unwind stage existed) after `bump` ran three times and the host wrote `/note.txt`.
;; It has a loop, so the Stasis of format 2.1 instruments it with the unwind stage's globals and memory:
;; resuming the old blob must still work, with those left at their initial values.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 64) "state")
  (func (export "bump") (result i32)
    (local $i i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    ;; memory[0] += calls, summed by a loop, so the counter lives in memory and in a global
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (global.get $calls)))
        (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.add (i32.mul (global.get $calls) (i32.const 1000)) (i32.load (i32.const 0)))))
