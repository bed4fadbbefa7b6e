/*
 * rest_limits.c — issue 12, defect 7: what one client can make atriumd's
 * admin REST listener hold before it presents the token. Against a real
 * atriumd on 127.0.0.1:
 *   - a header line far over ADMIN_HTTP_HEADERS_MAX (64 KiB) is refused after
 *     a bounded number of bytes, quickly, and RSS stays bounded;
 *   - a body announced with a Content-Length over REST_BODY_MAX (1 MiB) is
 *     refused with 413 before the client sent any of it (so it is never
 *     read), with or without the token, and RSS stays flat across many;
 *   - idle connections without the token are capped
 *     (ADMIN_HTTP_MAX_UNAUTHENTICATED, 32): the oldest are closed, a
 *     connection that presented the token is kept, /healthz still answers and
 *     /metrics counts the closed ones.
 * Every flood is bounded in count and time; only the atriumd started here is
 * signalled.
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

#define HEADERS_MAX         (64 * 1024) /* ADMIN_HTTP_HEADERS_MAX */
#define MAX_UNAUTHENTICATED 32          /* ADMIN_HTTP_MAX_UNAUTHENTICATED */
#define FLOOD_LINE_BYTES    (16u * 1024 * 1024)
#define ANSWER_DEADLINE_MS  10000

static atriumd_fixture server;

/* ---- HTTP through libcurl, for the well-behaved requests ---- */

typedef struct body_text {
    char *text;
    size_t length;
} body_text;

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    body_text *body = context;
    char *grown = realloc(body->text, body->length + size * count + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + body->length, data, size * count);
    body->length += size * count;
    grown[body->length] = '\0';
    body->text = grown;
    return size * count;
}

/* GET path; returns the status (0 when the transfer failed) and the body in
 * *text (the caller frees it). */
static long http_get(const char *path, bool with_token, char **text)
{
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[256], authorization[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.rest_port, path);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", server.token);
    struct curl_slist *headers = with_token ? curl_slist_append(NULL, authorization) : NULL;
    body_text body = {calloc(1, 1), 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    long status = 0;
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (text)
        *text = body.text;
    else
        free(body.text);
    return status;
}

/* The value of a metric line that starts with name (labels included). */
static double metric(const char *name)
{
    char *text = NULL;
    assert_int_equal(http_get("/metrics", true, &text), 200);
    double value = -1;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ' ')
            value = strtod(line + strlen(name) + 1, NULL);
        const char *next = strchr(line, '\n');
        line = next ? next + 1 : NULL;
    }
    free(text);
    return value;
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char error[256];
    if (atriumd_fixture_start(&server, ATRIUMD_PATH, "rest-limits", error, sizeof(error)) != 0) {
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

/* ---- header bytes ---- */

static void test_header_line_over_limit_is_refused_early(void **state)
{
    (void)state;
    static const char start[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ";
    char *filler = malloc(HEADERS_MAX);
    assert_non_null(filler);
    memset(filler, 'a', HEADERS_MAX);
    long rss_before = rest_raw_rss_kib(server.pid);
    for (int round = 0; round < 8; round++) {
        int fd = rest_raw_connect(server.rest_port);
        assert_true(fd >= 0);
        int64_t deadline = rest_raw_now_ms() + ANSWER_DEADLINE_MS;
        bool answered = false;
        size_t sent = rest_raw_send_until_answer(fd, start, strlen(start), deadline, &answered);
        assert_int_equal(sent, strlen(start));
        /* 16 MiB of one header line, 64 KiB at a time, until the server speaks. */
        while (!answered && sent < FLOOD_LINE_BYTES && rest_raw_now_ms() < deadline)
            sent += rest_raw_send_until_answer(fd, filler, HEADERS_MAX, deadline, &answered);
        if (!answered)
            fail_msg("round %d: the server had not refused a %zu-byte header line after %d ms",
                     round, sent, ANSWER_DEADLINE_MS);
        /* Refused after about the limit, not after reading the lot; the kernel
         * buffers of both ends hold a few MiB on loopback. */
        assert_true(sent < FLOOD_LINE_BYTES / 2);
        char *reply = rest_raw_read_some(fd, rest_raw_now_ms() + ANSWER_DEADLINE_MS, 256);
        assert_non_null(reply);
        /* evhttp answers 400 itself (2.1 has no way to say 431), or the close
         * resets the connection before its answer is read. */
        assert_true(reply[0] == '\0' || strncmp(reply, "HTTP/1.1 400", 12) == 0);
        free(reply);
        close(fd);
    }
    free(filler);
    long rss_after = rest_raw_rss_kib(server.pid);
    /* Before the limit each round left up to 16 MiB behind (and took seconds
     * of CPU: the line was searched again on every read). */
    assert_true(rss_after - rss_before < 16 * 1024);
    assert_int_equal(http_get("/healthz", false, NULL), 200);
}

/* ---- body bytes ---- */

/* Announces an 8 MiB body and sends none of it: the answer must come anyway. */
static void expect_refused_before_the_body(bool with_token)
{
    char head[512];
    int length = snprintf(head, sizeof(head),
                          "PUT /v1/services/flood HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s"
                          "Content-Type: application/json\r\nContent-Length: 8388608\r\n\r\n",
                          with_token ? "Authorization: Bearer " : "",
                          with_token ? server.token : "", with_token ? "\r\n" : "");
    int fd = rest_raw_connect(server.rest_port);
    assert_true(fd >= 0);
    int64_t deadline = rest_raw_now_ms() + ANSWER_DEADLINE_MS;
    bool answered = false;
    assert_int_equal(rest_raw_send_until_answer(fd, head, (size_t)length, deadline, &answered),
                     (size_t)length);
    char *reply = rest_raw_read_some(fd, deadline, 256);
    if (reply == NULL)
        fail_msg("no answer within %d ms to a PUT announcing 8 MiB (token: %s): the server waits "
                 "for the body",
                 ANSWER_DEADLINE_MS, with_token ? "yes" : "no");
    if (strncmp(reply, "HTTP/1.1 413", 12) != 0)
        fail_msg("expected 413, got: %.80s", reply);
    free(reply);
    assert_true(rest_raw_wait_closed(fd, rest_raw_now_ms() + ANSWER_DEADLINE_MS));
    close(fd);
}

static void test_body_over_limit_is_refused_unread(void **state)
{
    (void)state;
    long rss_before = rest_raw_rss_kib(server.pid);
    for (int i = 0; i < 20; i++)
        expect_refused_before_the_body(false);
    expect_refused_before_the_body(true);

    /* Twenty clients that also send 1 MiB of their announced 8 MiB at once. */
    char *megabyte = malloc(1024 * 1024);
    assert_non_null(megabyte);
    memset(megabyte, ' ', 1024 * 1024);
    static const char head[] = "PUT /v1/services/flood HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Content-Type: application/json\r\nContent-Length: 8388608\r\n\r\n";
    int fds[20];
    for (int i = 0; i < 20; i++) {
        fds[i] = rest_raw_connect(server.rest_port);
        assert_true(fds[i] >= 0);
        int64_t deadline = rest_raw_now_ms() + ANSWER_DEADLINE_MS;
        bool answered = false;
        rest_raw_send_until_answer(fds[i], head, strlen(head), deadline, &answered);
        if (!answered)
            rest_raw_send_until_answer(fds[i], megabyte, 1024 * 1024, deadline, &answered);
    }
    for (int i = 0; i < 20; i++) {
        assert_true(rest_raw_wait_closed(fds[i], rest_raw_now_ms() + ANSWER_DEADLINE_MS));
        close(fds[i]);
    }
    free(megabyte);
    long rss_after = rest_raw_rss_kib(server.pid);
    /* Before: each connection buffered what it sent (up to 8 MiB each). */
    assert_true(rss_after - rss_before < 8 * 1024);
    char *text = NULL;
    assert_int_equal(http_get("/v1/services/flood", true, &text), 404);
    free(text);
}

/* ---- connections without the token ---- */

static void test_unauthenticated_connections_are_capped(void **state)
{
    (void)state;
    double closed_before = metric("atrium_rest_connections_closed_for_limit_total");
    assert_true(closed_before >= 0);

    /* One keep-alive connection that presented the token: never closed for the limit. */
    int trusted = rest_raw_connect(server.rest_port);
    assert_true(trusted >= 0);
    char request[256];
    int length = snprintf(request, sizeof(request),
                          "GET /v1/revision HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Authorization: Bearer %s\r\n\r\n",
                          server.token);
    bool answered = false;
    int64_t deadline = rest_raw_now_ms() + ANSWER_DEADLINE_MS;
    rest_raw_send_until_answer(trusted, request, (size_t)length, deadline, &answered);
    char *reply = rest_raw_read_some(trusted, deadline, 1024);
    assert_non_null(reply);
    assert_true(strncmp(reply, "HTTP/1.1 200", 12) == 0);
    free(reply);

    /* Forty connections that never send a byte. */
    enum { IDLE = MAX_UNAUTHENTICATED + 8 };
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++) {
        idle[i] = rest_raw_connect(server.rest_port);
        assert_true(idle[i] >= 0);
    }
    /* The eight oldest are closed by the server (before: they stayed open
     * until the 30 s timeout, and nothing bounded how many there were). */
    for (int i = 0; i < IDLE - MAX_UNAUTHENTICATED; i++) {
        if (!rest_raw_wait_closed(idle[i], rest_raw_now_ms() + ANSWER_DEADLINE_MS))
            fail_msg("idle connection %d of %d was not closed", i, IDLE);
    }
    /* /healthz answers (its connection takes the place of another idle one). */
    assert_int_equal(http_get("/healthz", false, NULL), 200);
    /* The trusted connection is still served. */
    deadline = rest_raw_now_ms() + ANSWER_DEADLINE_MS;
    rest_raw_send_until_answer(trusted, request, (size_t)length, deadline, &answered);
    reply = rest_raw_read_some(trusted, deadline, 1024);
    assert_non_null(reply);
    assert_true(strncmp(reply, "HTTP/1.1 200", 12) == 0);
    free(reply);
    close(trusted);
    for (int i = 0; i < IDLE; i++)
        close(idle[i]);
    assert_true(metric("atrium_rest_connections_closed_for_limit_total") >=
                closed_before + IDLE - MAX_UNAUTHENTICATED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_line_over_limit_is_refused_early),
        cmocka_unit_test(test_body_over_limit_is_refused_unread),
        cmocka_unit_test(test_unauthenticated_connections_are_capped),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
