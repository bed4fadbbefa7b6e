/*
 * bench/store.c — store throughput: single-row endpoint upserts per second,
 * each its own transaction, with synchronous=NORMAL and FULL, and point reads
 * per second. Prints figures; asserts nothing.
 *
 *   build/bench_store [--seconds S] [--dir DIR]
 *
 * Every loop is bounded by a count and by time. The database lives in a fresh
 * temporary directory (or under --dir, to measure another file system).
 */
#include "store.h"
#include "clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPERATIONS 2000000

typedef struct result {
    size_t operations;
    double seconds;
    double p50_us, p99_us;
} result;

static int64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static int compare_durations(const void *left, const void *right)
{
    int64_t a = *(const int64_t *)left, b = *(const int64_t *)right;
    return (a > b) - (a < b);
}

static void summarize(result *out, int64_t *durations, size_t count, int64_t elapsed_ns)
{
    qsort(durations, count, sizeof(int64_t), compare_durations);
    out->operations = count;
    out->seconds = (double)elapsed_ns / 1e9;
    out->p50_us = count ? (double)durations[count / 2] / 1000.0 : 0;
    out->p99_us = count ? (double)durations[count * 99 / 100] / 1000.0 : 0;
}

static void fail(const char *what, const store_error *error)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, error->message);
    exit(1);
}

static store *open_fresh(const char *dir, const char *name, bool full)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    store_options options = {.path = path, .synchronous_full = full};
    store *db = NULL;
    store_error error;
    if (store_open(&options, &db, &error) != STORE_OK)
        fail("open", &error);
    model_service service;
    model_service_init(&service);
    service.name = "bench";
    store_error put_error;
    if (store_put_service(db, &service, 0, NULL, NULL, &put_error) != STORE_OK)
        fail("put service", &put_error);
    return db;
}

/* Upserts endpoints e0, e1, ... (cycling through 10,000 ids, so both inserts
 * and replacements are measured) until the time or count runs out. */
static result bench_upserts(store *db, double seconds, int64_t *durations)
{
    model_endpoint endpoint;
    model_endpoint_init(&endpoint);
    char id[32];
    endpoint.service = "bench";
    endpoint.id = id;
    endpoint.address = "10.0.0.1";
    endpoint.zone = "zone-a";
    model_labels_set(&endpoint.labels, "version", "v1");
    int64_t start = now_ns(), deadline = start + (int64_t)(seconds * 1e9);
    size_t count = 0;
    store_error error;
    while (count < MAX_OPERATIONS && (count % 64 != 0 || now_ns() < deadline)) {
        snprintf(id, sizeof(id), "e%zu", count % 10000);
        endpoint.port = (uint16_t)(1024 + count % 50000);
        int64_t before = now_ns();
        if (store_put_endpoint(db, &endpoint, 0, clock_wall_ms(), NULL, NULL, &error) != STORE_OK)
            fail("put endpoint", &error);
        durations[count++] = now_ns() - before;
    }
    model_labels_clear(&endpoint.labels);
    result out;
    summarize(&out, durations, count, now_ns() - start);
    return out;
}

/* Reads random endpoints among the first `ids` written. */
static result bench_reads(store *db, double seconds, size_t ids, int64_t *durations)
{
    int64_t start = now_ns(), deadline = start + (int64_t)(seconds * 1e9);
    size_t count = 0;
    char id[32];
    store_error error;
    unsigned seed = 42;
    while (count < MAX_OPERATIONS && (count % 64 != 0 || now_ns() < deadline)) {
        snprintf(id, sizeof(id), "e%zu", (size_t)rand_r(&seed) % ids);
        model_endpoint endpoint;
        int64_t before = now_ns();
        if (store_get_endpoint(db, "bench", id, &endpoint, &error) != STORE_OK)
            fail("get endpoint", &error);
        durations[count++] = now_ns() - before;
        model_endpoint_clear(&endpoint);
    }
    result out;
    summarize(&out, durations, count, now_ns() - start);
    return out;
}

static void print(const char *what, const result *figures)
{
    printf("%-44s %9zu ops in %5.2f s = %9.0f ops/s   p50 %7.1f us   p99 %7.1f us\n", what,
           figures->operations, figures->seconds, (double)figures->operations / figures->seconds,
           figures->p50_us, figures->p99_us);
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    const char *parent = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            parent = argv[++i];
        else {
            fprintf(stderr, "usage: bench_store [--seconds S] [--dir DIR]\n");
            return 2;
        }
    }
    if (seconds <= 0 || seconds > 60) {
        fprintf(stderr, "bench_store: --seconds must be within (0, 60]\n");
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/atrium-bench-XXXXXX", parent);
    if (mkdtemp(dir) == NULL) {
        perror("bench_store: mkdtemp");
        return 1;
    }
    int64_t *durations = malloc(sizeof(int64_t) * MAX_OPERATIONS);
    if (durations == NULL)
        return 1;
    printf("store benchmark: WAL, database under %s, %.1f s per figure\n", dir, seconds);

    store *normal = open_fresh(dir, "normal.db", false);
    result upserts_normal = bench_upserts(normal, seconds, durations);
    print("endpoint upserts, synchronous=NORMAL", &upserts_normal);
    size_t written = upserts_normal.operations < 10000 ? upserts_normal.operations : 10000;
    result reads = bench_reads(normal, seconds, written ? written : 1, durations);
    print("endpoint point reads", &reads);
    store_close(normal);

    store *full = open_fresh(dir, "full.db", true);
    result upserts_full = bench_upserts(full, seconds, durations);
    print("endpoint upserts, synchronous=FULL", &upserts_full);
    store_close(full);

    printf("target: >= 20000 upserts/s with NORMAL: %s\n",
           (double)upserts_normal.operations / upserts_normal.seconds >= 20000 ? "met" : "NOT met");
    free(durations);
    const char *files[] = {"normal.db", "normal.db-wal", "normal.db-shm",
                           "full.db",   "full.db-wal",   "full.db-shm"};
    char path[4200];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}
