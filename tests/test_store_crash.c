/*
 * test_store_crash.c — durability across a killed process.
 *
 * Each round forks a child that opens the store (synchronous=NORMAL, WAL) and
 * writes as fast as it can: an endpoint with a new id each time and, now and
 * then, a new service. After each call that returned STORE_OK it writes the
 * write's number to a pipe. The parent collects these acknowledgements, kills
 * the child with SIGKILL after a random 20..300 ms, then reopens the store and
 * checks that every acknowledged write of every round so far is there and that
 * SQLite's integrity check passes. The database is kept across rounds, so each
 * round also recovers from the previous round's crash.
 *
 * Reproduce a run with ATRIUM_CRASH_SEED=<seed printed by a failing run>.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "model.h"
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS           5
#define CHILD_MAX_WRITES 200000
#define CHILD_MAX_MS     5000
#define READY_TIMEOUT_MS 30000
#define SERVICE_EVERY    16 /* every 16th write is a service, the rest endpoints */

/* The fixed-size record the child writes to the pipe (atomic: < PIPE_BUF). */
enum { ACK_READY = 1, ACK_ENDPOINT = 2, ACK_SERVICE = 3, ACK_FAILED = 4 };
typedef struct ack {
    uint32_t kind;
    uint32_t n; /* write number; for ACK_FAILED the store_status */
} ack;

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

/* Acknowledged writes, of all rounds. */
typedef struct acked {
    uint32_t round;
    uint32_t kind;
    uint32_t n;
} acked;

typedef struct ack_set {
    acked *items;
    size_t count;
    size_t capacity;
} ack_set;

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void endpoint_id(char *out, size_t size, uint32_t round, uint32_t n)
{
    snprintf(out, size, "r%u-e%u", round, n);
}

static void service_name(char *out, size_t size, uint32_t round, uint32_t n)
{
    snprintf(out, size, "r%u-s%u", round, n);
}

static int write_ack(int fd, uint32_t kind, uint32_t n)
{
    ack record = {kind, n};
    ssize_t written;
    do {
        written = write(fd, &record, sizeof record);
    } while (written < 0 && errno == EINTR);
    return written == (ssize_t)sizeof record ? 0 : -1;
}

/* ---- the child ---------------------------------------------------------------- */

/* Runs in the forked child; never returns into cmocka. */
static void child_main(const char *path, uint32_t round, int fd)
{
    store_options options = {0};
    options.path = path;
    options.synchronous_full = false; /* NORMAL: durable against a process crash */
    store *db = NULL;
    store_error err;
    memset(&err, 0, sizeof err);
    store_status status = store_open(&options, &db, &err);
    if (status != STORE_OK) {
        fprintf(stderr, "child: store_open: %s\n", err.message);
        write_ack(fd, ACK_FAILED, (uint32_t)status);
        _exit(2);
    }

    model_service service;
    model_service_init(&service);
    service.name = strdup("web");
    status = store_put_service(db, &service, 0, NULL, NULL, &err);
    model_service_clear(&service);
    if (status != STORE_OK) {
        fprintf(stderr, "child: put service web: %s\n", err.message);
        write_ack(fd, ACK_FAILED, (uint32_t)status);
        _exit(2);
    }
    if (write_ack(fd, ACK_READY, 0) != 0) {
        _exit(3);
    }

    int64_t start = monotonic_ms();
    char name[64];
    for (uint32_t n = 0; n < CHILD_MAX_WRITES; n++) {
        if (monotonic_ms() - start > CHILD_MAX_MS) {
            break;
        }
        uint32_t kind;
        memset(&err, 0, sizeof err);
        if (n % SERVICE_EVERY == SERVICE_EVERY - 1) {
            kind = ACK_SERVICE;
            model_service_init(&service);
            service_name(name, sizeof name, round, n);
            service.name = strdup(name);
            status = store_put_service(db, &service, 0, NULL, NULL, &err);
            model_service_clear(&service);
        } else {
            kind = ACK_ENDPOINT;
            model_endpoint endpoint;
            model_endpoint_init(&endpoint);
            endpoint_id(name, sizeof name, round, n);
            endpoint.service = strdup("web");
            endpoint.id = strdup(name);
            endpoint.address = strdup("10.0.0.1");
            endpoint.port = (uint16_t)(1 + n % 65535);
            status = store_put_endpoint(db, &endpoint, 0, 1000, NULL, NULL, &err);
            model_endpoint_clear(&endpoint);
        }
        if (status != STORE_OK) {
            fprintf(stderr, "child: write %u: %s\n", n, err.message);
            write_ack(fd, ACK_FAILED, (uint32_t)status);
            store_close(db);
            _exit(4);
        }
        if (write_ack(fd, kind, n) != 0) {
            _exit(3);
        }
    }
    store_close(db);
    _exit(0);
}

/* ---- the parent --------------------------------------------------------------- */

typedef struct reader {
    int fd;
    unsigned char buffer[sizeof(ack) * 512];
    size_t have;
    bool eof;
    bool ready;
    bool failed;
    uint32_t failed_status;
} reader;

static void record_ack(ack_set *set, uint32_t round, uint32_t kind, uint32_t n)
{
    if (set->count == set->capacity) {
        size_t capacity = set->capacity ? set->capacity * 2 : 4096;
        acked *items = realloc(set->items, capacity * sizeof *items);
        assert_non_null(items);
        set->items = items;
        set->capacity = capacity;
    }
    set->items[set->count++] = (acked){round, kind, n};
}

/* Reads what is available (waiting at most timeout_ms) and files complete
 * records. */
static void read_acks(reader *r, ack_set *set, uint32_t round, int timeout_ms)
{
    if (r->eof) {
        return;
    }
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0) {
        assert_int_equal(errno, EINTR);
        return;
    }
    if (ready == 0) {
        return;
    }
    ssize_t got = read(r->fd, r->buffer + r->have, sizeof r->buffer - r->have);
    if (got < 0) {
        assert_int_equal(errno, EINTR);
        return;
    }
    if (got == 0) {
        r->eof = true;
        return;
    }
    r->have += (size_t)got;
    size_t used = 0;
    while (r->have - used >= sizeof(ack)) {
        ack record;
        memcpy(&record, r->buffer + used, sizeof record);
        used += sizeof record;
        switch (record.kind) {
        case ACK_READY:
            r->ready = true;
            break;
        case ACK_ENDPOINT:
        case ACK_SERVICE:
            record_ack(set, round, record.kind, record.n);
            break;
        case ACK_FAILED:
            r->failed = true;
            r->failed_status = record.n;
            break;
        default:
            fail_msg("bad record kind %u from the child", record.kind);
        }
    }
    memmove(r->buffer, r->buffer + used, r->have - used);
    r->have -= used;
}

/* Checks that every acknowledged write is in the store and that it is intact. */
static void verify(const char *path, const ack_set *set)
{
    store_options options = {0};
    options.path = path;
    store *db = NULL;
    store_error err;
    memset(&err, 0, sizeof err);
    store_status status = store_open(&options, &db, &err);
    if (status != STORE_OK) {
        fail_msg("reopen after the crash failed: %d %s", (int)status, err.message);
    }

    bool ok = false;
    status = store_check_integrity(db, &ok, &err);
    if (status != STORE_OK || !ok) {
        store_close(db);
        fail_msg("integrity check: status %d ok %d: %s", (int)status, (int)ok, err.message);
    }

    char name[64];
    size_t missing = 0;
    for (size_t i = 0; i < set->count; i++) {
        const acked *a = &set->items[i];
        memset(&err, 0, sizeof err);
        if (a->kind == ACK_ENDPOINT) {
            model_endpoint endpoint;
            memset(&endpoint, 0, sizeof endpoint);
            endpoint_id(name, sizeof name, a->round, a->n);
            status = store_get_endpoint(db, "web", name, &endpoint, &err);
            if (status == STORE_OK) {
                if (endpoint.port != (uint16_t)(1 + a->n % 65535)) {
                    print_message("endpoint web/%s has port %u, wrote %u\n", name, endpoint.port,
                                  1 + a->n % 65535);
                    missing++;
                }
                model_endpoint_clear(&endpoint);
            }
        } else {
            model_service service;
            memset(&service, 0, sizeof service);
            service_name(name, sizeof name, a->round, a->n);
            status = store_get_service(db, name, &service, &err);
            if (status == STORE_OK) {
                model_service_clear(&service);
            }
        }
        if (status != STORE_OK) {
            if (missing < 10) {
                print_message("acknowledged %s %s is lost: status %d %s\n",
                              a->kind == ACK_ENDPOINT ? "endpoint" : "service", name, (int)status,
                              err.message);
            }
            missing++;
        }
    }
    int64_t revision = 0;
    status = store_revision(db, &revision, &err);
    store_close(db);
    assert_int_equal(status, STORE_OK);
    assert_int_equal(missing, 0);
    /* Each acknowledged write was one revision. */
    assert_true(revision >= (int64_t)set->count);
}

static void test_crash_keeps_acknowledged_writes(void **state)
{
    fixture *f = *state;
    unsigned seed = (unsigned)time(NULL);
    const char *env = getenv("ATRIUM_CRASH_SEED");
    if (env != NULL && env[0] != '\0') {
        seed = (unsigned)strtoul(env, NULL, 10);
    }
    print_message("crash test seed %u (ATRIUM_CRASH_SEED=%u to repeat)\n", seed, seed);
    srand(seed);

    ack_set set = {0};
    size_t total_before = 0;
    for (uint32_t round = 1; round <= ROUNDS; round++) {
        int delay_ms = 20 + rand() % 281; /* 20..300 */
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_main(f->path, round, fds[1]);
            _exit(1); /* not reached */
        }
        close(fds[1]);

        reader r = {.fd = fds[0]};
        /* Wait until the child has the store open, so the kill lands among writes. */
        int64_t ready_deadline = monotonic_ms() + READY_TIMEOUT_MS;
        while (!r.ready && !r.eof && !r.failed && monotonic_ms() < ready_deadline) {
            read_acks(&r, &set, round, 100);
        }
        if (!r.ready) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(fds[0]);
            free(set.items);
            fail_msg("round %u: the child never got ready (failed %d status %u, eof %d)", round,
                     (int)r.failed, r.failed_status, (int)r.eof);
        }

        int64_t kill_at = monotonic_ms() + delay_ms;
        for (int64_t now = monotonic_ms(); now < kill_at && !r.eof; now = monotonic_ms()) {
            read_acks(&r, &set, round, (int)(kill_at - now));
        }
        kill(pid, SIGKILL);
        while (!r.eof) {
            read_acks(&r, &set, round, 1000);
        }
        close(fds[0]);
        int wstatus = 0;
        assert_int_equal(waitpid(pid, &wstatus, 0), pid);
        bool killed = WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL;
        bool finished = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
        if (r.failed || !(killed || finished)) {
            free(set.items);
            fail_msg("round %u: the child failed (store status %u, wait status %d)", round,
                     r.failed_status, wstatus);
        }
        print_message("round %u: killed after %d ms, %zu acknowledged writes\n", round, delay_ms,
                      set.count - total_before);
        total_before = set.count;

        verify(f->path, &set);
    }
    /* Something must have been written for the test to mean anything. */
    size_t total = set.count;
    free(set.items);
    assert_true(total > 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/atrium-test-crash-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/atrium.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char file[160];
        snprintf(file, sizeof file, "%s%s", f->path, suffixes[i]);
        unlink(file);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_keeps_acknowledged_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
