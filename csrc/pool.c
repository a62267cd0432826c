/* fastoptim's thread pool (see pool.h for the contract).
 *
 * Claiming. A job of n chunks has one home region of contiguous chunks per
 * participant (the caller's is the first, worker w's the (w+1)-th, the same
 * every call): each starts in its own region, so with every thread present the
 * split is a static one and each thread touches the same memory from call to
 * call (its cache keeps it), then it takes what is left in the others' regions
 * (a thread that is late or absent only means the others take its chunks).
 * Each region has a 64-bit word: the job's generation (high half) and the
 * region's next unclaimed chunk (low half); a chunk is claimed with a
 * compare-and-swap (generation, c) -> (generation, c + 1).
 *
 * Publishing. The job is published like a seqlock: the caller marks every
 * region word SETUP under the new generation, writes the job (task, ctx,
 * nchunks, regions), then publishes each word at its region's start. A
 * participant reads a word, then the job; its compare-and-swap succeeds only if
 * the generation it read the job under is still current, so a late worker never
 * runs a chunk of a job that has ended or of a newer one. The caller waits only
 * for `done` to reach nchunks: a worker that has claimed nothing is never waited
 * for. (Generations are 32 bits: a worker would have to stall across 2^32 jobs
 * to be fooled.)
 *
 * Waiting: idle workers spin on `seq` (bumped for each job) for the spin time,
 * then sleep on it; the caller wakes sleepers only when there are any, so a call
 * that finds its workers spinning makes no system call. */
#define _GNU_SOURCE 1 /* sched_getaffinity, syscall */

#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
#define FO_POOL_THREADS 1
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#define FO_POOL_FUTEX 1
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#endif

/* The idle wait, measured in the MLP training loop of bench/pool_tuning.py (a
 * step, then forward and backward passes on NumPy's BLAS threads): spinning
 * on pause alone let a worker hold a core that a BLAS thread needed (1.07x the
 * 1-thread iteration with one other core busy); yielding after 5 us did not
 * (1.00-1.01x), and spinning 300 us or 1 ms instead of 50 gained nothing. 50 us
 * covers calls that follow one another (a tight loop, clipping then update). */
#ifndef FO_POOL_SPIN_US
#define FO_POOL_SPIN_US 50
#endif
#ifndef FO_POOL_PAUSE_US
#define FO_POOL_PAUSE_US 5
#endif

#define FO_POOL_MAX_SPIN_US 10000000L
#define SETUP 0xFFFFFFFFu /* the word's chunk half while a job is being written */

#if defined(__GNUC__) || defined(__clang__)
#define LOAD(p, mo) __atomic_load_n(p, __ATOMIC_##mo)
#define STORE(p, v, mo) __atomic_store_n(p, v, __ATOMIC_##mo)
#else /* no pool: no other thread reads these */
#define LOAD(p, mo) (*(p))
#define STORE(p, v, mo) (*(p) = (v))
#endif

static int default_threads = 1;
static int default_from_env = 0; /* OMP_NUM_THREADS gave the default */
static int num_threads = 0; /* set by fo_pool_set_num_threads; 0: the default */
static long spin_us = FO_POOL_SPIN_US;
static long pause_us = FO_POOL_PAUSE_US;
static int debug_mode = 0;
static long debug_delay_us = 0;

static int count_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
#if defined(FO_POOL_THREADS) && defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 0)
        return n > INT_MAX ? INT_MAX : (int)n;
#endif
    return 1;
}

static int cap(long n) { return n < 1 ? 1 : n > FO_POOL_MAX_THREADS ? FO_POOL_MAX_THREADS : (int)n; }

/* OMP_NUM_THREADS, FASTOPTIM_SPIN_US: read once. */
static void read_environment(void)
{
    const char *s = getenv("OMP_NUM_THREADS");
    long n = 0;
    if (s) {
        char *end;
        n = strtol(s, &end, 10); /* "4" or "4,2" (nested levels): the first */
        if (end == s || n < 1)
            n = 0;
    }
    default_threads = cap(n > 0 ? n : count_cpus());
    default_from_env = n > 0;
    s = getenv("FASTOPTIM_SPIN_US");
    if (s && *s) {
        char *end;
        long us = strtol(s, &end, 10);
        if (end != s && us >= 0)
            spin_us = us > FO_POOL_MAX_SPIN_US ? FO_POOL_MAX_SPIN_US : us;
    }
}

#ifndef FO_POOL_THREADS

static int setup_done = 0;
static void setup_once(void)
{
    if (!setup_done) {
        read_environment();
        setup_done = 1;
    }
}

void fo_pool_run(int nthreads, size_t nchunks, fo_task task, const void *ctx)
{
    size_t local[2] = {0, 0};
    (void)nthreads;
    for (size_t c = 0; c < nchunks; c++)
        task(ctx, c, local);
}

int fo_pool_warm(void) { return 0; }
void fo_pool_call_ended(void) {}
int fo_pool_workers(void) { return 0; }
const char *fo_pool_wait_name(void) { return "none"; }
const char *fo_pool_error(void) { return "built without POSIX threads: every call runs serially"; }
void fo_pool_debug(int mode, long delay_us) { (void)mode; (void)delay_us; }
void fo_pool_counters(unsigned long *worker_chunks, unsigned long *stale, int reset)
{
    (void)reset;
    *worker_chunks = *stale = 0;
}

#else /* FO_POOL_THREADS */

#define ALIGNED __attribute__((aligned(64)))

static struct {
    /* the job (published by the region words below) */
    ALIGNED fo_task task;
    const void *ctx;
    uint32_t nchunks;
    int nregions;                /* participants: the caller and workers 0 .. nregions-2 */
    ALIGNED uint32_t done;       /* chunks finished; the caller may sleep on it */
    uint32_t caller_sleeps;
    ALIGNED uint32_t seq;        /* bumped per job; idle workers sleep on it */
    uint32_t sleepers;
    ALIGNED int owned;           /* a caller is running a job */
    uint32_t gen;                /* the owner's */
    int nworkers;                /* started */
    int failed;                  /* a worker could not start: do not retry */
    char error[128];
} P;

static struct region {
    ALIGNED uint64_t word; /* generation << 32 | next chunk (SETUP while being written) */
} R[FO_POOL_MAX_THREADS];

static struct worker {
    ALIGNED unsigned long chunks; /* run by this worker (for tests) */
    unsigned long stale;
} W[FO_POOL_MAX_THREADS];

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* ---- waiting on a 32-bit word ---- */

#ifdef FO_POOL_FUTEX
static void wait_on(uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static void wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}
const char *fo_pool_wait_name(void) { return "futex"; }
static void reset_wait(void) {}
#else
/* One mutex and condition variable for both words: wake-ups are rare (only
 * when a worker or the caller has gone to sleep) and cheap to over-deliver. */
static pthread_mutex_t wait_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cond = PTHREAD_COND_INITIALIZER;
static void wait_on(uint32_t *addr, uint32_t expected)
{
    pthread_mutex_lock(&wait_mutex);
    while (LOAD(addr, SEQ_CST) == expected)
        pthread_cond_wait(&wait_cond, &wait_mutex);
    pthread_mutex_unlock(&wait_mutex);
}
static void wake(uint32_t *addr, int n)
{
    (void)addr;
    (void)n;
    pthread_mutex_lock(&wait_mutex);
    pthread_cond_broadcast(&wait_cond);
    pthread_mutex_unlock(&wait_mutex);
}
const char *fo_pool_wait_name(void) { return "condition variable"; }
static void reset_wait(void)
{
    pthread_mutex_init(&wait_mutex, NULL);
    pthread_cond_init(&wait_cond, NULL);
}
#endif

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Spin while (*addr == value) == equal, for up to the spin time; returns the
 * last value read. The first FO_POOL_PAUSE_US spin on the CPU's pause (a
 * worker catches a call that follows at once in well under a microsecond);
 * after that each turn yields the CPU, so a spinning worker gives way at once
 * to any thread that has work on its core: NumPy's BLAS threads, another
 * process, or the caller of the job it just left. */
static uint32_t spin(uint32_t *addr, uint32_t value, int equal)
{
    const uint64_t budget = (uint64_t)LOAD(&spin_us, RELAXED) * 1000u;
    const uint64_t pause = (uint64_t)LOAD(&pause_us, RELAXED) * 1000u;
    uint64_t start = 0, t = 0;
    for (unsigned i = 1;; i++) {
        const uint32_t v = LOAD(addr, ACQUIRE);
        if ((v == value) != equal || budget == 0)
            return v;
        if (t - start < pause) {
            cpu_relax();
            if (i % 64) /* a clock read costs about as much as 64 pauses */
                continue;
        } else {
            sched_yield();
        }
        t = now_ns();
        if (!start)
            start = t;
        else if (t - start >= budget)
            return LOAD(addr, ACQUIRE);
    }
}

/* ---- a fork leaves the child with none of the pool's threads ---- */

static void after_fork_in_child(void)
{
    memset(&P, 0, sizeof P);
    memset(R, 0, sizeof R);
    memset(W, 0, sizeof W);
    reset_wait();
}

static void setup(void)
{
    read_environment();
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

static void setup_once(void) { pthread_once(&once, setup); }

/* ---- taking part in a job (workers: id >= 0; the caller: -1) ---- */

/* Region r of m over n chunks: [r*n/m, (r+1)*n/m). */
static uint32_t region_start(int r, int m, uint32_t n)
{
    return (uint32_t)((uint64_t)r * n / (uint32_t)m);
}

static void participate(int id)
{
    const int home = id + 1;
    uint64_t v = LOAD(&R[home].word, ACQUIRE);
    const uint32_t gen = (uint32_t)(v >> 32);
    if ((uint32_t)v == SETUP)
        return; /* a job is being written: its seq bump will follow */
    const fo_task task = LOAD(&P.task, RELAXED);
    const void *const ctx = LOAD(&P.ctx, RELAXED);
    const uint32_t n = LOAD(&P.nchunks, RELAXED);
    const int m = LOAD(&P.nregions, RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (home >= m)
        return; /* more workers than this job's thread count */
    const int mode = LOAD(&debug_mode, RELAXED);
    if (id >= 0 && mode == FO_POOL_NEVER)
        return;
    if (id >= 0 && mode == FO_POOL_STALE)
        sleep_us(LOAD(&debug_delay_us, RELAXED));
    size_t local[2] = {0, 0};
    uint32_t last = 0;
    for (int k = 0; k < m; k++) { /* home first, then the others' leftovers */
        const int r = (home + k) % m;
        const uint32_t hi = region_start(r + 1, m, n);
        v = LOAD(&R[r].word, ACQUIRE);
        for (;;) {
            if ((uint32_t)(v >> 32) != gen) { /* the job ended; this is a newer one */
                if (id >= 0)
                    STORE(&W[id].stale, LOAD(&W[id].stale, RELAXED) + 1, RELAXED);
                return;
            }
            const uint32_t c = (uint32_t)v;
            if (c >= hi)
                break; /* this region is taken (or, SETUP, not ours to take) */
            if (!__atomic_compare_exchange_n(&R[r].word, &v, v + 1, 0, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE))
                continue; /* v now holds the current word */
            if (mode == FO_POOL_SLOW)
                sleep_us(LOAD(&debug_delay_us, RELAXED));
            if (c < last) /* wrapped to a lower region: the task's cursor starts over */
                local[0] = local[1] = 0;
            last = c;
            task(ctx, c, local);
            if (id >= 0)
                STORE(&W[id].chunks, LOAD(&W[id].chunks, RELAXED) + 1, RELAXED);
            /* seq_cst, with the caller's store to caller_sleeps and load of done:
             * one of the two sees the other, so the last chunk cannot miss a
             * sleeping caller */
            if (__atomic_add_fetch(&P.done, 1, __ATOMIC_SEQ_CST) == n &&
                LOAD(&P.caller_sleeps, SEQ_CST))
                wake(&P.done, 1);
            v = LOAD(&R[r].word, ACQUIRE);
        }
    }
}

static void *worker_main(void *arg)
{
    const int id = (int)(intptr_t)arg;
    uint32_t seen = 0; /* the pool's first generation is 1 */
    for (;;) {
        uint32_t s = spin(&P.seq, seen, 1);
        while (s == seen) {
            /* seq_cst, with the caller's store to seq and load of sleepers */
            __atomic_add_fetch(&P.sleepers, 1, __ATOMIC_SEQ_CST);
            if (LOAD(&P.seq, SEQ_CST) == seen)
                wait_on(&P.seq, seen);
            __atomic_sub_fetch(&P.sleepers, 1, __ATOMIC_SEQ_CST);
            s = LOAD(&P.seq, ACQUIRE);
        }
        seen = s;
        if (LOAD(&debug_mode, RELAXED) == FO_POOL_LATE)
            sleep_us(LOAD(&debug_delay_us, RELAXED));
        participate(id);
    }
    return NULL;
}

/* Start workers up to `want` (the caller owns the pool). Returns how many run. */
static int start_workers(int want)
{
    while (P.nworkers < want && !LOAD(&P.failed, RELAXED)) {
        pthread_attr_t attr;
        pthread_t th;
        sigset_t all, old;
        int rc = LOAD(&debug_mode, RELAXED) == FO_POOL_NO_START ? EAGAIN : pthread_attr_init(&attr);
        if (rc == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            /* signals go to Python's threads, never to a worker */
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)P.nworkers);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            pthread_attr_destroy(&attr);
        }
        if (rc != 0) {
            snprintf(P.error, sizeof P.error,
                     "could not start worker %d of %d (pthread_create: error %d%s); calls "
                     "use the threads that started",
                     P.nworkers + 1, want, rc, rc == EAGAIN ? ", EAGAIN" : "");
            STORE(&P.failed, 1, RELEASE);
            break;
        }
        STORE(&P.nworkers, P.nworkers + 1, RELAXED);
    }
    return P.nworkers;
}

void fo_pool_run(int nthreads, size_t nchunks, fo_task task, const void *ctx)
{
    setup_once();
    int expected = 0;
    if (nthreads > 1 && nchunks > 1 && nchunks < FO_POOL_MAX_CHUNKS &&
        __atomic_compare_exchange_n(&P.owned, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        const int allowed = cap(nthreads) - 1;
        const int nw = start_workers(allowed);
        if (nw > 0) {
            const uint32_t n = (uint32_t)nchunks, gen = ++P.gen;
            const int m = (nw < allowed ? nw : allowed) + 1;
            /* write the job (see the top of this file) */
            for (int r = 0; r < m; r++)
                STORE(&R[r].word, (uint64_t)gen << 32 | SETUP, RELAXED);
            __atomic_thread_fence(__ATOMIC_RELEASE);
            STORE(&P.task, task, RELAXED);
            STORE(&P.ctx, ctx, RELAXED);
            STORE(&P.nchunks, n, RELAXED);
            STORE(&P.nregions, m, RELAXED);
            STORE(&P.done, 0, RELAXED);
            for (int r = 0; r < m; r++)
                STORE(&R[r].word, (uint64_t)gen << 32 | region_start(r, m, n), RELEASE);
            /* wake sleepers (any, if some cannot take part: they go back to sleep) */
            STORE(&P.seq, gen, SEQ_CST);
            if (LOAD(&P.sleepers, SEQ_CST)) {
                const int useful = (size_t)allowed < nchunks - 1 ? allowed : (int)(nchunks - 1);
                wake(&P.seq, nw > allowed ? INT_MAX : useful);
            }
            participate(-1);
            /* wait for the chunks that workers claimed */
            uint32_t d = spin(&P.done, n, 0);
            while (d != n) {
                STORE(&P.caller_sleeps, 1, SEQ_CST);
                d = LOAD(&P.done, SEQ_CST);
                if (d != n)
                    wait_on(&P.done, d);
                d = LOAD(&P.done, ACQUIRE);
            }
            STORE(&P.caller_sleeps, 0, RELAXED);
            STORE(&P.owned, 0, RELEASE);
            return;
        }
        STORE(&P.owned, 0, RELEASE);
    }
    size_t local[2] = {0, 0};
    for (size_t c = 0; c < nchunks; c++)
        task(ctx, c, local);
}

static uint64_t last_end; /* when the last call that asked fo_pool_warm() ended */

int fo_pool_warm(void)
{
    const int nw = LOAD(&P.nworkers, RELAXED);
    if (nw > 0 && (int)LOAD(&P.sleepers, RELAXED) < nw)
        return 1;
    return now_ns() - LOAD(&last_end, RELAXED) < (uint64_t)LOAD(&spin_us, RELAXED) * 1000u;
}

void fo_pool_call_ended(void) { STORE(&last_end, now_ns(), RELAXED); }

int fo_pool_workers(void) { return LOAD(&P.nworkers, RELAXED); }

const char *fo_pool_error(void) { return LOAD(&P.failed, ACQUIRE) ? P.error : NULL; }

void fo_pool_debug(int mode, long delay_us)
{
    STORE(&debug_delay_us, delay_us, RELAXED);
    STORE(&debug_mode, mode, RELAXED);
}

void fo_pool_counters(unsigned long *worker_chunks, unsigned long *stale, int reset)
{
    unsigned long c = 0, s = 0;
    for (int i = 0; i < FO_POOL_MAX_THREADS; i++) {
        c += LOAD(&W[i].chunks, RELAXED);
        s += LOAD(&W[i].stale, RELAXED);
        if (reset) { /* only meaningful while no job runs */
            STORE(&W[i].chunks, 0, RELAXED);
            STORE(&W[i].stale, 0, RELAXED);
        }
    }
    *worker_chunks = c;
    *stale = s;
}

#endif /* FO_POOL_THREADS */

void fo_pool_set_num_threads(int n)
{
    setup_once();
    STORE(&num_threads, n > 0 ? cap(n) : 0, RELAXED);
#ifdef FO_POOL_THREADS
    STORE(&P.failed, 0, RELAXED); /* a new request may try to start workers again */
#endif
}

int fo_pool_get_num_threads(void)
{
    setup_once();
    const int n = LOAD(&num_threads, RELAXED);
    return n > 0 ? n : default_threads;
}

const char *fo_pool_threads_source(void)
{
    setup_once();
    if (LOAD(&num_threads, RELAXED) > 0)
        return "set_num_threads or threadpoolctl";
    return default_from_env ? "OMP_NUM_THREADS" : "the CPUs this process may use";
}

void fo_pool_set_spin_us(long us, long pause)
{
    setup_once();
    STORE(&spin_us, us <= 0 ? 0 : us > FO_POOL_MAX_SPIN_US ? FO_POOL_MAX_SPIN_US : us, RELAXED);
    if (pause >= 0)
        STORE(&pause_us, pause > FO_POOL_MAX_SPIN_US ? FO_POOL_MAX_SPIN_US : pause, RELAXED);
}

long fo_pool_pause_us(void)
{
    setup_once();
    return LOAD(&pause_us, RELAXED);
}

long fo_pool_spin_us(void)
{
    setup_once();
    return LOAD(&spin_us, RELAXED);
}
