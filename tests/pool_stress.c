/* Stress test of csrc/pool.c on its own (tests/test_pool_c.py builds and runs it,
 * also under ThreadSanitizer): jobs of random sizes, thread counts and worker
 * misbehaviour (late, stale, slow, idle: fo_pool_debug), from one caller and then
 * from three callers at once. Every chunk must run exactly once per job, in the
 * job it belongs to, and a participant's chunks must rise between cursor resets.
 * Prints "ok ..." and exits 0, or says what went wrong and exits 1 (or is killed
 * by SIGALRM after 240 s if a job never completes). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"

#define MAXCHUNKS 500

typedef struct {
    unsigned hits[MAXCHUNKS]; /* times chunk c ran (atomic) */
    unsigned job[MAXCHUNKS];  /* the job that ran it: a plain write, so two threads
                                 running one chunk is a data race ThreadSanitizer sees */
    size_t n;
    unsigned id;
} job_t;

static int failed = 0;

static void fail(const char *what, size_t c)
{
    fprintf(stderr, "%s (chunk %zu)\n", what, c);
    __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
}

static void task(const void *x, size_t c, size_t local[2])
{
    job_t *j = (job_t *)x;
    if (c >= j->n) {
        fail("chunk out of range", c);
        return;
    }
    if (local[0] && c <= local[1])
        fail("chunks not rising between cursor resets", c);
    local[0] = 1;
    local[1] = c;
    __atomic_add_fetch(&j->hits[c], 1, __ATOMIC_RELAXED);
    j->job[c] = j->id;
}

static int run_jobs(unsigned seed, int jobs, int vary)
{
    job_t *j = malloc(sizeof *j);
    if (!j)
        return 1;
    for (int k = 0; k < jobs && !__atomic_load_n(&failed, __ATOMIC_RELAXED); k++) {
        if (vary && k % (jobs / 5) == 0) {
            const int mode = k / (jobs / 5); /* 0 normal, then late, stale, slow, never */
            fo_pool_debug(mode, mode == 3 ? 5 : mode ? 50 : 0); /* slow: every chunk */
            fo_pool_set_num_threads(2 + mode % 3);
        }
        memset(j, 0, sizeof *j);
        j->n = 1 + (size_t)(rand_r(&seed) % MAXCHUNKS);
        j->id = (unsigned)k + 1;
        fo_pool_run(vary ? fo_pool_get_num_threads() : 3, j->n, task, j);
        for (size_t c = 0; c < j->n; c++)
            if (j->hits[c] != 1 || j->job[c] != j->id) {
                fprintf(stderr, "job %d: chunk %zu ran %u times\n", k, c, j->hits[c]);
                free(j);
                return 1;
            }
    }
    free(j);
    return __atomic_load_n(&failed, __ATOMIC_RELAXED);
}

static void *caller(void *arg)
{
    return (void *)(size_t)run_jobs((unsigned)(size_t)arg, 4000, 0);
}

int main(int argc, char **argv)
{
    const int jobs = argc > 1 ? atoi(argv[1]) : 20000;
    alarm(240); /* a job that never completes (a lost chunk or wake-up) ends the run */
    if (run_jobs(1, jobs < 5 ? 5 : jobs, 1))
        return 1;
    fo_pool_debug(0, 0);
    pthread_t t[3];
    int bad = 0;
    for (size_t i = 0; i < 3; i++)
        if (pthread_create(&t[i], NULL, caller, (void *)(i + 2)) != 0)
            return 1;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    if (bad)
        return 1;
    unsigned long chunks, stale;
    fo_pool_counters(&chunks, &stale, 0);
    printf("ok: %d jobs, then 3 callers at once; workers ran %lu chunks; %lu stale claims "
           "refused\n", jobs, chunks, stale);
    return 0;
}
