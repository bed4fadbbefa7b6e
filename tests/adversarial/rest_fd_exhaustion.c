/*
 * rest_fd_exhaustion.c — issue 12, defect 5 (the REST part): atriumd out of
 * file descriptors must not spin on accept() nor flood its log. atriumd runs
 * under RLIMIT_NOFILE 128 (soft and hard, so it cannot raise it); the test
 * holds connections that presented the token until accept() fails (the next
 * connection stays in the listen backlog), then checks that while it is held
 * the log gets at most one line per second about it and atriumd uses little
 * CPU, and that after the connections close /healthz answers again and
 * /metrics counted the failures. Bounded: at most 200 connections, every wait
 * has a deadline, only 127.0.0.1.
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
#include "rest_raw.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOFILE          128
#define MAX_HELD        200
#define ACCEPT_LOG_TEXT "accept() failed"
#define DEADLINE_MS     10000

static atriumd_fixture server;

static size_t keep_body(char *data, size_t size, size_t count, void *context)
{
    FILE *out = context;
    return fwrite(data, size, count, out);
}

/* GET path with the token; the status (0 when the transfer failed), the body
 * in *text when text is not NULL (the caller frees it). */
static long http_get(const char *path, char **text)
{
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[256], authorization[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.rest_port, path);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", server.token);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    char *body = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&body, &length);
    assert_non_null(out);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 2L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    long status = 0;
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    fclose(out);
    if (text)
        *text = body;
    else
        free(body);
    return status;
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char error[256];
    if (atriumd_fixture_start_nofile(&server, ATRIUMD_PATH, "rest-fds", NOFILE, error,
                                     sizeof(error)) != 0) {
        fprintf(stderr, "%s\n", error);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int status = atriumd_fixture_stop(&server);
    curl_global_cleanup();
    return status == 0 ? 0 : -1;
}

static void test_out_of_descriptors(void **state)
{
    (void)state;
    char request[256];
    int length = snprintf(request, sizeof(request),
                          "GET /v1/revision HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Authorization: Bearer %s\r\n\r\n",
                          server.token);
    int held[MAX_HELD];
    size_t count = 0;
    bool exhausted = false;
    /* Keep-alive connections, each served once, until one is not served:
     * atriumd has no descriptor left to accept it, and said so in its log. */
    while (count < MAX_HELD && !exhausted) {
        int fd = rest_raw_connect(server.rest_port);
        if (fd < 0)
            break;
        held[count++] = fd;
        bool answered = false;
        rest_raw_send_until_answer(fd, request, (size_t)length, rest_raw_now_ms() + DEADLINE_MS,
                                   &answered);
        int64_t deadline = rest_raw_now_ms() + DEADLINE_MS;
        for (;;) {
            if (rest_raw_wait_readable(fd, rest_raw_now_ms() + 50)) {
                char *reply = rest_raw_read_some(fd, deadline, 1024);
                assert_non_null(reply);
                assert_true(strncmp(reply, "HTTP/1.1 200", 12) == 0);
                free(reply);
                break;
            }
            if (rest_raw_count_in_file(server.log_path, ACCEPT_LOG_TEXT) > 0) {
                exhausted = true;
                break;
            }
            if (rest_raw_now_ms() > deadline)
                fail_msg("connection %zu was neither served nor reported as not accepted in %d "
                         "ms (log: %s)",
                         count, DEADLINE_MS, server.log_path);
        }
    }
    if (!exhausted) {
        atriumd_fixture_print_log(&server);
        fail_msg("atriumd did not report accept() failures after %zu connections", count);
    }

    /* Held out of descriptors, with a connection waiting in the backlog:
     * the listener retries every 100 ms; the log gets one line a second. */
    double cpu_before = rest_raw_cpu_seconds(server.pid);
    int64_t started = rest_raw_now_ms();
    int64_t deadline = started + DEADLINE_MS;
    while (rest_raw_count_in_file(server.log_path, ACCEPT_LOG_TEXT) < 3 &&
           rest_raw_now_ms() < deadline)
        atriumd_fixture_sleep_ms(50);
    size_t lines = rest_raw_count_in_file(server.log_path, ACCEPT_LOG_TEXT);
    double cpu = rest_raw_cpu_seconds(server.pid) - cpu_before;
    double elapsed = (double)(rest_raw_now_ms() - started) / 1000.0;
    if (lines < 3)
        fail_msg("the accept() failures were reported %zu times in %.1f s (expected one line a "
                 "second while they go on)",
                 lines, elapsed);
    /* Before: 4.1 million lines in 11 s at 100 % CPU. */
    assert_true(rest_raw_file_size(server.log_path) < 64 * 1024);
    if (cpu > 0.5 * elapsed)
        fail_msg("atriumd used %.2f s of CPU in %.2f s while out of descriptors", cpu, elapsed);

    /* Let go: /healthz answers again, and /metrics counted the failures. */
    for (size_t i = 0; i < count; i++)
        close(held[i]);
    deadline = rest_raw_now_ms() + DEADLINE_MS;
    long status = 0;
    while ((status = http_get("/healthz", NULL)) != 200 && rest_raw_now_ms() < deadline)
        atriumd_fixture_sleep_ms(50);
    assert_int_equal(status, 200);
    char *metrics = NULL;
    assert_int_equal(http_get("/metrics", &metrics), 200);
    const char *line = strstr(metrics, "\natrium_rest_accept_failures_total ");
    assert_non_null(line);
    assert_true(strtod(line + strlen("\natrium_rest_accept_failures_total "), NULL) >= 3);
    free(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_descriptors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
