/*
 * ca.c — the certificate authority's issuance rate, two ways:
 *
 *   1. in-process: ca_open on a fresh temporary directory, K CSRs built
 *      beforehand (workload_generate_key + workload_build_csr, one identity),
 *      then ca_sign_csr in a loop on one thread for --inproc-seconds (at most
 *      --inproc-max signings) -> signings per second and p50/p99 per signing;
 *   2. through gRPC (only when --tls is given): --clients threads, each with
 *      its own ca_client (one channel, one TLS connection) and its own CSRs
 *      built beforehand, calling CreateCertificate with a join token for
 *      --seconds (at most --max-calls calls in all) -> certificates issued per
 *      second and p50/p99 latency. Join tokens (1000 uses each, the most
 *      atriumd allows) are minted over the admin REST API as they run out;
 *      each call claims one use, so no token is ever asked for more uses than
 *      it has. With --pid, atriumd's CPU time during the run is reported.
 *
 * Prints figures and one machine-readable line per part:
 *   RESULT inproc signs_per_s=... p50_us=... p99_us=... count=...
 *   RESULT grpc issued_per_s=... p50_ms=... p99_ms=... count=... errors=... server_cpu=...
 * Asserts nothing about speed. Bounded: every loop has a time and a count
 * limit, every call a deadline. Only 127.0.0.1 (the addresses given).
 * Exit 0 when the measurements completed, 2 when they could not (bad
 * arguments, setup failures, or calls that failed).
 *
 *   bench_ca [--inproc-seconds S] [--inproc-max N] [--csrs K]
 *            [--tls 127.0.0.1:P --rest 127.0.0.1:Q --admin-token-file F
 *             --bundle-file F [--clients C] [--seconds D] [--max-calls N]
 *             [--timeout-ms T] [--pid PID]] [--service NAME]
 */
#include "ca.h"
#include "ca_client.h"
#include "model.h"
#include "workload.h"

#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TOKEN_USES      1000 /* JOIN_TOKEN_USES_MAX */
#define TOKEN_TTL_S     3600
#define MAX_TOKENS      1000 /* bounds minting: 1,000,000 calls at most */
#define MAX_CLIENTS     256
#define MAX_CSRS        4096
#define SHOWN_ERRORS    5
#define WARMUP_CALLS    2 /* per client, before the clock starts (connects TLS) */
#define REST_TIMEOUT_MS 5000L
#define TRUST_DOMAIN    "atrium.local"

typedef struct options {
    double inproc_seconds;
    long inproc_max;
    int csrs;
    const char *tls;
    const char *rest;
    const char *admin_token_file;
    const char *bundle_file;
    int clients;
    double seconds;
    long max_calls;
    int timeout_ms;
    long pid;
    const char *service;
} options;

static options opt = {
    .inproc_seconds = 5,
    .inproc_max = 200000,
    .csrs = 64,
    .clients = 4,
    .seconds = 5,
    .max_calls = 200000,
    .timeout_ms = 10000,
    .service = "bench",
};

static char identity[256];

/* ---- small helpers ---- */

static int64_t mono_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* CPU time of the calling thread, ns. */
static int64_t thread_cpu_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000LL + now.tv_nsec / 1000000;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted[count], nearest rank. */
static int64_t percentile(const int64_t *sorted, size_t count, double p)
{
    if (count == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return sorted[rank - 1];
}

static char *read_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    size_t capacity = 4096, length = 0;
    char *text = malloc(capacity);
    while (text != NULL) {
        if (length + 1024 > capacity) {
            char *bigger = realloc(text, capacity *= 2);
            if (bigger == NULL) {
                free(text);
                text = NULL;
                break;
            }
            text = bigger;
        }
        size_t got = fread(text + length, 1, capacity - length - 1, file);
        length += got;
        if (got == 0)
            break;
    }
    fclose(file);
    if (text != NULL)
        text[length] = '\0';
    return text;
}

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *walk)
{
    (void)status;
    (void)flag;
    (void)walk;
    return remove(path);
}

/* Builds count CSRs for identity (each with its own key); NULL on failure. */
static char **build_csrs(int count)
{
    char **csrs = calloc((size_t)count, sizeof(*csrs));
    char error[256];
    for (int i = 0; csrs != NULL && i < count; i++) {
        char *key = NULL;
        if (workload_generate_key(&key, error, sizeof(error)) != 0 ||
            workload_build_csr(key, identity, &csrs[i], error, sizeof(error)) != 0) {
            fprintf(stderr, "bench_ca: building a CSR: %s\n", error);
            if (key != NULL)
                memset(key, 0, strlen(key));
            free(key);
            for (int j = 0; j < i; j++)
                free(csrs[j]);
            free(csrs);
            return NULL;
        }
        memset(key, 0, strlen(key));
        free(key);
    }
    return csrs;
}

static void free_csrs(char **csrs, int count)
{
    for (int i = 0; csrs != NULL && i < count; i++)
        free(csrs[i]);
    free(csrs);
}

/* ---- 1. in-process ---- */

static int bench_inproc(void)
{
    char directory[] = "/tmp/atrium-bench-ca-XXXXXX";
    if (mkdtemp(directory) == NULL) {
        fprintf(stderr, "bench_ca: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    char ca_directory[sizeof(directory) + 8];
    snprintf(ca_directory, sizeof(ca_directory), "%s/ca", directory);
    char error[512];
    ca *authority = NULL;
    ca_options ca_opts = {.directory = ca_directory, .now_ms = wall_ms()};
    int result = -1;
    char **csrs = NULL;
    int64_t *latencies = NULL;
    if (ca_open(&ca_opts, &authority, error, sizeof(error)) != 0) {
        fprintf(stderr, "bench_ca: ca_open: %s\n", error);
        goto done;
    }
    csrs = build_csrs(opt.csrs);
    latencies = malloc((size_t)opt.inproc_max * sizeof(*latencies));
    if (csrs == NULL || latencies == NULL)
        goto done;

    /* One untimed signing (warms caches, checks the CSRs are accepted). */
    char *chain = NULL;
    model_certificate record;
    memset(&record, 0, sizeof(record));
    if (ca_sign_csr(authority, csrs[0], identity, 0, wall_ms(), &chain, &record, error,
                    sizeof(error)) != 0) {
        fprintf(stderr, "bench_ca: ca_sign_csr: %s\n", error);
        goto done;
    }
    free(chain);
    model_certificate_clear(&record);

    int64_t now_ms = wall_ms();
    int64_t cpu_start = thread_cpu_ns();
    int64_t start = mono_ns(), deadline = start + (int64_t)(opt.inproc_seconds * 1e9), end = start;
    long count = 0;
    while (count < opt.inproc_max && end < deadline) {
        int64_t before = mono_ns();
        chain = NULL;
        if (ca_sign_csr(authority, csrs[count % opt.csrs], identity, 0, now_ms, &chain, &record,
                        error, sizeof(error)) != 0) {
            fprintf(stderr, "bench_ca: ca_sign_csr: %s\n", error);
            goto done;
        }
        end = mono_ns();
        latencies[count++] = end - before;
        free(chain);
        model_certificate_clear(&record);
    }
    double cpu_us = (double)(thread_cpu_ns() - cpu_start) / 1e3 / (double)(count > 0 ? count : 1);
    double elapsed = (double)(end - start) / 1e9;
    qsort(latencies, (size_t)count, sizeof(*latencies), compare_i64);
    double rate = (double)count / elapsed;
    /* CPU per signing is the figure least disturbed by other load on the
     * machine (the wall-clock rate drops when this thread is preempted). */
    printf("in-process ca_sign_csr, 1 thread, %d distinct CSRs: %ld signings in %.2f s = "
           "%.0f/s   p50 %.1f us   p99 %.1f us   CPU %.1f us per signing\n",
           opt.csrs, count, elapsed, rate, (double)percentile(latencies, (size_t)count, 50) / 1e3,
           (double)percentile(latencies, (size_t)count, 99) / 1e3, cpu_us);
    printf("RESULT inproc signs_per_s=%.1f p50_us=%.1f p99_us=%.1f count=%ld cpu_us=%.1f\n", rate,
           (double)percentile(latencies, (size_t)count, 50) / 1e3,
           (double)percentile(latencies, (size_t)count, 99) / 1e3, count, cpu_us);
    result = 0;
done:
    free(latencies);
    free_csrs(csrs, opt.csrs);
    ca_close(authority);
    nftw(directory, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return result;
}

/* ---- 2. through gRPC ---- */

/* Join tokens: the current one and the uses it has left, minted over REST as
 * they run out. */
typedef struct token_pool {
    pthread_mutex_t lock;
    char admin_token[256];
    char current[256];
    int uses_left;
    int minted;
    bool failed;
} token_pool;

static token_pool pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct buffer {
    char *data;
    size_t length;
} buffer;

static size_t collect(char *data, size_t size, size_t count, void *context)
{
    buffer *body = context;
    size_t bytes = size * count;
    if (body->length + bytes > 65536)
        return 0;
    char *bigger = realloc(body->data, body->length + bytes + 1);
    if (bigger == NULL)
        return 0;
    memcpy(bigger + body->length, data, bytes);
    body->data = bigger;
    body->length += bytes;
    body->data[body->length] = '\0';
    return bytes;
}

/* POST /v1/tokens; the secret into pool.current. Called with pool.lock held. */
static int mint_token(void)
{
    if (pool.minted >= MAX_TOKENS) {
        fprintf(stderr, "bench_ca: more than %d join tokens needed\n", MAX_TOKENS);
        return -1;
    }
    CURL *curl = curl_easy_init();
    if (curl == NULL)
        return -1;
    char url[256], authorization[300], request[256];
    snprintf(url, sizeof(url), "http://%s/v1/tokens", opt.rest);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", pool.admin_token);
    snprintf(request, sizeof(request),
             "{\"service\": \"%s\", \"namespace\": \"default\", \"uses\": %d, \"ttl_s\": %d}",
             opt.service, TOKEN_USES, TOKEN_TTL_S);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    buffer body = {NULL, 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, REST_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    int result = -1;
    if (code != CURLE_OK || (status != 200 && status != 201)) {
        fprintf(stderr, "bench_ca: POST /v1/tokens: %s, HTTP %ld: %s\n", curl_easy_strerror(code),
                status, body.data ? body.data : "");
    } else {
        json_t *json = json_loads(body.data ? body.data : "", 0, NULL);
        const char *secret = json_string_value(json_object_get(json, "token"));
        if (secret != NULL && strlen(secret) < sizeof(pool.current)) {
            snprintf(pool.current, sizeof(pool.current), "%s", secret);
            pool.uses_left = TOKEN_USES;
            pool.minted++;
            result = 0;
        } else {
            fprintf(stderr, "bench_ca: POST /v1/tokens: no token in %s\n", body.data);
        }
        json_decref(json);
    }
    free(body.data);
    return result;
}

/* Claims one use of a join token; copies it into out. */
static int claim_token(char *out, size_t out_size)
{
    pthread_mutex_lock(&pool.lock);
    int result = 0;
    if (pool.failed || (pool.uses_left == 0 && mint_token() != 0)) {
        pool.failed = true;
        result = -1;
    } else {
        pool.uses_left--;
        snprintf(out, out_size, "%s", pool.current);
    }
    pthread_mutex_unlock(&pool.lock);
    return result;
}

typedef struct client_thread {
    pthread_t thread;
    int index;
    ca_client *client;
    char **csrs;
    int64_t *latencies;
    long capacity; /* of latencies */
    long ok, failed;
    int64_t end_ns;
    char first_error[600];
} client_thread;

static const char *trust_bundle;
static atomic_long calls_started;
static atomic_int ready_count;
static atomic_bool go;
static int64_t start_ns, deadline_ns;

/* One call; 0 when OK (latency in *took_ns). */
static int one_call(client_thread *self, long sequence, int64_t *took_ns)
{
    char token[256];
    if (claim_token(token, sizeof(token)) != 0) {
        snprintf(self->first_error, sizeof(self->first_error), "no join token");
        return -1;
    }
    ca_client_result result;
    memset(&result, 0, sizeof(result));
    int64_t before = mono_ns();
    int called = ca_client_create_certificate(self->client, self->csrs[sequence % opt.csrs], token,
                                              0, opt.timeout_ms, &result);
    *took_ns = mono_ns() - before;
    int ok = called == 0 && result.status == 0 && result.cert_chain_pem != NULL;
    if (!ok && self->first_error[0] == '\0')
        snprintf(self->first_error, sizeof(self->first_error), "%s (status %d) %s",
                 called == 0 ? "refused" : "call failed", result.status, result.message);
    ca_client_result_clear(&result);
    return ok ? 0 : -1;
}

static void *run_client(void *context)
{
    client_thread *self = context;
    int64_t took;
    bool warm = true;
    for (int i = 0; i < WARMUP_CALLS; i++)
        warm = warm && one_call(self, i, &took) == 0;
    if (!warm)
        self->failed++;
    atomic_fetch_add(&ready_count, 1);
    /* Bounded wait for the start signal (main sets it, or gives up). */
    for (int i = 0; i < 60000 && !atomic_load(&go); i++)
        usleep(1000);
    if (!warm || !atomic_load(&go))
        return NULL;
    for (long sequence = 0; sequence < self->capacity; sequence++) {
        if (mono_ns() >= deadline_ns)
            break;
        if (atomic_fetch_add(&calls_started, 1) >= opt.max_calls)
            break;
        if (one_call(self, sequence, &took) == 0)
            self->latencies[self->ok++] = took;
        else if (++self->failed >= 100)
            break; /* something is wrong; do not hammer */
    }
    self->end_ns = mono_ns();
    return NULL;
}

/* utime + stime of pid in clock ticks, or -1. */
static long long process_cpu_ticks(long pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    char *text = read_file(path);
    if (text == NULL)
        return -1;
    const char *field = strrchr(text, ')'); /* after "(comm)" */
    unsigned long long utime = 0, stime = 0;
    int got = field ? sscanf(field + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                             &utime, &stime)
                    : 0;
    free(text);
    return got == 2 ? (long long)(utime + stime) : -1;
}

static double self_cpu_s(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

static int bench_grpc(void)
{
    char *admin = read_file(opt.admin_token_file);
    char *bundle = read_file(opt.bundle_file);
    if (admin == NULL || bundle == NULL || bundle[0] == '\0') {
        fprintf(stderr, "bench_ca: cannot read %s or %s\n", opt.admin_token_file, opt.bundle_file);
        free(admin);
        free(bundle);
        return -1;
    }
    admin[strcspn(admin, "\r\n")] = '\0';
    snprintf(pool.admin_token, sizeof(pool.admin_token), "%s", admin);
    free(admin);
    trust_bundle = bundle;

    int result = -1;
    long per_client = opt.max_calls / opt.clients + 1;
    client_thread *threads = calloc((size_t)opt.clients, sizeof(*threads));
    int started = 0;
    if (threads == NULL)
        goto done;
    for (int i = 0; i < opt.clients; i++) {
        client_thread *self = &threads[i];
        char error[512];
        self->index = i;
        self->capacity = per_client;
        self->latencies = malloc((size_t)per_client * sizeof(*self->latencies));
        self->csrs = build_csrs(opt.csrs);
        ca_client_options client_opts = {.address = opt.tls, .trust_bundle = trust_bundle};
        self->client = ca_client_new(&client_opts, error, sizeof(error));
        if (self->client == NULL)
            fprintf(stderr, "bench_ca: ca_client_new: %s\n", error);
        if (self->latencies == NULL || self->csrs == NULL || self->client == NULL)
            goto done;
    }
    for (int i = 0; i < opt.clients; i++) {
        if (pthread_create(&threads[i].thread, NULL, run_client, &threads[i]) != 0) {
            fprintf(stderr, "bench_ca: pthread_create failed\n");
            break;
        }
        started++;
    }
    /* Bounded wait for every client's warm-up calls. */
    for (int i = 0; i < 60000 && atomic_load(&ready_count) < started; i++)
        usleep(1000);
    long long server_before = opt.pid > 0 ? process_cpu_ticks(opt.pid) : -1;
    double self_before = self_cpu_s();
    start_ns = mono_ns();
    deadline_ns = start_ns + (int64_t)(opt.seconds * 1e9);
    if (started == opt.clients && atomic_load(&ready_count) == started)
        atomic_store(&go, true);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i].thread, NULL);
    long long server_after = opt.pid > 0 ? process_cpu_ticks(opt.pid) : -1;
    double self_after = self_cpu_s();
    if (!atomic_load(&go) || started != opt.clients) {
        fprintf(stderr, "bench_ca: the clients did not get ready\n");
        for (int i = 0; i < started; i++)
            if (threads[i].first_error[0])
                fprintf(stderr, "  client %d: %s\n", i, threads[i].first_error);
        goto done;
    }

    long ok = 0, failed = 0;
    int64_t end = start_ns;
    for (int i = 0; i < opt.clients; i++) {
        ok += threads[i].ok;
        failed += threads[i].failed;
        if (threads[i].end_ns > end)
            end = threads[i].end_ns;
    }
    int64_t *all = malloc((size_t)(ok > 0 ? ok : 1) * sizeof(*all));
    if (all == NULL)
        goto done;
    size_t filled = 0;
    for (int i = 0; i < opt.clients; i++) {
        memcpy(all + filled, threads[i].latencies, (size_t)threads[i].ok * sizeof(*all));
        filled += (size_t)threads[i].ok;
    }
    qsort(all, filled, sizeof(*all), compare_i64);
    double elapsed = (double)(end - start_ns) / 1e9;
    double rate = elapsed > 0 ? (double)ok / elapsed : 0;
    double p50 = (double)percentile(all, filled, 50) / 1e6;
    double p99 = (double)percentile(all, filled, 99) / 1e6;
    double max = filled ? (double)all[filled - 1] / 1e6 : 0;
    free(all);
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double server_cpu = server_before >= 0 && server_after >= 0 && elapsed > 0
                            ? (double)(server_after - server_before) / ticks / elapsed
                            : -1;
    double client_cpu = elapsed > 0 ? (self_after - self_before) / elapsed : -1;
    printf("gRPC CreateCertificate (join token), %d clients x 1 TLS channel, %d CSRs each: "
           "%ld issued in %.2f s = %.0f/s   p50 %.2f ms   p99 %.2f ms   max %.2f ms   "
           "errors %ld   tokens minted %d\n",
           opt.clients, opt.csrs, ok, elapsed, rate, p50, p99, max, failed, pool.minted);
    /* CPU per certificate: what the server and the load generator each
     * spend on one issuance, whatever else the machine is doing. */
    double server_us = server_cpu >= 0 && rate > 0 ? server_cpu * 1e6 / rate : -1;
    double client_us = client_cpu >= 0 && rate > 0 ? client_cpu * 1e6 / rate : -1;
    if (server_cpu >= 0)
        printf("  CPU during the run: atriumd %.2f cores (%.0f us per certificate), this load "
               "generator %.2f cores (%.0f us per certificate) (%ld online)\n",
               server_cpu, server_us, client_cpu, client_us, sysconf(_SC_NPROCESSORS_ONLN));
    for (int i = 0, shown = 0; i < opt.clients && shown < SHOWN_ERRORS; i++)
        if (threads[i].first_error[0]) {
            fprintf(stderr, "  client %d: %s\n", i, threads[i].first_error);
            shown++;
        }
    printf("RESULT grpc issued_per_s=%.1f p50_ms=%.3f p99_ms=%.3f count=%ld errors=%ld "
           "server_cpu=%.2f client_cpu=%.2f server_us_per_cert=%.0f client_us_per_cert=%.0f\n",
           rate, p50, p99, ok, failed, server_cpu, client_cpu, server_us, client_us);
    result = failed == 0 && ok > 0 ? 0 : -1;
done:
    for (int i = 0; threads != NULL && i < opt.clients; i++) {
        ca_client_free(threads[i].client);
        free_csrs(threads[i].csrs, opt.csrs);
        free(threads[i].latencies);
    }
    free(threads);
    free(bundle);
    return result;
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench_ca [--inproc-seconds S] [--inproc-max N] [--csrs K] [--service NAME]\n"
            "                [--tls 127.0.0.1:P --rest 127.0.0.1:Q --admin-token-file F\n"
            "                 --bundle-file F [--clients C] [--seconds D] [--max-calls N]\n"
            "                 [--timeout-ms T] [--pid PID]]\n"
            "  --inproc-seconds 0 skips the in-process part; without --tls the gRPC part is "
            "skipped.\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i];
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *value = argv[++i];
        if (strcmp(name, "--inproc-seconds") == 0)
            opt.inproc_seconds = atof(value);
        else if (strcmp(name, "--inproc-max") == 0)
            opt.inproc_max = atol(value);
        else if (strcmp(name, "--csrs") == 0)
            opt.csrs = atoi(value);
        else if (strcmp(name, "--tls") == 0)
            opt.tls = value;
        else if (strcmp(name, "--rest") == 0)
            opt.rest = value;
        else if (strcmp(name, "--admin-token-file") == 0)
            opt.admin_token_file = value;
        else if (strcmp(name, "--bundle-file") == 0)
            opt.bundle_file = value;
        else if (strcmp(name, "--clients") == 0)
            opt.clients = atoi(value);
        else if (strcmp(name, "--seconds") == 0)
            opt.seconds = atof(value);
        else if (strcmp(name, "--max-calls") == 0)
            opt.max_calls = atol(value);
        else if (strcmp(name, "--timeout-ms") == 0)
            opt.timeout_ms = atoi(value);
        else if (strcmp(name, "--pid") == 0)
            opt.pid = atol(value);
        else if (strcmp(name, "--service") == 0)
            opt.service = value;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (opt.inproc_seconds < 0 || opt.inproc_seconds > 600 || opt.inproc_max < 1 ||
        opt.inproc_max > 10000000 || opt.csrs < 1 || opt.csrs > MAX_CSRS || opt.clients < 1 ||
        opt.clients > MAX_CLIENTS || opt.seconds <= 0 || opt.seconds > 600 || opt.max_calls < 1 ||
        opt.max_calls > (long)MAX_TOKENS * TOKEN_USES - (long)MAX_CLIENTS * WARMUP_CALLS ||
        opt.timeout_ms < 1 || opt.timeout_ms > 60000) {
        fprintf(stderr, "bench_ca: an option is out of range\n");
        return 2;
    }
    if (opt.tls != NULL &&
        (opt.rest == NULL || opt.admin_token_file == NULL || opt.bundle_file == NULL)) {
        fprintf(stderr, "bench_ca: --tls needs --rest, --admin-token-file and --bundle-file\n");
        return 2;
    }
    snprintf(identity, sizeof(identity), "spiffe://%s/ns/default/sa/%s", TRUST_DOMAIN, opt.service);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 2;
    int status = 0;
    if (opt.inproc_seconds > 0 && bench_inproc() != 0)
        status = 2;
    fflush(stdout);
    if (opt.tls != NULL && bench_grpc() != 0)
        status = 2;
    curl_global_cleanup();
    return status;
}
