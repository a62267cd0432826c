/* fastoptim's thread pool: plain C99 and POSIX threads, no Python.
 *
 * A job is `nchunks` independent chunks. The calling thread takes part: it and
 * any worker that is running claim chunks, each from its own contiguous share
 * first (the same share every call, as a static split would give), then from
 * what is left of the others', until none is left. A worker that is slow to
 * wake (or never wakes) only means the others take more chunks; the caller never
 * waits for a worker that has not claimed a chunk, only for chunks already
 * claimed to finish. What a chunk computes must not depend on who runs it: then
 * results are the same for any number of threads.
 *
 * Idle workers spin for a short time (they catch back-to-back calls), then
 * sleep (futex on Linux, a condition variable elsewhere). Workers start at the
 * first parallel call. A child forked from a process with a pool starts with
 * none: its first parallel call starts new workers. Without POSIX threads the
 * pool has no workers and every job runs on the calling thread. */
#ifndef FO_POOL_H
#define FO_POOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One chunk of a job. `local` is two words of the participant's own, zero when it
 * joins the job and kept across the chunks it runs, and zero again whenever its
 * next chunk is lower than its last: between resets its chunks come in
 * increasing order (a cursor into a list of arrays can live there). */
typedef void (*fo_task)(const void *ctx, size_t chunk, size_t local[2]);

/* Run chunks 0 .. nchunks-1 of `task` on the calling thread and up to
 * nthreads - 1 workers; returns when every chunk has run, once. A call made
 * while another thread's job holds the pool runs on the calling thread alone.
 * nchunks must be below FO_POOL_MAX_CHUNKS. */
void fo_pool_run(int nthreads, size_t nchunks, fo_task task, const void *ctx);
#define FO_POOL_MAX_CHUNKS ((size_t)1 << 24)
#define FO_POOL_MAX_THREADS 256

/* Threads a parallel call uses: OMP_NUM_THREADS (its first value, read once, at
 * the first call of any fo_pool function), else the CPUs this process may run
 * on. n <= 0 restores that default. Capped at FO_POOL_MAX_THREADS. */
void fo_pool_set_num_threads(int n);
int fo_pool_get_num_threads(void);
const char *fo_pool_threads_source(void); /* where the count comes from, in words */

/* 1 when a parallel call now would find a worker awake (spinning since its last
 * job), or when the previous call that asked ended less than a spin time ago:
 * a caller that calls again and again pays one wake-up, then finds its workers
 * spinning. 0 means a parallel call would pay a wake-up (or start the workers).
 * fo_pool_call_ended() marks the end of a call that asked. */
int fo_pool_warm(void);
void fo_pool_call_ended(void);

/* How long an idle worker spins before it sleeps, in microseconds (default
 * FO_POOL_SPIN_US, or FASTOPTIM_SPIN_US read once; 0: sleep at once), and for
 * how much of that it spins on the CPU's pause instruction before it yields
 * the CPU at each turn (FO_POOL_PAUSE_NS; pause_us < 0 leaves it). */
void fo_pool_set_spin_us(long us, long pause_us);
long fo_pool_spin_us(void);
long fo_pool_pause_us(void);

/* State for show_config(): workers started, the wait primitive, and why the
 * last worker that could not start did not (NULL if none failed). */
int fo_pool_workers(void);
const char *fo_pool_wait_name(void);
const char *fo_pool_error(void);

/* Tests only. mode: 0 normal; FO_POOL_LATE: a worker sleeps delay_us after
 * waking, before it looks at the job; FO_POOL_STALE: sleeps delay_us after
 * reading the job, before claiming a chunk of it; FO_POOL_SLOW: sleeps delay_us
 * after claiming each chunk, before running it (the caller too: so workers
 * surely take part); FO_POOL_NEVER: workers wake but take no chunk;
 * FO_POOL_NO_START: starting a worker fails as if pthread_create had. */
enum { FO_POOL_LATE = 1, FO_POOL_STALE = 2, FO_POOL_SLOW = 3, FO_POOL_NEVER = 4,
       FO_POOL_NO_START = 5 };
void fo_pool_debug(int mode, long delay_us);
/* Tests only: chunks run by workers and claims abandoned because the job had
 * ended (a late worker that found a newer job or none), since the last reset. */
void fo_pool_counters(unsigned long *worker_chunks, unsigned long *stale, int reset);

#ifdef __cplusplus
}
#endif
#endif
