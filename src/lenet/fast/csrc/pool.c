/* lenet_parallel: a loop over tasks spread over threads. The kernels are compiled without OpenMP everywhere
 * (Apple's clang has none), and every call is cut into the same tasks, handed out one at a time through an
 * atomic counter, so that a thread that another process holds up delays only its own task. Who runs them:
 *
 * - PyTorch's own OpenMP threads, where the process has that runtime (Python finds it and hands over its
 *   GOMP_parallel: lenet_use_host_threads). After each of its operations PyTorch's threads spin for a
 *   while; threads of our own would then fight them for the cores (measured: the lane step took 3.2 ms
 *   instead of 1.3 after an index_select or an optimiser step, on 2 cores), whereas on its own team our
 *   tasks start at once.
 * - Otherwise a pool of POSIX threads of our own, living as long as the library: between jobs a worker
 *   spins for a short while (SPIN_NS) and then sleeps on a condition variable.
 *
 * One job at a time per library; which threads run it changes no result.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "common.h"

/* A worker spins this long after a job before it sleeps: longer than the gap between two training steps'
 * calls (the optimiser and the next batch, ~0.1-0.3 ms for LeNet-5), so that it is awake for the next one;
 * short enough not to hold a core that PyTorch or another process wants for long. */
enum { MAX_WORKERS = 255, SPIN_NS = 500000 };

static struct {
    pthread_mutex_t call;  /* held through a whole parallel call */
    pthread_mutex_t lock;  /* with wake and done: sleeping and waking */
    pthread_cond_t wake, done;
    int workers;           /* started so far; worker i is thread i (the caller is thread 0) */
    lenet_task fn;         /* the current job */
    void *ctx;
    int tasks, helpers;    /* workers 1..helpers take part in it */
    atomic_int next;       /* the next task to hand out */
    atomic_int running;    /* helpers still in the job */
    atomic_ulong generation; /* one more for every job */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, NULL, NULL, 0, 0, 0, 0, 0};

static unsigned long start_generation[MAX_WORKERS + 1]; /* what worker i last saw when it was started */

static void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* PyTorch's OpenMP runtime, when lenet_use_host_threads was given it: GOMP_parallel(fn, data, threads, 0)
 * runs fn(data) on a team of `threads`, the caller among them, and returns when all are done. */
typedef void (*gomp_parallel)(void (*fn)(void *), void *data, unsigned threads, unsigned flags);
static gomp_parallel host_parallel;
static int (*host_thread_num)(void);

void lenet_use_host_threads(void *parallel, void *thread_num) {
    host_parallel = (gomp_parallel)parallel;
    host_thread_num = (int (*)(void))thread_num;
    if (!host_parallel || !host_thread_num) host_parallel = NULL, host_thread_num = NULL;
}

static void take_tasks(int thread) {
    pool.fn(pool.ctx, LENET_THREAD_START, thread);
    for (int task; (task = atomic_fetch_add(&pool.next, 1)) < pool.tasks;) pool.fn(pool.ctx, task, thread);
    pool.fn(pool.ctx, LENET_THREAD_END, thread);
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    unsigned long seen = start_generation[id];
    for (;;) {
        unsigned long now = atomic_load_explicit(&pool.generation, memory_order_acquire);
        for (long long until = 0, spins = 0; now == seen; spins++) { /* spin a while, then sleep */
            if (spins % 64 == 0) {
                const long long t = now_ns();
                if (!until) until = t + SPIN_NS;
                if (t > until) {
                    pthread_mutex_lock(&pool.lock);
                    while ((now = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
                    pthread_mutex_unlock(&pool.lock);
                    break;
                }
            }
            pause_briefly();
            now = atomic_load_explicit(&pool.generation, memory_order_acquire);
        }
        seen = now;
        if (id > pool.helpers) continue;
        take_tasks(id);
        if (atomic_fetch_sub(&pool.running, 1) == 1) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

static void host_team_body(void *unused) {
    (void)unused;
    take_tasks(host_thread_num());
}

/* A forked child has the pool's memory but none of its threads: it starts them again. */
static void forget_workers(void) {
    pthread_mutex_init(&pool.call, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = 0;
}

static pthread_once_t at_fork_once = PTHREAD_ONCE_INIT;
static void register_at_fork(void) { pthread_atfork(NULL, NULL, forget_workers); }

void lenet_parallel(int threads, int tasks, lenet_task fn, void *ctx) {
    threads = LENET_MIN(threads, LENET_MIN(tasks, MAX_WORKERS + 1));
    if (threads <= 1) {
        fn(ctx, LENET_THREAD_START, 0);
        for (int task = 0; task < tasks; task++) fn(ctx, task, 0);
        fn(ctx, LENET_THREAD_END, 0);
        return;
    }
    pthread_once(&at_fork_once, register_at_fork);
    pthread_mutex_lock(&pool.call);
    if (host_parallel) {
        pool.fn = fn, pool.ctx = ctx, pool.tasks = tasks;
        atomic_store(&pool.next, 0);
        host_parallel(host_team_body, NULL, (unsigned)threads, 0);
        pthread_mutex_unlock(&pool.call);
        return;
    }
    while (pool.workers < threads - 1) { /* start the workers this job needs (they wait for it) */
        const int id = pool.workers + 1;
        start_generation[id] = atomic_load(&pool.generation);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int failed = pthread_create(&t, &attr, worker, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (failed) break;
        pool.workers = id;
    }
    pool.fn = fn, pool.ctx = ctx, pool.tasks = tasks;
    pool.helpers = LENET_MIN(threads - 1, pool.workers);
    atomic_store(&pool.next, 0);
    atomic_store(&pool.running, pool.helpers);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    take_tasks(0);
    for (long spins = 0; atomic_load(&pool.running) > 0; spins++) {
        if (spins > 20000) {
            pthread_mutex_lock(&pool.lock);
            while (atomic_load(&pool.running) > 0) pthread_cond_wait(&pool.done, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
            break;
        }
        pause_briefly();
    }
    pthread_mutex_unlock(&pool.call);
}
