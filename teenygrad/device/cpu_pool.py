"""A parallel-for for CPU kernels whose caller never waits for a thread that has not started: `tg_pool_for`.

An OpenMP region ends in a join: every thread of the team must arrive, so when the cores are shared and the worker is
not running, a 50 us matvec waits a scheduler time slice (~10 ms, measured: a 2-thread decode step went from 17 ms to
0.3-1 s under a load of 5 on 2 cores). Here the iterations are split into chunks that threads claim one at a time
(one compare-and-swap on a word holding the job's generation and its next chunk); the caller claims chunks too and
then waits only for the chunks others have claimed. A worker the scheduler runs late finds the job taken and goes
back to waiting, so on a busy machine a job degrades to the caller doing it alone instead of stalling.

Workers spin for a while after each job (a decode step issues one every few tens of microseconds) and then sleep on
a condition variable, which the caller signals only when someone sleeps. One library per process, loaded with
RTLD_GLOBAL before the kernels that call it (they declare `tg_pool_for` weak and run serially where it is absent).
"""
from __future__ import annotations

import ctypes
import functools
import os
import tempfile

POOL_SOURCE = r"""
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define tg_relax() _mm_pause()
#else
#define tg_relax() ((void)0)
#endif

typedef void (*tg_pool_body)(void* ctx, long begin, long end);

#define TG_POOL_MAX_WORKERS 63
#define TG_POOL_SPINS 4096    /* pause loops (~0.1 ms on Zen 3) a worker waits for the next job before sleeping */

static struct {
  _Atomic unsigned long long state;   /* generation << 32 | next chunk */
  _Atomic long done;                  /* chunks of this generation finished */
  _Atomic(tg_pool_body) body;         /* the job, written before its generation is published */
  _Atomic(void*) ctx;
  _Atomic long n, chunk, chunks;
  _Atomic int sleepers, workers;
  pthread_mutex_t lock;
  pthread_cond_t wake;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned generation_of(unsigned long long state) { return (unsigned)(state >> 32); }

/* claims the next chunk of generation gen: its index, or -1 when that job has none left (or is over) */
static long claim(unsigned gen, long chunks) {
  unsigned long long s = atomic_load(&pool.state);
  while (generation_of(s) == gen && (long)(s & 0xffffffffu) < chunks)
    if (atomic_compare_exchange_weak(&pool.state, &s, s + 1)) return (long)(s & 0xffffffffu);
  return -1;
}

static void run_chunks(unsigned gen) {
  /* read after the generation (published with a store after these): a claim that succeeds proves they are gen's */
  tg_pool_body body = atomic_load(&pool.body);
  void* ctx = atomic_load(&pool.ctx);
  long n = atomic_load(&pool.n), chunk = atomic_load(&pool.chunk), chunks = atomic_load(&pool.chunks);
  for (long c; (c = claim(gen, chunks)) >= 0;) {
    long begin = c * chunk, end = begin + chunk < n ? begin + chunk : n;
    body(ctx, begin, end);
    atomic_fetch_add(&pool.done, 1);
  }
}

static void* worker(void* unused) {
  (void)unused;
  unsigned seen = generation_of(atomic_load(&pool.state));
  for (;;) {
    unsigned gen = seen;
    for (int spin = 0; spin < TG_POOL_SPINS && (gen = generation_of(atomic_load(&pool.state))) == seen; spin++) tg_relax();
    if (gen == seen) {
      pthread_mutex_lock(&pool.lock);
      atomic_fetch_add(&pool.sleepers, 1);
      while ((gen = generation_of(atomic_load(&pool.state))) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
      atomic_fetch_sub(&pool.sleepers, 1);
      pthread_mutex_unlock(&pool.lock);
    }
    seen = gen;
    run_chunks(gen);
  }
  return 0;
}

static void ensure_workers(int count) {
  if (count > TG_POOL_MAX_WORKERS) count = TG_POOL_MAX_WORKERS;
  if (atomic_load(&pool.workers) >= count) return;
  pthread_mutex_lock(&start_lock);
  while (atomic_load(&pool.workers) < count) {
    pthread_t thread;
    if (pthread_create(&thread, 0, worker, 0) != 0) break;
    pthread_detach(thread);
    atomic_fetch_add(&pool.workers, 1);
  }
  pthread_mutex_unlock(&start_lock);
}

/* body(ctx, begin, end) over [0, n) in chunks of `chunk`, on up to `threads` threads (the caller one of them).
   One caller at a time: the kernels run under the engine's lock. */
void tg_pool_for(tg_pool_body body, void* ctx, long n, long chunk, int threads) {
  if (chunk < 1) chunk = 1;
  long chunks = (n + chunk - 1) / chunk;
  if (threads <= 1 || chunks <= 1) { if (n > 0) body(ctx, 0, n); return; }
  ensure_workers(threads - 1);
  atomic_store(&pool.body, body); atomic_store(&pool.ctx, ctx);
  atomic_store(&pool.n, n); atomic_store(&pool.chunk, chunk); atomic_store(&pool.chunks, chunks);
  atomic_store(&pool.done, 0);
  unsigned gen = generation_of(atomic_load(&pool.state)) + 1;
  atomic_store(&pool.state, (unsigned long long)gen << 32);
  if (atomic_load(&pool.sleepers) > 0) {
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
  }
  run_chunks(gen);
  /* only chunks a running thread claimed are left; yield now and then, in case that thread waits for this core */
  for (long spin = 1; atomic_load(&pool.done) < chunks; spin++) {
    tg_relax();
    if (spin % 4096 == 0) sched_yield();
  }
}
"""


@functools.cache
def load_pool(compiler) -> ctypes.CDLL:
  """Compile (disk-cached) and load the pool once per process, its symbols global so kernels loaded later bind to
  it."""
  binary = compiler.compile_cached(POOL_SOURCE)
  fd, path = tempfile.mkstemp(suffix=".so")
  with os.fdopen(fd, "wb") as f: f.write(binary)
  library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
  os.unlink(path)
  return library
