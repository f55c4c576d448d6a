"""One module per competing job queue, each with the same `measure` coroutine.

Every `measure(redis_url, jobs, concurrency)` follows the same protocol (see
`bench.competitors.common`) and returns ``{"enqueue_per_s": ..., "process_per_s": ...}``.
"""
