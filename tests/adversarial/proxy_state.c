/*
 * proxy_state.c — issue 12, defect 12: a damaged <state-dir>/xds-state.pb must
 * not stop atrium-proxy. Real processes on 127.0.0.1: one atriumd (the test
 * fixture) and one atrium-proxy per case, started with a state file damaged
 * in one way: zero length, truncated, one byte flipped in the body (the
 * CRC-32 fails), wrong magic, random garbage, and a well-framed file with a
 * correct checksum whose record does not decode.
 *
 * Group "reachable": with atriumd up, each damaged file is moved aside to
 * <state-dir>/xds-state.pb.corrupt-<unix time> unchanged, one log line names
 * the file and the reason, the proxy reaches /ready ("ready", not "from saved
 * state") with atriumd's configuration (a service registered after the good
 * file was saved is there, one deleted since is not) and saves a new, valid
 * state file.
 *
 * Group "unreachable": nothing listens on --xds. A proxy without usable saved
 * state behaves as one without any state does today: it keeps running and
 * retrying (never serving the damaged file), /ready answers 503, and the file
 * is moved aside and logged the same way. A saved state it cannot read at
 * all (here a directory in the file's place, which cannot be saved over
 * either) still stops it, exit status 1, with a message naming the path.
 *
 * The good file the damage starts from is a real one: written by a proxy that
 * ran against the same atriumd. Every wait is bounded (polls every 20 ms);
 * only the pids this test started are signalled, and an atexit handler
 * SIGKILLs a proxy still running when the test exits (each also has
 * PR_SET_PDEATHSIG).
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "atriumd_fixture.h"
#include "clock.h"
#include "proxy_config.h"
#include "state_file.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define POLL_MS         20
#define START_WAIT_MS   10000 /* the proxy logs "ready:" (its admin port) */
#define READY_WAIT_MS   15000 /* /ready answers 200 with atriumd's configuration */
#define RETRY_WAIT_MS   10000 /* a second connection attempt (backoff 0.25-0.75 s) */
#define EXIT_WAIT_MS    10000 /* SIGTERM to exit, or a refused start to exit */
#define SERVICE         "shop"
#define CURRENT_SERVICE "current-svc" /* registered after the good file was saved */
#define RETIRED_SERVICE "retired-svc" /* in the good file, deleted from atriumd since */

/* ---- processes: only the ones started here, by pid ---- */

static pid_t running_proxy;

static void kill_proxy_at_exit(void)
{
    if (running_proxy > 0) {
        kill(running_proxy, SIGKILL);
        waitpid(running_proxy, NULL, 0);
        running_proxy = 0;
    }
}

/* A port of 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    close(fd);
    return ntohs(address.sin_port);
}

typedef struct proxy_run {
    pid_t pid;
    char log_path[256];
    int admin_port;  /* from its "ready:" log line; 0 before */
    int exit_status; /* after proxy_wait_exit: the exit code, or -1 (signal, timeout) */
} proxy_run;

/* Starts atrium-proxy for SERVICE against xds_port with state_dir, its
 * stderr in log_path. */
static void proxy_start(proxy_run *run, int xds_port, const char *state_dir, const char *log_path)
{
    kill_proxy_at_exit(); /* one a failed case left running */
    memset(run, 0, sizeof(*run));
    snprintf(run->log_path, sizeof(run->log_path), "%s", log_path);
    char xds[32], inbound[16], outbound[16];
    snprintf(xds, sizeof(xds), "127.0.0.1:%d", xds_port);
    snprintf(inbound, sizeof(inbound), "%d", free_port());
    snprintf(outbound, sizeof(outbound), "%d", free_port());
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(log_fd >= 0);
    static bool registered = false;
    if (!registered)
        registered = atexit(kill_proxy_at_exit) == 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
            _exit(127);
        char *args[] = {(char *)PROXY_PATH,
                        "--service",
                        SERVICE,
                        "--app-port",
                        "1",
                        "--node",
                        "proxy-state-test",
                        "--xds",
                        xds,
                        "--inbound-port",
                        inbound,
                        "--outbound-port",
                        outbound,
                        "--admin-port",
                        "0",
                        "--state-dir",
                        (char *)state_dir,
                        NULL};
        execv(PROXY_PATH, args);
        _exit(127);
    }
    close(log_fd);
    run->pid = pid;
    running_proxy = pid;
}

static char *read_text(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    char *text = NULL;
    size_t length = 0;
    FILE *memory = open_memstream(&text, &length);
    assert_non_null(memory);
    char buffer[4096];
    size_t got;
    while ((got = fread(buffer, 1, sizeof(buffer), file)) > 0)
        fwrite(buffer, 1, got, memory);
    fclose(file);
    fclose(memory);
    return text;
}

static void print_log(const proxy_run *run)
{
    char *text = read_text(run->log_path);
    print_error("---- atrium-proxy log (%s) ----\n%s---- end ----\n", run->log_path,
                text ? text : "(none)\n");
    free(text);
}

/* Whether the proxy has exited (reaped; its status in run->exit_status). */
static bool proxy_exited(proxy_run *run)
{
    if (run->pid <= 0)
        return true;
    int status = 0;
    pid_t done = waitpid(run->pid, &status, WNOHANG);
    if (done == 0)
        return false;
    run->exit_status = done == run->pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    running_proxy = 0;
    run->pid = 0;
    return true;
}

/* Waits (bounded) for the proxy to exit on its own; SIGKILL after that.
 * Returns its exit code, or -1. */
static int proxy_wait_exit(proxy_run *run)
{
    int64_t deadline = clock_monotonic_ms() + EXIT_WAIT_MS;
    while (!proxy_exited(run)) {
        if (clock_monotonic_ms() > deadline) {
            kill(run->pid, SIGKILL);
            waitpid(run->pid, NULL, 0);
            running_proxy = 0;
            run->pid = 0;
            run->exit_status = -1;
            break;
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    return run->exit_status;
}

/* SIGTERM and a bounded wait; returns the exit code (0: a clean stop). */
static int proxy_stop(proxy_run *run)
{
    if (run->pid > 0)
        kill(run->pid, SIGTERM);
    return proxy_wait_exit(run);
}

/* Waits for the "ready:" line and reads the admin port from it; fails the
 * test (after stopping the proxy) when the proxy exits or never says it. */
static void proxy_wait_started(proxy_run *run)
{
    static const char marker[] = ", admin 127.0.0.1:";
    int64_t deadline = clock_monotonic_ms() + START_WAIT_MS;
    for (;;) {
        char *text = read_text(run->log_path);
        const char *ready = text ? strstr(text, "ready: node ") : NULL;
        const char *admin = ready ? strstr(ready, marker) : NULL;
        if (admin != NULL)
            run->admin_port = atoi(admin + strlen(marker));
        free(text);
        if (run->admin_port > 0)
            return;
        if (proxy_exited(run)) {
            print_log(run);
            fail_msg("atrium-proxy exited with status %d before it was ready", run->exit_status);
        }
        if (clock_monotonic_ms() > deadline) {
            proxy_stop(run);
            print_log(run);
            fail_msg("atrium-proxy did not log \"ready:\" within %d ms", START_WAIT_MS);
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
}

/* ---- HTTP ---- */

typedef struct reply {
    long status;
    char *text; /* malloc'd, the caller frees it */
} reply;

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    FILE *memory = context;
    return fwrite(data, size, count, memory);
}

/* One request; status 0 when the connection failed. */
static reply http(int port, const char *method, const char *path, const char *body,
                  const char *token)
{
    reply answer = {0, NULL};
    size_t length = 0;
    FILE *memory = open_memstream(&answer.text, &length);
    assert_non_null(memory);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[256], authorization[160];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (token != NULL) {
        snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, authorization);
    }
    assert_non_null(headers);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, memory);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    fclose(memory);
    return answer;
}

/* ---- the mesh ---- */

static struct {
    atriumd_fixture atriumd;
    char work[64]; /* /tmp/atrium-proxy-state-XXXXXX: every state dir and log */
    uint8_t *good; /* a state file a proxy wrote, holding RETIRED_SERVICE */
    size_t good_length;
    unsigned cases; /* state directories made so far */
} mesh;

static void rest(const char *method, const char *path, const char *body)
{
    reply answer = http(mesh.atriumd.rest_port, method, path, body, mesh.atriumd.token);
    if (answer.status < 200 || answer.status > 299) {
        print_error("%s %s answered %ld: %s\n", method, path, answer.status,
                    answer.text ? answer.text : "");
        free(answer.text);
        fail();
    }
    free(answer.text);
}

static void put_service(const char *name, int endpoint_port)
{
    char path[128], body[128];
    snprintf(path, sizeof(path), "/v1/services/%s", name);
    rest("PUT", path, "{}");
    snprintf(path, sizeof(path), "/v1/services/%s/endpoints/e1", name);
    snprintf(body, sizeof(body), "{\"address\": \"127.0.0.1\", \"port\": %d}", endpoint_port);
    rest("PUT", path, body);
}

/* A new, empty state directory (and a log path beside it) for one run. */
static void new_case(char *state_dir, size_t state_dir_size, char *log_path, size_t log_size)
{
    unsigned number = ++mesh.cases;
    snprintf(state_dir, state_dir_size, "%s/state-%u", mesh.work, number);
    snprintf(log_path, log_size, "%s/proxy-%u.log", mesh.work, number);
    assert_int_equal(mkdir(state_dir, 0700), 0);
}

static void write_file(const char *path, const uint8_t *data, size_t length)
{
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(data, 1, length, file), length);
    assert_int_equal(fclose(file), 0);
}

static uint8_t *read_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    assert_true(size >= 0);
    rewind(file);
    uint8_t *data = malloc((size_t)size + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    *length = (size_t)size;
    return data;
}

/* Waits (bounded) for /ready to answer 200 "ready" and returns /config_dump
 * (the caller frees it); fails the test if the proxy exits first. */
static char *wait_ready_from_atriumd(proxy_run *run)
{
    int64_t deadline = clock_monotonic_ms() + READY_WAIT_MS;
    reply answer = {0, NULL};
    for (;;) {
        free(answer.text);
        answer = http(run->admin_port, "GET", "/ready", NULL, NULL);
        if (answer.status == 200 && strcmp(answer.text, "ready\n") == 0)
            break;
        if (proxy_exited(run)) {
            print_log(run);
            fail_msg("atrium-proxy exited with status %d before /ready", run->exit_status);
        }
        if (clock_monotonic_ms() > deadline) {
            proxy_stop(run);
            print_log(run);
            fail_msg("/ready answered %ld \"%s\", not 200 \"ready\", within %d ms", answer.status,
                     answer.text ? answer.text : "", READY_WAIT_MS);
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    free(answer.text);
    answer = http(run->admin_port, "GET", "/config_dump", NULL, NULL);
    assert_int_equal(answer.status, 200);
    return answer.text;
}

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk)
{
    (void)info;
    (void)flag;
    (void)walk;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    memset(&mesh, 0, sizeof(mesh));
    snprintf(mesh.work, sizeof(mesh.work), "/tmp/atrium-proxy-state-XXXXXX");
    if (mkdtemp(mesh.work) == NULL)
        return -1;
    char error[512];
    if (atriumd_fixture_start(&mesh.atriumd, ATRIUMD_PATH, "proxystate", error, sizeof(error)) !=
        0) {
        fprintf(stderr, "setup: %s\n", error);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kill_proxy_at_exit();
    int stopped = mesh.atriumd.pid > 0 ? atriumd_fixture_stop(&mesh.atriumd) : 0;
    free(mesh.good);
    if (mesh.work[0] != '\0')
        nftw(mesh.work, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return stopped == 0 ? 0 : -1;
}

/* The good file: a proxy against atriumd with SERVICE and RETIRED_SERVICE
 * saves its state; then atriumd's mesh moves on (RETIRED_SERVICE deleted,
 * CURRENT_SERVICE added), so that a proxy that served the file, even for a
 * moment, would be told apart from one that took atriumd's configuration. */
static void test_good_state_file(void **state)
{
    (void)state;
    put_service(SERVICE, 18080);
    put_service(RETIRED_SERVICE, 18081);
    char state_dir[128], log_path[160], path[192];
    new_case(state_dir, sizeof(state_dir), log_path, sizeof(log_path));
    proxy_run run;
    proxy_start(&run, mesh.atriumd.xds_port, state_dir, log_path);
    proxy_wait_started(&run);
    char *dump = wait_ready_from_atriumd(&run);
    assert_non_null(strstr(dump, "\"" RETIRED_SERVICE "\""));
    free(dump);
    assert_int_equal(proxy_stop(&run), 0);

    snprintf(path, sizeof(path), "%s/%s", state_dir, STATE_FILE_NAME);
    mesh.good = read_file(path, &mesh.good_length);
    proxy_resource_set saved;
    char error[512];
    assert_int_equal(state_file_read(path, &saved, NULL, error, sizeof(error)), STATE_FILE_READ);
    assert_true(saved.counts[PROXY_RESOURCE_CLUSTER] >= 2);
    proxy_resource_set_clear(&saved);

    rest("DELETE", "/v1/services/" RETIRED_SERVICE, NULL);
    put_service(CURRENT_SERVICE, 18082);
}

/* ---- the damage ---- */

typedef struct damage {
    const char *name;
    const char *reason; /* what the log line must say about it */
} damage;

static const damage damages[] = {
    {"zero length", "empty (0 bytes)"},
    {"truncated", "corrupt: checksum"},
    {"flipped byte", "corrupt: checksum"},
    {"wrong magic", "not an atrium-proxy state file"},
    {"garbage", "not an atrium-proxy state file"},
    {"undecodable record", "is not a DeltaDiscoveryResponse"},
};

/* CRC-32 (IEEE), as the state file's trailer. */
static uint32_t crc32_of(const uint8_t *data, size_t length)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static void put_uint32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)(value >> 24);
    at[1] = (uint8_t)(value >> 16);
    at[2] = (uint8_t)(value >> 8);
    at[3] = (uint8_t)value;
}

/* The bytes of damage `which` (malloc'd; the caller frees them). */
static uint8_t *damaged_bytes(size_t which, size_t *length)
{
    size_t size = mesh.good_length + 4096;
    uint8_t *bytes = malloc(size);
    assert_non_null(bytes);
    memcpy(bytes, mesh.good, mesh.good_length);
    switch (which) {
    case 0:
        *length = 0;
        break;
    case 1: /* cut in the middle of a record */
        *length = mesh.good_length / 2;
        break;
    case 2: /* one byte of a resource, the checksum left as it was */
        bytes[mesh.good_length / 2] ^= 0x5A;
        *length = mesh.good_length;
        break;
    case 3:
        memcpy(bytes, "ATRXDSSX", 8);
        *length = mesh.good_length;
        break;
    case 4: { /* random bytes */
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < 4096; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes[i] = (uint8_t)x;
        }
        *length = 4096;
        break;
    }
    default: { /* a well-framed file, checksum right, whose one record is not protobuf */
        memcpy(bytes, "ATRXDSST", 8);
        put_uint32(bytes + 8, 1);  /* format version */
        put_uint32(bytes + 12, 1); /* one record */
        put_uint32(bytes + 16, 64);
        memset(bytes + 20, 0xFF, 64);
        put_uint32(bytes + 84, crc32_of(bytes, 84));
        *length = 88;
        break;
    }
    }
    return bytes;
}

/* After a run on damage `which` in state_dir: the file was moved aside
 * unchanged to xds-state.pb.corrupt-<unix time> (between started and now),
 * and one log line names the file and the reason. */
static void expect_set_aside(const proxy_run *run, const char *state_dir, size_t which,
                             const uint8_t *bytes, size_t length, long long started)
{
    char prefix[] = STATE_FILE_NAME ".corrupt-";
    char moved[512] = "";
    DIR *directory = opendir(state_dir);
    assert_non_null(directory);
    struct dirent *entry;
    unsigned found = 0;
    while ((entry = readdir(directory)) != NULL) {
        if (strncmp(entry->d_name, prefix, strlen(prefix)) == 0) {
            found++;
            snprintf(moved, sizeof(moved), "%s/%s", state_dir, entry->d_name);
            long long stamp = atoll(entry->d_name + strlen(prefix));
            if (stamp < started || stamp > clock_wall_ms() / 1000)
                fail_msg("%s: %s is not a unix time of this run", damages[which].name,
                         entry->d_name);
        }
    }
    closedir(directory);
    if (found != 1) {
        print_log(run);
        fail_msg("%s: %u files named %s* in %s, expected 1", damages[which].name, found, prefix,
                 state_dir);
    }
    size_t moved_length = 0;
    uint8_t *kept = read_file(moved, &moved_length);
    assert_int_equal(moved_length, length);
    if (length > 0)
        assert_memory_equal(kept, bytes, length);
    free(kept);

    char path[192];
    snprintf(path, sizeof(path), "%s/%s", state_dir, STATE_FILE_NAME);
    char *log = read_text(run->log_path);
    assert_non_null(log);
    unsigned lines = 0;
    bool good_line = false;
    for (char *line = strtok(log, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strstr(line, "refused") == NULL)
            continue;
        lines++;
        good_line = strstr(line, path) != NULL && strstr(line, damages[which].reason) != NULL &&
                    strstr(line, moved) != NULL;
    }
    free(log);
    if (lines != 1 || !good_line) {
        print_log(run);
        fail_msg("%s: expected one log line naming %s, \"%s\" and %s", damages[which].name, path,
                 damages[which].reason, moved);
    }
}

/* ---- group "reachable" ---- */

static void run_reachable(size_t which)
{
    char state_dir[128], log_path[160], path[192];
    new_case(state_dir, sizeof(state_dir), log_path, sizeof(log_path));
    snprintf(path, sizeof(path), "%s/%s", state_dir, STATE_FILE_NAME);
    size_t length = 0;
    uint8_t *bytes = damaged_bytes(which, &length);
    write_file(path, bytes, length);
    long long started = clock_wall_ms() / 1000;

    proxy_run run;
    proxy_start(&run, mesh.atriumd.xds_port, state_dir, log_path);
    proxy_wait_started(&run);
    char *dump = wait_ready_from_atriumd(&run);
    if (strstr(dump, "\"" CURRENT_SERVICE "\"") == NULL ||
        strstr(dump, "\"" RETIRED_SERVICE "\"") != NULL) {
        print_log(&run);
        fail_msg("%s: /config_dump is not atriumd's configuration: %.600s", damages[which].name,
                 dump);
    }
    free(dump);
    expect_set_aside(&run, state_dir, which, bytes, length, started);
    assert_int_equal(proxy_stop(&run), 0);

    /* A new state file, saved from atriumd's configuration. */
    proxy_resource_set saved;
    char error[512] = "";
    if (state_file_read(path, &saved, NULL, error, sizeof(error)) != STATE_FILE_READ)
        fail_msg("%s: no valid state file saved afterwards: %s", damages[which].name, error);
    proxy_resource_set_clear(&saved);
    free(bytes);
}

static void test_reachable_zero_length(void **state)
{
    (void)state;
    run_reachable(0);
}

static void test_reachable_truncated(void **state)
{
    (void)state;
    run_reachable(1);
}

static void test_reachable_flipped_byte(void **state)
{
    (void)state;
    run_reachable(2);
}

static void test_reachable_wrong_magic(void **state)
{
    (void)state;
    run_reachable(3);
}

static void test_reachable_garbage(void **state)
{
    (void)state;
    run_reachable(4);
}

static void test_reachable_undecodable(void **state)
{
    (void)state;
    run_reachable(5);
}

/* ---- group "unreachable" ---- */

/* atrium_proxy_xds_connects_total from /stats, or -1. */
static long long connects_of(const proxy_run *run)
{
    reply answer = http(run->admin_port, "GET", "/stats", NULL, NULL);
    long long value = -1;
    const char *name = "\natrium_proxy_xds_connects_total ";
    const char *at = answer.status == 200 && answer.text ? strstr(answer.text, name) : NULL;
    if (at != NULL)
        value = atoll(at + strlen(name));
    free(answer.text);
    return value;
}

static void run_unreachable(size_t which)
{
    char state_dir[128], log_path[160], path[192];
    new_case(state_dir, sizeof(state_dir), log_path, sizeof(log_path));
    snprintf(path, sizeof(path), "%s/%s", state_dir, STATE_FILE_NAME);
    size_t length = 0;
    uint8_t *bytes = damaged_bytes(which, &length);
    write_file(path, bytes, length);
    long long started = clock_wall_ms() / 1000;

    proxy_run run;
    proxy_start(&run, free_port(), state_dir, log_path);
    proxy_wait_started(&run);
    /* Event: the first attempt failed and a second one started. */
    int64_t deadline = clock_monotonic_ms() + RETRY_WAIT_MS;
    long long connects;
    while ((connects = connects_of(&run)) < 2) {
        if (proxy_exited(&run)) {
            print_log(&run);
            fail_msg("%s: atrium-proxy exited with status %d", damages[which].name,
                     run.exit_status);
        }
        if (clock_monotonic_ms() > deadline) {
            proxy_stop(&run);
            print_log(&run);
            fail_msg("%s: no second connection attempt within %d ms (connects %lld)",
                     damages[which].name, RETRY_WAIT_MS, connects);
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    assert_false(proxy_exited(&run));
    reply ready = http(run.admin_port, "GET", "/ready", NULL, NULL);
    if (ready.status != 503 || strstr(ready.text, "no configuration") == NULL) {
        print_log(&run);
        fail_msg("%s: /ready answered %ld \"%s\" with no usable state and no atriumd",
                 damages[which].name, ready.status, ready.text ? ready.text : "");
    }
    free(ready.text);
    expect_set_aside(&run, state_dir, which, bytes, length, started);
    assert_int_equal(access(path, F_OK), -1); /* nothing saved: nothing was accepted */
    assert_int_equal(proxy_stop(&run), 0);
    free(bytes);
}

static void test_unreachable_zero_length(void **state)
{
    (void)state;
    run_unreachable(0);
}

static void test_unreachable_truncated(void **state)
{
    (void)state;
    run_unreachable(1);
}

static void test_unreachable_flipped_byte(void **state)
{
    (void)state;
    run_unreachable(2);
}

static void test_unreachable_wrong_magic(void **state)
{
    (void)state;
    run_unreachable(3);
}

static void test_unreachable_garbage(void **state)
{
    (void)state;
    run_unreachable(4);
}

static void test_unreachable_undecodable(void **state)
{
    (void)state;
    run_unreachable(5);
}

/* A saved state that cannot be read at all, nor saved over (a directory in
 * its place): the proxy refuses to start, exit status 1, naming the path. */
static void test_unreadable_state_exits(void **state)
{
    (void)state;
    char state_dir[128], log_path[160], path[192];
    new_case(state_dir, sizeof(state_dir), log_path, sizeof(log_path));
    snprintf(path, sizeof(path), "%s/%s", state_dir, STATE_FILE_NAME);
    assert_int_equal(mkdir(path, 0700), 0);
    proxy_run run;
    proxy_start(&run, free_port(), state_dir, log_path);
    int status = proxy_wait_exit(&run);
    char *log = read_text(run.log_path);
    assert_non_null(log);
    bool named = strstr(log, path) != NULL && strstr(log, "not a regular file") != NULL;
    free(log);
    if (status != 1 || !named) {
        print_log(&run);
        fail_msg("exit status %d (expected 1) and a message naming %s", status, path);
    }
    assert_int_equal(rmdir(path), 0);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_state_file),
        cmocka_unit_test(test_reachable_zero_length),
        cmocka_unit_test(test_reachable_truncated),
        cmocka_unit_test(test_reachable_flipped_byte),
        cmocka_unit_test(test_reachable_wrong_magic),
        cmocka_unit_test(test_reachable_garbage),
        cmocka_unit_test(test_reachable_undecodable),
        cmocka_unit_test(test_unreachable_zero_length),
        cmocka_unit_test(test_unreachable_truncated),
        cmocka_unit_test(test_unreachable_flipped_byte),
        cmocka_unit_test(test_unreachable_wrong_magic),
        cmocka_unit_test(test_unreachable_garbage),
        cmocka_unit_test(test_unreachable_undecodable),
        cmocka_unit_test(test_unreadable_state_exits),
    };
    int failed = cmocka_run_group_tests_name("proxy_state", tests, group_setup, group_teardown);
    curl_global_cleanup();
    return failed;
}
