/*
 * test_http_codec.c — proxy-stub/http_codec.c: HTTP/1.1 framing for the
 * proxy. Each input is run whole, split at every byte boundary and fed one
 * byte at a time; all runs must give the same events, heads and body bytes.
 * Also: request smuggling refusals, the 64 KiB head limit, keep-alive,
 * Expect, Host, responses (HEAD, 1xx, 204, 304, close-delimited, early close).
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "http_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a transcript of one run: events, heads and body bytes, as text ---- */

typedef struct transcript {
    char *text; /* owned, NUL-terminated */
    size_t length;
    size_t capacity;
} transcript;

static void add_bytes(transcript *out, const char *bytes, size_t length)
{
    if (length == 0 && out->text != NULL)
        return;
    if (out->length + length + 1 > out->capacity) {
        size_t capacity = out->capacity == 0 ? 256 : out->capacity;
        while (out->length + length + 1 > capacity)
            capacity *= 2;
        out->text = realloc(out->text, capacity);
        assert_non_null(out->text);
        out->capacity = capacity;
    }
    if (length > 0)
        memcpy(out->text + out->length, bytes, length);
    out->length += length;
    out->text[out->length] = '\0';
}

static void add(transcript *out, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void add(transcript *out, const char *format, ...)
{
    char line[512];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(line, sizeof(line), format, arguments);
    va_end(arguments);
    assert_true(length >= 0 && (size_t)length < sizeof(line));
    add_bytes(out, line, (size_t)length);
}

static void add_text(transcript *out, http_text text)
{
    add_bytes(out, text.data, text.length);
}

static void add_head(transcript *out, http_codec_kind kind, const http_head *head, size_t raw_bytes)
{
    add(out, "HEAD %zu ", raw_bytes);
    if (kind == HTTP_CODEC_REQUEST) {
        add_text(out, head->method);
        add(out, " ");
        add_text(out, head->target);
    } else {
        add(out, "%d ", head->status);
        add_text(out, head->reason);
    }
    add(out, " HTTP/%u.%u", head->version_major, head->version_minor);
    if (kind == HTTP_CODEC_REQUEST) {
        add(out, " host=");
        add_text(out, head->host);
    }
    add(out, " cl=%lld%s%s%s%s%s%s\n", (long long)head->content_length,
        head->chunked ? " chunked" : "", head->has_body ? " body" : "",
        head->keep_alive ? " keep-alive" : "", head->upgrade ? " upgrade" : "",
        head->expect_continue ? " expect-continue" : "",
        head->is_head_method ? " head-method" : "");
    for (size_t i = 0; i < head->header_count; i++) {
        add(out, "  ");
        add_text(out, head->headers[i].name);
        add(out, ": ");
        add_text(out, head->headers[i].value);
        add(out, "\n");
    }
}

typedef struct run_options {
    http_codec_kind kind;
    /* Responses: one letter per final response, 'H' when it answers a HEAD. */
    const char *answers_head;
    bool finish; /* call http_codec_finish at the end of the input */
} run_options;

/* State of one run while it feeds pieces. */
typedef struct run_state {
    http_codec *codec;
    const run_options *options;
    transcript out;
    transcript body;        /* body bytes of the current message */
    size_t raw_bytes;       /* bytes consumed since the current message began */
    size_t final_responses; /* final responses ended, to index answers_head */
    bool in_message;
    bool failed;
} run_state;

static void expect_head_for_next(run_state *run)
{
    const char *answers_head = run->options->answers_head;
    if (answers_head != NULL && run->final_responses < strlen(answers_head))
        http_codec_expect_head_response(run->codec, answers_head[run->final_responses] == 'H');
}

static void record_error(run_state *run, const char *prefix)
{
    const char *reason = NULL;
    int status = http_codec_error(run->codec, &reason);
    assert_non_null(reason);
    add(&run->out, "%sERROR %d %s\n", prefix, status, reason);
    run->failed = true;
}

static void record_message_end(run_state *run, const char *prefix)
{
    const http_head *head = http_codec_head(run->codec);
    assert_non_null(head); /* still valid until the next message starts */
    add(&run->out, "%sEND %zu:", prefix, run->body.length);
    add_bytes(&run->out, run->body.text != NULL ? run->body.text : "", run->body.length);
    add(&run->out, "\n");
    run->body.length = 0;
    run->raw_bytes = 0;
    run->in_message = false;
    if (run->options->kind == HTTP_CODEC_RESPONSE && head->status >= 200) {
        run->final_responses++;
        expect_head_for_next(run);
    }
}

/* Feeds data[start, end) until all of it is used (or an error). */
static void feed_piece(run_state *run, const char *data, size_t start, size_t end)
{
    size_t offset = start;
    http_codec_event event;
    do {
        size_t consumed = 12345;
        size_t available = end - offset;
        event = http_codec_execute(run->codec, data + offset, available, &consumed);
        assert_true(consumed <= available);
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            assert_int_equal(consumed, available); /* progress: all input used */
            run->raw_bytes += consumed;
            if (consumed > 0)
                run->in_message = true;
            break;
        case HTTP_CODEC_HEAD:
            assert_true(consumed > 0);
            run->raw_bytes += consumed;
            run->in_message = true;
            assert_non_null(http_codec_head(run->codec));
            add_head(&run->out, run->options->kind, http_codec_head(run->codec), run->raw_bytes);
            break;
        case HTTP_CODEC_BODY:
            assert_int_equal(consumed, available);
            add_bytes(&run->body, data + offset, consumed);
            break;
        case HTTP_CODEC_MESSAGE_END:
            add_bytes(&run->body, data + offset, consumed);
            record_message_end(run, "");
            break;
        case HTTP_CODEC_ERROR:
            assert_int_equal(consumed, 0);
            record_error(run, "");
            return;
        }
        offset += consumed;
        /* After HEAD, call again even without input: a bodyless message ends then. */
    } while (offset < end || event == HTTP_CODEC_HEAD);
}

/* Runs input through a new codec, cut at cuts[0] < cuts[1] < ... ; returns
 * the transcript (the caller frees it). */
static char *run_with_cuts(const run_options *options, const char *input, size_t length,
                           const size_t *cuts, size_t cut_count)
{
    run_state run = {.options = options};
    run.codec = http_codec_new(options->kind);
    assert_non_null(run.codec);
    expect_head_for_next(&run);
    size_t start = 0;
    for (size_t i = 0; i <= cut_count && !run.failed; i++) {
        size_t end = i < cut_count ? cuts[i] : length;
        feed_piece(&run, input, start, end);
        start = end;
    }
    if (!run.failed && options->finish) {
        http_codec_event event = http_codec_finish(run.codec);
        if (event == HTTP_CODEC_MESSAGE_END)
            record_message_end(&run, "FINISH ");
        else if (event == HTTP_CODEC_ERROR)
            record_error(&run, "FINISH ");
        else
            add(&run.out, "FINISH CLEAN\n");
    } else if (!run.failed && run.in_message) {
        add(&run.out, "PARTIAL %zu\n", run.body.length);
    }
    http_codec_free(run.codec);
    free(run.body.text);
    if (run.out.text == NULL)
        add_bytes(&run.out, "", 0);
    return run.out.text;
}

static char *run_whole(const run_options *options, const char *input, size_t length)
{
    return run_with_cuts(options, input, length, NULL, 0);
}

/* The transcript of the whole input, checked equal to the one of every split
 * at one byte boundary and to the one-byte-at-a-time run. */
static char *run_all_splits(const run_options *options, const char *input, size_t length)
{
    char *whole = run_whole(options, input, length);
    for (size_t cut = 1; cut < length; cut++) {
        char *split = run_with_cuts(options, input, length, &cut, 1);
        if (strcmp(whole, split) != 0)
            print_error("input split at byte %zu differs\n", cut);
        assert_string_equal(split, whole);
        free(split);
    }
    if (length > 1) {
        size_t *cuts = malloc((length - 1) * sizeof(*cuts));
        assert_non_null(cuts);
        for (size_t i = 0; i < length - 1; i++)
            cuts[i] = i + 1;
        char *bytewise = run_with_cuts(options, input, length, cuts, length - 1);
        if (strcmp(whole, bytewise) != 0)
            print_error("input fed one byte at a time differs\n");
        assert_string_equal(bytewise, whole);
        free(bytewise);
        free(cuts);
    }
    return whole;
}

static const run_options request_run = {.kind = HTTP_CODEC_REQUEST};
static const run_options response_run = {.kind = HTTP_CODEC_RESPONSE};
static const run_options response_run_finish = {.kind = HTTP_CODEC_RESPONSE, .finish = true};

/* Runs a request or response stream through every split and compares. */
static void check_stream(const run_options *options, const char *input, const char *expected)
{
    char *result = run_all_splits(options, input, strlen(input));
    assert_string_equal(result, expected);
    free(result);
}

static void check_request(const char *input, const char *expected)
{
    check_stream(&request_run, input, expected);
}

/* The status of the error a request ends in (whole input, every split). */
static void check_request_refused(const char *input, int status)
{
    char *result = run_all_splits(&request_run, input, strlen(input));
    char expected[32];
    snprintf(expected, sizeof(expected), "ERROR %d ", status);
    if (strstr(result, expected) == NULL)
        print_error("transcript:\n%s\n", result);
    assert_non_null(strstr(result, expected));
    free(result);
}

/* ---- requests ---- */

static void test_simple_get(void **state)
{
    (void)state;
    const char *input = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    assert_non_null(codec);
    assert_null(http_codec_head(codec));
    size_t consumed = 0;
    assert_int_equal(http_codec_execute(codec, input, strlen(input), &consumed), HTTP_CODEC_HEAD);
    assert_int_equal(consumed, strlen(input)); /* right after the blank line */
    const http_head *head = http_codec_head(codec);
    assert_non_null(head);
    assert_true(http_text_equals(head->method, "GET"));
    assert_false(head->is_head_method);
    assert_true(http_text_equals(head->target, "/a?b=1"));
    assert_true(http_text_equals(head->host, "example.com"));
    assert_int_equal(head->version_major, 1);
    assert_int_equal(head->version_minor, 1);
    assert_int_equal(head->header_count, 2);
    assert_int_equal(head->content_length, -1);
    assert_false(head->chunked);
    assert_false(head->has_body);
    assert_true(head->keep_alive);
    assert_false(head->upgrade);
    assert_false(head->expect_continue);
    /* A bodyless message ends on the next call, even without input. */
    assert_int_equal(http_codec_execute(codec, "", 0, &consumed), HTTP_CODEC_MESSAGE_END);
    assert_int_equal(consumed, 0);
    assert_non_null(http_codec_head(codec));
    assert_int_equal(http_codec_execute(codec, "", 0, &consumed), HTTP_CODEC_NEED_MORE);
    assert_int_equal(http_codec_finish(codec), HTTP_CODEC_NEED_MORE); /* clean close */
    http_codec_free(codec);

    check_request(input, "HEAD 55 GET /a?b=1 HTTP/1.1 host=example.com cl=-1 keep-alive\n"
                         "  Host: example.com\n"
                         "  Accept: */*\n"
                         "END 0:\n");
}

static void test_content_length_body(void **state)
{
    (void)state;
    const char *input = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    size_t consumed = 0;
    size_t length = strlen(input);
    assert_int_equal(http_codec_execute(codec, input, length, &consumed), HTTP_CODEC_HEAD);
    assert_int_equal(consumed, length - 11);
    assert_int_equal(http_codec_head(codec)->content_length, 11);
    assert_true(http_codec_head(codec)->has_body);
    assert_int_equal(http_codec_execute(codec, input + length - 11, 5, &consumed), HTTP_CODEC_BODY);
    assert_int_equal(consumed, 5);
    assert_int_equal(http_codec_execute(codec, input + length - 6, 6, &consumed),
                     HTTP_CODEC_MESSAGE_END);
    assert_int_equal(consumed, 6);
    http_codec_free(codec);

    check_request(input, "HEAD 54 POST /upload HTTP/1.1 host=a cl=11 body keep-alive\n"
                         "  Host: a\n"
                         "  Content-Length: 11\n"
                         "END 11:hello world\n");
}

static void test_pipelined_requests(void **state)
{
    (void)state;
    check_request("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                  "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                  "\r\n" /* an empty line between requests is ignored */
                  "HEAD /3 HTTP/1.1\r\nHost: b\r\n\r\n"
                  "GET /4 HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n",
                  "HEAD 28 GET /1 HTTP/1.1 host=a cl=-1 keep-alive\n"
                  "  Host: a\n"
                  "END 0:\n"
                  "HEAD 48 POST /2 HTTP/1.1 host=a cl=3 body keep-alive\n"
                  "  Host: a\n"
                  "  Content-Length: 3\n"
                  "END 3:abc\n"
                  "HEAD 31 HEAD /3 HTTP/1.1 host=b cl=-1 keep-alive head-method\n"
                  "  Host: b\n"
                  "END 0:\n"
                  "HEAD 47 GET /4 HTTP/1.1 host=c cl=0 keep-alive\n"
                  "  Host: c\n"
                  "  Content-Length: 0\n"
                  "END 0:\n");
}

static void test_pipelined_in_one_buffer(void **state)
{
    (void)state;
    const char *input = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    size_t consumed = 0;
    size_t offset = 0;
    size_t length = strlen(input);
    assert_int_equal(http_codec_execute(codec, input, length, &consumed), HTTP_CODEC_HEAD);
    assert_int_equal(consumed, 28);
    offset += consumed;
    assert_int_equal(http_codec_execute(codec, input + offset, length - offset, &consumed),
                     HTTP_CODEC_MESSAGE_END);
    assert_int_equal(consumed, 0);
    assert_int_equal(http_codec_execute(codec, input + offset, length - offset, &consumed),
                     HTTP_CODEC_HEAD);
    assert_true(http_text_equals(http_codec_head(codec)->target, "/2"));
    offset += consumed;
    assert_int_equal(offset, length);
    http_codec_free(codec);
}

static void test_chunked_body_is_raw(void **state)
{
    (void)state;
    const char *head = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *chunks = "5;name=value\r\nhello\r\n"
                         "A\r\n0123456789\r\n"
                         "0\r\nTrailer-Field: x\r\n\r\n";
    char input[512];
    snprintf(input, sizeof(input), "%s%s", head, chunks);
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "HEAD %zu POST /c HTTP/1.1 host=a cl=-1 chunked body keep-alive\n"
             "  Host: a\n"
             "  Transfer-Encoding: chunked\n"
             "END %zu:%s\n",
             strlen(head), strlen(chunks), chunks);
    check_request(input, expected);

    /* Followed by another request: the chunked framing ends exactly. */
    snprintf(input, sizeof(input), "%s%sGET / HTTP/1.1\r\nHost: a\r\n\r\n", head, chunks);
    char *result = run_all_splits(&request_run, input, strlen(input));
    assert_non_null(strstr(result, "HEAD 27 GET / HTTP/1.1"));
    free(result);
}

static void test_unterminated_body(void **state)
{
    (void)state;
    check_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
                  "HEAD 48 POST / HTTP/1.1 host=a cl=10 body keep-alive\n"
                  "  Host: a\n"
                  "  Content-Length: 10\n"
                  "PARTIAL 3\n");
    /* The client closing inside a body or a head is an error. */
    run_options finish = {.kind = HTTP_CODEC_REQUEST, .finish = true};
    char *result =
        run_whole(&finish, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab", 50);
    assert_non_null(strstr(result, "FINISH ERROR 400"));
    free(result);
    result = run_whole(&finish, "GET / HTTP/1.1\r\nHo", 18);
    assert_string_equal(result, "FINISH ERROR 400 connection closed inside a head\n");
    free(result);
}

/* ---- request smuggling ---- */

static void test_content_length_with_transfer_encoding(void **state)
{
    (void)state;
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Length: 5\r\n\r\n0\r\n\r\n",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                          "Content-Length: 5\r\n\r\nhello",
                          400);
}

static void test_duplicate_content_length(void **state)
{
    (void)state;
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                          "Content-Length: 6\r\n\r\nhello!",
                          400);
    /* http_parser 2.9.4 refuses a repeated Content-Length even when equal. */
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                          "Content-Length: 5\r\n\r\nhello",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400);
}

static void test_malformed_content_length(void **state)
{
    (void)state;
    const char *values[] = {"abc", "-1", "+5", "1 2", "0x10", "99999999999999999999", ""};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char input[256];
        snprintf(input, sizeof(input), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 values[i]);
        check_request_refused(input, 400);
    }
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    /* Not a final chunked: 400 (RFC 9112 6.3). */
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                          "Transfer-Encoding: gzip\r\n\r\n",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400);
    /* chunked twice, or with parameters: 400. */
    check_request_refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400);
    check_request_refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n", 400);
    /* A coding we do not know before the final chunked: 501. */
    check_request_refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n", 501);
    /* Any Transfer-Encoding in HTTP/1.0: 400 (RFC 9112 6.1). */
    check_request_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    /* Known codings with a final chunked are framed by chunked. */
    check_request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
                  "HEAD 81 POST / HTTP/1.1 host=a cl=-1 chunked body keep-alive\n"
                  "  Host: a\n"
                  "  Transfer-Encoding: gzip\n"
                  "  Transfer-Encoding: chunked\n"
                  "END 11:1\r\nz\r\n0\r\n\r\n\n");
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                          400);
}

static void test_obsolete_line_folding(void **state)
{
    (void)state;
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n", 400);
}

/* Chunked framing is checked strictly here, not by the non-strict
 * libhttp-parser build ("funky chunks": a proxy and a server that end chunk
 * lines differently see different requests). */
static void check_chunked_refused(const char *chunks)
{
    char input[8192];
    snprintf(input, sizeof(input),
             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%s", chunks);
    check_request_refused(input, 400);
}

static void test_chunked_framing_is_strict(void **state)
{
    (void)state;
    check_chunked_refused("3;a\nb\r\nabc\r\n0\r\n\r\n"); /* bare LF in an extension */
    check_chunked_refused("3\r\nabcXY0\r\n\r\n");        /* no CRLF after the data */
    check_chunked_refused("3\r\nabc\n0\r\n\r\n");
    check_chunked_refused("3\nabc\r\n0\r\n\r\n"); /* bare LF ends the size line */
    check_chunked_refused("3\rXabc\r\n0\r\n\r\n");
    check_chunked_refused("\r\n"); /* no size */
    check_chunked_refused("g\r\n");
    check_chunked_refused("-1\r\n");
    check_chunked_refused("0x3\r\nabc\r\n0\r\n\r\n");
    check_chunked_refused("3 x\r\nabc\r\n0\r\n\r\n");
    check_chunked_refused("8000000000000000\r\n"); /* 2^63 */
    check_chunked_refused("3;a\x01\r\nabc\r\n0\r\n\r\n");
    check_chunked_refused("0\r\nBad Trailer: x\r\n\r\n");
    check_chunked_refused("0\r\nTrailer: x\r\n folded\r\n\r\n");
    check_chunked_refused("0\r\nTrailer: x\n\r\n");
    check_chunked_refused("0\r\nTrailer: x\r\n\n");
    check_chunked_refused("0\r\nTrailer\r\n\r\n");
    check_chunked_refused("0\r\n\rX");
    char long_extension[6000];
    memset(long_extension, 'e', sizeof(long_extension));
    memcpy(long_extension, "1;", 2);
    memcpy(long_extension + sizeof(long_extension) - 10, "\r\nz\r\n0\r\n\r", 9);
    long_extension[sizeof(long_extension) - 1] = '\0';
    check_chunked_refused(long_extension);

    /* What is allowed: BWS before extensions, quoted values, upper-case hex,
     * leading zeros, trailers, and sizes up to 2^63 - 1. */
    check_request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3 ;a=\"x;\\\"y\"\t; b\r\nabc\r\n00A\r\n0123456789\r\n"
                  "000\r\nT1: x\r\nT2:\r\n\r\n",
                  "HEAD 56 POST / HTTP/1.1 host=a cl=-1 chunked body keep-alive\n"
                  "  Host: a\n"
                  "  Transfer-Encoding: chunked\n"
                  "END 59:3 ;a=\"x;\\\"y\"\t; b\r\nabc\r\n00A\r\n0123456789\r\n"
                  "000\r\nT1: x\r\nT2:\r\n\r\n\n");
    const char *largest = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "7fffffffffffffff\r\nabc";
    char *result = run_whole(&request_run, largest, strlen(largest));
    assert_string_equal(result, "HEAD 56 POST / HTTP/1.1 host=a cl=-1 chunked body keep-alive\n"
                                "  Host: a\n"
                                "  Transfer-Encoding: chunked\n"
                                "PARTIAL 21\n");
    free(result);
}

/* Other things the non-strict libhttp-parser build lets through. */
static void test_lax_parser_gaps(void **state)
{
    (void)state;
    /* Whitespace before the colon (RFC 9112 5.1: 400). */
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"
                          "0\r\n\r\n",
                          400);
    check_request_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost : evil\r\nHost: a\r\n\r\n", 400);
    /* Control bytes in the request target. */
    check_request_refused("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    check_request_refused("GET /a\fb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    /* A CR not followed by LF anywhere in a head. */
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\n\rX", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    check_stream(&response_run, "HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",
                 "ERROR 502 bare CR in head\n");
    /* Line ends of a single LF are accepted in heads (RFC 9112 2.2). */
    check_request("GET / HTTP/1.1\nHost: a\n\n", "HEAD 24 GET / HTTP/1.1 host=a cl=-1 keep-alive\n"
                                                 "  Host: a\n"
                                                 "END 0:\n");
}

/* ---- limits ---- */

/* A request whose head is exactly head_length bytes: a request line, Host,
 * then "X: vvv...\r\n" fields of at most 1000 bytes (the caller frees it). */
static char *request_with_head_length(size_t head_length)
{
    const char *start = "GET / HTTP/1.1\r\nHost: a\r\n";
    const size_t smallest_field = 5; /* "X: \r\n" */
    char *input = malloc(head_length + 1);
    assert_non_null(input);
    size_t length = strlen(start);
    memcpy(input, start, length);
    size_t remaining = head_length - length - 2; /* the blank line ends it */
    while (remaining > 0) {
        size_t field = remaining < 1000 ? remaining : 1000;
        if (remaining - field > 0 && remaining - field < smallest_field)
            field = remaining - smallest_field;
        assert_true(field >= smallest_field);
        memcpy(input + length, "X: ", 3);
        memset(input + length + 3, 'v', field - smallest_field);
        memcpy(input + length + field - 2, "\r\n", 2);
        length += field;
        remaining -= field;
    }
    memcpy(input + length, "\r\n", 2);
    length += 2;
    assert_int_equal(length, head_length);
    input[length] = '\0';
    return input;
}

static void test_head_limit(void **state)
{
    (void)state;
    /* Exactly HTTP_CODEC_MAX_HEAD bytes: accepted, whichever way it is cut. */
    char *input = request_with_head_length(HTTP_CODEC_MAX_HEAD);
    size_t length = strlen(input);
    size_t cuts[] = {1, 4096, 4097, 30000, 65535};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char *result = run_with_cuts(&request_run, input, length, &cuts[i], 1);
        assert_non_null(strstr(result, "HEAD 65536 GET / HTTP/1.1"));
        assert_non_null(strstr(result, "END 0:"));
        free(result);
    }
    free(input);

    /* One byte more: 431, however cut, also one byte at a time. */
    input = request_with_head_length(HTTP_CODEC_MAX_HEAD + 1);
    length = strlen(input);
    size_t more_cuts[] = {1, 65535, 65536};
    char *whole = run_whole(&request_run, input, length);
    assert_string_equal(whole, "ERROR 431 header section too large\n");
    for (size_t i = 0; i < sizeof(more_cuts) / sizeof(more_cuts[0]); i++) {
        char *result = run_with_cuts(&request_run, input, length, &more_cuts[i], 1);
        assert_string_equal(result, whole);
        free(result);
    }
    size_t *bytewise = malloc((length - 1) * sizeof(*bytewise));
    assert_non_null(bytewise);
    for (size_t i = 0; i < length - 1; i++)
        bytewise[i] = i + 1;
    char *result = run_with_cuts(&request_run, input, length, bytewise, length - 1);
    assert_string_equal(result, whole);
    free(result);
    free(bytewise);
    free(whole);
    free(input);

    /* Far more than that in one buffer. */
    size_t big_length = 200 * 1024;
    char *big = malloc(big_length + 1);
    assert_non_null(big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    memset(big + 19, 'v', big_length - 19);
    big[big_length] = '\0';
    result = run_whole(&request_run, big, big_length);
    assert_string_equal(result, "ERROR 431 header section too large\n");
    free(result);
    free(big);
}

static void test_too_many_headers(void **state)
{
    (void)state;
    char input[8192];
    size_t length = (size_t)snprintf(input, sizeof(input), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_CODEC_MAX_HEADERS; i++)
        length += (size_t)snprintf(input + length, sizeof(input) - length, "H%d: %d\r\n", i, i);
    /* HTTP_CODEC_MAX_HEADERS fields: fine. */
    memcpy(input + length, "\r\n", 3);
    char *result = run_all_splits(&request_run, input, strlen(input));
    assert_non_null(strstr(result, "  H127: 127\nEND 0:\n"));
    free(result);
    /* One more: 431. */
    snprintf(input + length, sizeof(input) - length, "One-Too-Many: x\r\n\r\n");
    check_request_refused(input, 431);
}

static void test_head_buffer_grows_and_is_reused(void **state)
{
    (void)state;
    /* A 20 KiB head, then small ones: heads stay intact through the growth. */
    char *large = request_with_head_length(20000);
    size_t large_length = strlen(large);
    const char *small = "GET /small HTTP/1.1\r\nHost: b\r\n\r\n";
    char *input = malloc(large_length + 2 * strlen(small) + 1);
    assert_non_null(input);
    snprintf(input, large_length + 2 * strlen(small) + 1, "%s%s%s", small, large, small);
    size_t cuts[] = {10, 5000, 20010};
    char *whole = run_whole(&request_run, input, strlen(input));
    char *split = run_with_cuts(&request_run, input, strlen(input), cuts, 3);
    assert_string_equal(split, whole);
    assert_non_null(strstr(whole, "HEAD 20000 GET / HTTP/1.1 host=a"));
    assert_non_null(strstr(strstr(whole, "HEAD 20000"), "HEAD 32 GET /small HTTP/1.1 host=b"));
    free(split);
    free(whole);
    free(input);
    free(large);
}

/* ---- keep-alive, Expect, Host, Upgrade, versions ---- */

static void test_keep_alive(void **state)
{
    (void)state;
    check_request("GET / HTTP/1.0\r\n\r\n", "HEAD 18 GET / HTTP/1.0 host= cl=-1\n"
                                            "END 0:\n");
    check_request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                  "HEAD 42 GET / HTTP/1.0 host= cl=-1 keep-alive\n"
                  "  Connection: keep-alive\n"
                  "END 0:\n");
    check_request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                  "HEAD 46 GET / HTTP/1.1 host=a cl=-1\n"
                  "  Host: a\n"
                  "  Connection: close\n"
                  "END 0:\n");
    check_request("GET / HTTP/1.1\r\nHost: a\r\nconnection: Keep-Alive, CLOSE\r\n\r\n",
                  "HEAD 58 GET / HTTP/1.1 host=a cl=-1\n"
                  "  Host: a\n"
                  "  connection: Keep-Alive, CLOSE\n"
                  "END 0:\n");
    /* Nothing may follow the last message of a connection. */
    check_request("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
                  "HEAD 18 GET / HTTP/1.0 host= cl=-1\n"
                  "END 0:\n"
                  "ERROR 400 data after the connection's last message\n");
}

static void test_expect_continue(void **state)
{
    (void)state;
    check_request(
        "PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
        "HEAD 69 PUT /f HTTP/1.1 host=a cl=2 body keep-alive expect-continue\n"
        "  Host: a\n"
        "  Expect: 100-Continue\n"
        "  Content-Length: 2\n"
        "END 2:ok\n");
    /* Ignored in HTTP/1.0 (RFC 9110 10.1.1). */
    check_request("PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
                  "HEAD 60 PUT /f HTTP/1.0 host= cl=2 body\n"
                  "  Expect: 100-continue\n"
                  "  Content-Length: 2\n"
                  "END 2:ok\n");
}

static void test_host(void **state)
{
    (void)state;
    /* Surrounding whitespace is not part of a value. */
    check_request("GET / HTTP/1.1\r\nHost:   a.example:8080 \t\r\n\r\n",
                  "HEAD 44 GET / HTTP/1.1 host=a.example:8080 cl=-1 keep-alive\n"
                  "  Host: a.example:8080\n"
                  "END 0:\n");
    check_request_refused("GET / HTTP/1.1\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    /* Absolute form: the target's authority wins over Host (RFC 9112 3.2.2). */
    check_request("GET http://b.example:81/p?q HTTP/1.1\r\nHost: a\r\n\r\n",
                  "HEAD 49 GET http://b.example:81/p?q HTTP/1.1 host=b.example:81 cl=-1 "
                  "keep-alive\n"
                  "  Host: a\n"
                  "END 0:\n");
    check_request("GET http://[::1]:8080 HTTP/1.1\r\nHost: x\r\n\r\n",
                  "HEAD 43 GET http://[::1]:8080 HTTP/1.1 host=[::1]:8080 cl=-1 keep-alive\n"
                  "  Host: x\n"
                  "END 0:\n");
    check_request_refused("GET http://user@b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", 400);
    check_request_refused("GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

/* The head of input (one request); the codec is returned for freeing. */
static const http_head *parse_one_head(const char *input, http_codec **codec)
{
    *codec = http_codec_new(HTTP_CODEC_REQUEST);
    assert_non_null(*codec);
    size_t consumed = 0;
    assert_int_equal(http_codec_execute(*codec, input, strlen(input), &consumed), HTTP_CODEC_HEAD);
    const http_head *head = http_codec_head(*codec);
    assert_non_null(head);
    return head;
}

/* RFC 9112 3.2.2: an absolute-form target's authority replaces Host; the
 * proxy forwards the origin form (path and query, never the fragment). */
static void test_absolute_form(void **state)
{
    (void)state;
    static const struct {
        const char *target, *host, *path;
    } cases[] = {
        {"http://a.example/x", "a.example", "/x"},
        {"http://a.example:8080/x/y?q=1&r", "a.example:8080", "/x/y?q=1&r"},
        {"http://a.example", "a.example", ""},          /* forwarded as "/" */
        {"http://a.example?q", "a.example", "?q"},      /* forwarded as "/?q" */
        {"http://a.example/p#frag", "a.example", "/p"}, /* no fragment */
        {"https://[::1]:8443/v6", "[::1]:8443", "/v6"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char input[256];
        snprintf(input, sizeof(input), "GET %s HTTP/1.1\r\nHost: b.example\r\n\r\n",
                 cases[i].target);
        http_codec *codec;
        const http_head *head = parse_one_head(input, &codec);
        assert_true(head->host_from_target);
        assert_true(http_text_equals(head->target, cases[i].target));
        assert_true(http_text_equals(head->host, cases[i].host));
        assert_int_equal(head->path.length, strlen(cases[i].path));
        assert_memory_equal(head->path.data, cases[i].path, head->path.length);
        http_codec_free(codec);
    }
    /* Origin and asterisk forms: Host stays, the target is forwarded as is. */
    http_codec *codec;
    const http_head *head = parse_one_head("GET /o?k HTTP/1.1\r\nHost: b\r\n\r\n", &codec);
    assert_false(head->host_from_target);
    assert_true(http_text_equals(head->path, "/o?k"));
    assert_true(http_text_equals(head->host, "b"));
    http_codec_free(codec);
    head = parse_one_head("OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n", &codec);
    assert_false(head->host_from_target);
    assert_true(http_text_equals(head->path, "*"));
    http_codec_free(codec);
}

/* http_codec_head_started: what the request-head timeout measures. */
static void test_head_started(void **state)
{
    (void)state;
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    size_t consumed = 0;
    assert_false(http_codec_head_started(codec));
    assert_int_equal(http_codec_execute(codec, "\r\n", 2, &consumed), HTTP_CODEC_NEED_MORE);
    assert_false(http_codec_head_started(codec)); /* stray line ends start nothing */
    const char *part = "GET / HTTP/1.1\r\nHo";
    assert_int_equal(http_codec_execute(codec, part, strlen(part), &consumed),
                     HTTP_CODEC_NEED_MORE);
    assert_true(http_codec_head_started(codec));
    const char *rest = "st: a\r\n\r\n";
    assert_int_equal(http_codec_execute(codec, rest, strlen(rest), &consumed), HTTP_CODEC_HEAD);
    assert_false(http_codec_head_started(codec));
    assert_int_equal(http_codec_execute(codec, "", 0, &consumed), HTTP_CODEC_MESSAGE_END);
    assert_false(http_codec_head_started(codec));
    http_codec_free(codec);
}

static void test_upgrade_and_connect(void **state)
{
    (void)state;
    check_request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                  "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                  "HEAD 70 GET /ws HTTP/1.1 host=a cl=-1 keep-alive upgrade\n"
                  "  Host: a\n"
                  "  Connection: Upgrade\n"
                  "  Upgrade: websocket\n"
                  "END 0:\n"
                  "HEAD 27 GET / HTTP/1.1 host=a cl=-1 keep-alive\n"
                  "  Host: a\n"
                  "END 0:\n");
    /* An Upgrade header alone is only informative. */
    check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
                  "HEAD 41 GET / HTTP/1.1 host=a cl=-1 keep-alive\n"
                  "  Host: a\n"
                  "  Upgrade: h2c\n"
                  "END 0:\n");
    check_request("CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n",
                  "HEAD 55 CONNECT b.example:443 HTTP/1.1 host=b.example:443 cl=-1 keep-alive "
                  "upgrade\n"
                  "  Host: b.example:443\n"
                  "END 0:\n");
    check_request_refused(
        "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\nContent-Length: 3\r\n\r\nabc",
        400);
}

static void test_versions_and_garbage(void **state)
{
    (void)state;
    check_request_refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    check_request_refused("GET / HTTP/0.9\r\n\r\n", 505);
    check_request_refused("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    check_request_refused("hello world\r\n\r\n", 400);
    check_request_refused("\x16\x03\x01\x02\x01\x01\xfc\x03\x03", 400);
    check_request_refused("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400);
    check_request_refused("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400);
    /* Errors stick. */
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    size_t consumed = 7;
    assert_int_equal(http_codec_execute(codec, "BAD\x01", 4, &consumed), HTTP_CODEC_ERROR);
    assert_int_equal(consumed, 0);
    const char *reason = NULL;
    assert_int_equal(http_codec_error(codec, &reason), 400);
    assert_non_null(reason);
    assert_int_equal(http_codec_execute(codec, "GET / HTTP/1.1\r\n", 16, &consumed),
                     HTTP_CODEC_ERROR);
    assert_int_equal(http_codec_finish(codec), HTTP_CODEC_ERROR);
    http_codec_free(codec);
}

static void test_header_lookup(void **state)
{
    (void)state;
    const char *input = "GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: 42\r\nx-request-id: 43\r\n"
                        "Content-Type:text/plain\r\n\r\n";
    http_codec *codec = http_codec_new(HTTP_CODEC_REQUEST);
    size_t consumed;
    assert_int_equal(http_codec_execute(codec, input, strlen(input), &consumed), HTTP_CODEC_HEAD);
    const http_head *head = http_codec_head(codec);
    const http_text *value = http_head_find(head, "x-REQUEST-id");
    assert_non_null(value);
    assert_true(http_text_equals(*value, "42")); /* the first one */
    value = http_head_find(head, "CONTENT-TYPE");
    assert_non_null(value);
    assert_true(http_text_equals(*value, "TEXT/PLAIN"));
    assert_false(http_text_equals(*value, "text/plai"));
    assert_false(http_text_equals(*value, "text/plainx"));
    assert_null(http_head_find(head, "Content"));
    assert_null(http_head_find(head, "X-Request-IDs"));
    assert_true(http_text_equals(head->headers[1].name, "X-REQUEST-ID"));
    assert_memory_equal(head->headers[1].name.data, "X-Request-ID", 12); /* as received */
    http_codec_free(codec);
}

/* ---- responses ---- */

static void test_response_content_length(void **state)
{
    (void)state;
    check_stream(&response_run,
                 "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                 "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                 "HEAD 38 200 OK HTTP/1.1 cl=5 body keep-alive\n"
                 "  Content-Length: 5\n"
                 "END 5:hello\n"
                 "HEAD 45 404 Not Found HTTP/1.1 cl=0 keep-alive\n"
                 "  Content-Length: 0\n"
                 "END 0:\n");
}

static void test_response_chunked(void **state)
{
    (void)state;
    check_stream(&response_run,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                 "HEAD 47 200 OK HTTP/1.1 cl=-1 chunked body keep-alive\n"
                 "  Transfer-Encoding: chunked\n"
                 "END 13:3\r\nabc\r\n0\r\n\r\n\n"
                 "HEAD 38 200 OK HTTP/1.1 cl=1 body keep-alive\n"
                 "  Content-Length: 1\n"
                 "END 1:x\n");
}

static void test_response_without_body(void **state)
{
    (void)state;
    /* 204 and 304 have no body whatever their headers say. */
    check_stream(&response_run,
                 "HTTP/1.1 204 No Content\r\n\r\n"
                 "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 "HEAD 27 204 No Content HTTP/1.1 cl=-1 keep-alive\n"
                 "END 0:\n"
                 "HEAD 61 304 Not Modified HTTP/1.1 cl=100 keep-alive\n"
                 "  Content-Length: 100\n"
                 "  ETag: \"x\"\n"
                 "END 0:\n"
                 "HEAD 38 200 OK HTTP/1.1 cl=2 body keep-alive\n"
                 "  Content-Length: 2\n"
                 "END 2:ok\n");
}

static void test_response_to_head(void **state)
{
    (void)state;
    run_options options = {.kind = HTTP_CODEC_RESPONSE, .answers_head = "HGH"};
    check_stream(&options,
                 "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                 "HEAD 41 200 OK HTTP/1.1 cl=1000 keep-alive\n"
                 "  Content-Length: 1000\n"
                 "END 0:\n"
                 "HEAD 38 200 OK HTTP/1.1 cl=3 body keep-alive\n"
                 "  Content-Length: 3\n"
                 "END 3:abc\n"
                 "HEAD 47 200 OK HTTP/1.1 cl=-1 chunked keep-alive\n"
                 "  Transfer-Encoding: chunked\n"
                 "END 0:\n");
    /* Without Content-Length, a HEAD response still keeps the connection. */
    run_options head_only = {.kind = HTTP_CODEC_RESPONSE, .answers_head = "H"};
    check_stream(&head_only, "HTTP/1.1 200 OK\r\n\r\n",
                 "HEAD 19 200 OK HTTP/1.1 cl=-1 keep-alive\n"
                 "END 0:\n");
}

static void test_response_continue(void **state)
{
    (void)state;
    /* The HEAD flag applies to the final response, after any 1xx. */
    run_options options = {.kind = HTTP_CODEC_RESPONSE, .answers_head = "G"};
    check_stream(&options,
                 "HTTP/1.1 100 Continue\r\n\r\n"
                 "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
                 "HEAD 25 100 Continue HTTP/1.1 cl=-1 keep-alive\n"
                 "END 0:\n"
                 "HEAD 44 103 Early Hints HTTP/1.1 cl=-1 keep-alive\n"
                 "  Link: </s.css>\n"
                 "END 0:\n"
                 "HEAD 38 200 OK HTTP/1.1 cl=4 body keep-alive\n"
                 "  Content-Length: 4\n"
                 "END 4:done\n");
    /* Connection: close on a 1xx does not end the exchange before the final response. */
    check_stream(&response_run,
                 "HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 "HTTP/1.1 200 OK\r\n\r\n",
                 "HEAD 44 100 Continue HTTP/1.1 cl=-1\n"
                 "  Connection: close\n"
                 "END 0:\n"
                 "HEAD 57 200 OK HTTP/1.1 cl=0\n"
                 "  Content-Length: 0\n"
                 "  Connection: close\n"
                 "END 0:\n"
                 "ERROR 502 data after the connection's last message\n");
}

static void test_response_close_delimited(void **state)
{
    (void)state;
    check_stream(&response_run_finish, "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the end",
                 "HEAD 30 200 OK HTTP/1.1 cl=-1 body\n"
                 "  Server: x\n"
                 "FINISH END 13:until the end\n");
    check_stream(&response_run_finish, "HTTP/1.0 200 OK\r\n\r\n",
                 "HEAD 19 200 OK HTTP/1.0 cl=-1 body\n"
                 "FINISH END 0:\n");
    /* A response whose codings do not end in chunked is read until the close. */
    check_stream(&response_run_finish, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz",
                 "HEAD 44 200 OK HTTP/1.1 cl=-1 body\n"
                 "  Transfer-Encoding: gzip\n"
                 "FINISH END 3:zzz\n");
    /* A bodyless response ended by the close. */
    check_stream(&response_run_finish, "HTTP/1.1 204 No Content\r\n\r\n",
                 "HEAD 27 204 No Content HTTP/1.1 cl=-1 keep-alive\n"
                 "END 0:\n"
                 "FINISH CLEAN\n");
    /* A close between messages is clean. */
    check_stream(&response_run_finish, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                 "HEAD 38 200 OK HTTP/1.1 cl=1 body keep-alive\n"
                 "  Content-Length: 1\n"
                 "END 1:x\n"
                 "FINISH CLEAN\n");
}

static void test_response_early_close(void **state)
{
    (void)state;
    check_stream(&response_run_finish, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                 "HEAD 39 200 OK HTTP/1.1 cl=10 body keep-alive\n"
                 "  Content-Length: 10\n"
                 "FINISH ERROR 502 connection closed inside a body\n");
    check_stream(&response_run_finish,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
                 "HEAD 47 200 OK HTTP/1.1 cl=-1 chunked body keep-alive\n"
                 "  Transfer-Encoding: chunked\n"
                 "FINISH ERROR 502 connection closed inside a body\n");
    check_stream(&response_run_finish, "HTTP/1.1 200 OK\r\nContent-Le",
                 "FINISH ERROR 502 connection closed inside a head\n");
}

static void test_response_errors(void **state)
{
    (void)state;
    check_stream(&response_run, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 "ERROR 502 repeated Content-Length\n");
    check_stream(&response_run,
                 "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
                 "chunked\r\n\r\n",
                 "ERROR 502 Content-Length with Transfer-Encoding\n");
    check_stream(&response_run, "HTTP/2 200 OK\r\n\r\n", "ERROR 502 malformed HTTP version\n");
    check_stream(&response_run, "<html>\r\n", "ERROR 502 malformed message\n");
    check_stream(&response_run, "HTTP/1.1 2000 OK\r\n\r\n", "ERROR 502 malformed status line\n");
    /* After 101 Switching Protocols the bytes are not HTTP/1 any more. */
    check_stream(&response_run,
                 "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: "
                 "websocket\r\n\r\n\x81\x05hello",
                 "HEAD 77 101 Switching Protocols HTTP/1.1 cl=-1 upgrade\n"
                 "  Connection: upgrade\n"
                 "  Upgrade: websocket\n"
                 "END 0:\n"
                 "ERROR 502 input after 101 Switching Protocols\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_content_length_body),
        cmocka_unit_test(test_pipelined_requests),
        cmocka_unit_test(test_pipelined_in_one_buffer),
        cmocka_unit_test(test_chunked_body_is_raw),
        cmocka_unit_test(test_unterminated_body),
        cmocka_unit_test(test_content_length_with_transfer_encoding),
        cmocka_unit_test(test_duplicate_content_length),
        cmocka_unit_test(test_malformed_content_length),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_obsolete_line_folding),
        cmocka_unit_test(test_chunked_framing_is_strict),
        cmocka_unit_test(test_lax_parser_gaps),
        cmocka_unit_test(test_head_limit),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_head_buffer_grows_and_is_reused),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_head_started),
        cmocka_unit_test(test_upgrade_and_connect),
        cmocka_unit_test(test_versions_and_garbage),
        cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_without_body),
        cmocka_unit_test(test_response_to_head),
        cmocka_unit_test(test_response_continue),
        cmocka_unit_test(test_response_close_delimited),
        cmocka_unit_test(test_response_early_close),
        cmocka_unit_test(test_response_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
