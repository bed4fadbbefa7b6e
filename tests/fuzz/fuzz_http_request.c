/*
 * fuzz_http_request.c — libFuzzer target for proxy-stub/http_codec.c, the
 * framing of what clients send to atrium-proxy. The first input byte chooses
 * where the rest is split in two; the rest is fed to a request codec whole,
 * then in the two pieces, looping over events as the proxy does (on past
 * MESSAGE_END for pipelining, stopping at ERROR). Checked at every step:
 * consumed ≤ length, progress, head fields in bounds; and both runs must give
 * the same heads, the same body bytes and the same events. Build with
 * -DATRIUM_FUZZ=ON and clang.
 */
#include "http_codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(condition)                                                                           \
    do {                                                                                           \
        if (!(condition))                                                                          \
            abort();                                                                               \
    } while (0)

/* What a run saw, to compare runs: heads and body bytes, in order. */
typedef struct transcript {
    unsigned char *bytes; /* owned */
    size_t length;
    size_t capacity;
} transcript;

static void add_bytes(transcript *out, const void *bytes, size_t length)
{
    if (length == 0)
        return;
    if (out->length + length > out->capacity) {
        size_t capacity = out->capacity == 0 ? 1024 : out->capacity;
        while (out->length + length > capacity)
            capacity *= 2;
        unsigned char *grown = realloc(out->bytes, capacity);
        CHECK(grown != NULL);
        out->bytes = grown;
        out->capacity = capacity;
    }
    memcpy(out->bytes + out->length, bytes, length);
    out->length += length;
}

static void add_number(transcript *out, uint64_t number)
{
    add_bytes(out, &number, sizeof(number));
}

static void add_text(transcript *out, http_text text)
{
    add_number(out, text.length);
    add_bytes(out, text.data, text.length);
}

static bool text_within(http_text inner, http_text outer)
{
    return inner.data >= outer.data && inner.data + inner.length <= outer.data + outer.length;
}

/* Checks a head's fields and records them. raw_bytes: what the head consumed. */
static void check_head(transcript *out, const http_head *head, size_t raw_bytes)
{
    CHECK(head != NULL);
    CHECK(raw_bytes > 0 && raw_bytes <= HTTP_CODEC_MAX_HEAD);
    CHECK(head->header_count <= HTTP_CODEC_MAX_HEADERS);
    CHECK(head->header_count == 0 || head->headers != NULL);
    CHECK(head->version_major == 1);
    CHECK(head->method.length > 0 && head->target.length > 0);
    CHECK(head->status == 0 && head->reason.length == 0);
    CHECK(head->content_length >= -1);
    CHECK(!head->chunked || head->content_length == -1);
    CHECK(head->has_body == (head->chunked || head->content_length > 0));
    CHECK(!head->expect_continue || head->version_minor >= 1);

    /* Copied text is never longer than the raw head; reading every byte lets
     * AddressSanitizer check the pointers. */
    size_t text_bytes = head->target.length;
    add_text(out, head->method);
    add_text(out, head->target);
    add_text(out, head->host);
    for (size_t i = 0; i < head->header_count; i++) {
        const http_header *header = &head->headers[i];
        CHECK(header->name.length > 0);
        text_bytes += header->name.length + header->value.length;
        add_text(out, header->name);
        add_text(out, header->value);
    }
    CHECK(text_bytes <= raw_bytes);
    /* host is a header value or part of the target. */
    bool host_found = head->host.length == 0 || text_within(head->host, head->target);
    for (size_t i = 0; i < head->header_count && !host_found; i++)
        host_found = text_within(head->host, head->headers[i].value);
    CHECK(host_found);
    if (head->host.length > 0 && !text_within(head->host, head->target))
        CHECK(http_head_find(head, "host") != NULL);

    add_number(out, raw_bytes);
    add_number(out, (uint64_t)head->content_length);
    add_number(out, head->version_minor);
    add_number(out, (uint64_t)head->chunked << 0 | (uint64_t)head->has_body << 1 |
                        (uint64_t)head->keep_alive << 2 | (uint64_t)head->upgrade << 3 |
                        (uint64_t)head->expect_continue << 4 | (uint64_t)head->is_head_method << 5);
}

typedef struct run {
    http_codec *codec;
    transcript out;
    transcript body;  /* body bytes of the current message */
    size_t raw_bytes; /* consumed since the current message began */
    bool failed;
} run;

static void check_error(run *state)
{
    const char *reason = NULL;
    int status = http_codec_error(state->codec, &reason);
    CHECK(status == 400 || status == 431 || status == 500 || status == 501 || status == 505);
    CHECK(reason != NULL && reason[0] != '\0');
    CHECK(http_codec_head(state->codec) == NULL);
    /* Errors stick. */
    size_t consumed = 1;
    CHECK(http_codec_execute(state->codec, "GET", 3, &consumed) == HTTP_CODEC_ERROR);
    CHECK(consumed == 0);
    /* Which error comes first may depend on the split (a fold found at a line
     * end, a bad byte found before it), and so do the body bytes handed over
     * before it: record only that an error happened. */
    state->body.length = 0;
    add_bytes(&state->out, "E", 1);
    state->failed = true;
}

/* Feeds data[0, length) until all of it is used or an error. */
static void feed(run *state, const char *data, size_t length)
{
    size_t offset = 0;
    size_t calls = 0;
    http_codec_event event;
    do {
        size_t available = length - offset;
        size_t consumed = SIZE_MAX;
        event = http_codec_execute(state->codec, data + offset, available, &consumed);
        CHECK(consumed <= available);
        /* Progress: each call consumes bytes or reports HEAD (at least one
         * byte) or the MESSAGE_END of a bodyless message (none, after HEAD). */
        CHECK(++calls <= 2 * length + 2);
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            CHECK(consumed == available);
            state->raw_bytes += consumed;
            break;
        case HTTP_CODEC_HEAD:
            CHECK(consumed > 0);
            state->raw_bytes += consumed;
            add_bytes(&state->out, "H", 1);
            check_head(&state->out, http_codec_head(state->codec), state->raw_bytes);
            break;
        case HTTP_CODEC_BODY:
            CHECK(consumed == available);
            add_bytes(&state->body, data + offset, consumed);
            break;
        case HTTP_CODEC_MESSAGE_END:
            CHECK(http_codec_head(state->codec) != NULL);
            add_bytes(&state->body, data + offset, consumed);
            add_bytes(&state->out, "M", 1);
            add_number(&state->out, state->body.length);
            add_bytes(&state->out, state->body.bytes, state->body.length);
            state->body.length = 0;
            state->raw_bytes = 0;
            break;
        case HTTP_CODEC_ERROR:
            CHECK(consumed == 0);
            check_error(state);
            return;
        default:
            abort();
        }
        offset += consumed;
    } while (offset < length || event == HTTP_CODEC_HEAD);
}

/* Runs input through a new request codec in two pieces cut at split; returns
 * what it saw (the caller frees out.bytes). */
static transcript run_split(const char *input, size_t length, size_t split)
{
    run state = {0};
    state.codec = http_codec_new(HTTP_CODEC_REQUEST);
    CHECK(state.codec != NULL);
    feed(&state, input, split);
    if (!state.failed)
        feed(&state, input + split, length - split);
    if (!state.failed) {
        add_number(&state.out, state.body.length); /* a body the input left unfinished */
        add_bytes(&state.out, state.body.bytes, state.body.length);
        http_codec_event event = http_codec_finish(state.codec);
        CHECK(event == HTTP_CODEC_NEED_MORE || event == HTTP_CODEC_ERROR);
        add_bytes(&state.out, event == HTTP_CODEC_ERROR ? "e" : "c", 1);
        size_t consumed = 1;
        CHECK(http_codec_execute(state.codec, "x", 1, &consumed) == HTTP_CODEC_ERROR);
        CHECK(consumed == 0);
    }
    http_codec_free(state.codec);
    free(state.body.bytes);
    return state.out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *input = (const char *)data + 1;
    size_t length = size - 1;
    size_t split = data[0] % (length + 1);

    transcript whole = run_split(input, length, length);
    transcript pieces = run_split(input, length, split);
    CHECK(whole.length == pieces.length);
    CHECK(whole.length == 0 || memcmp(whole.bytes, pieces.bytes, whole.length) == 0);
    free(whole.bytes);
    free(pieces.bytes);
    return 0;
}
