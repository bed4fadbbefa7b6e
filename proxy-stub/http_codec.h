/*
 * http_codec.h — HTTP/1.1 message framing for atrium-proxy, over Debian's
 * libhttp-parser: where a message's head ends, what it says, and which of the
 * bytes that follow are its body, so the proxy can forward bodies as raw bytes
 * (chunked encoding included) without buffering them.
 *
 * One codec reads one direction of one connection: requests from a client, or
 * responses from an upstream. Feed it bytes with http_codec_execute; it stops
 * at each event and says how many bytes it consumed:
 *
 *   HTTP_CODEC_HEAD         the head is complete (consumed ends right after
 *                           the blank line); http_codec_head() describes it
 *                           until the next message starts; call again even
 *                           without input: a bodyless message then ends with
 *                           HTTP_CODEC_MESSAGE_END consuming 0 bytes;
 *   HTTP_CODEC_BODY         consumed bytes are body (raw, still chunk-framed
 *                           when chunked); all input was used, more is needed;
 *   HTTP_CODEC_MESSAGE_END  consumed bytes end the message (the last body
 *                           bytes or the terminating chunk); the next call
 *                           starts the next message (pipelining);
 *   HTTP_CODEC_NEED_MORE    all input consumed inside a head;
 *   HTTP_CODEC_ERROR        http_codec_error() says why and which status to
 *                           answer (400, 431, 501, 505, 502 for responses).
 *
 * Head bytes are copied into the codec (at most HTTP_CODEC_MAX_HEAD bytes,
 * beyond that: 431), so input may be split anywhere. Request smuggling is
 * refused: Content-Length together with Transfer-Encoding, several differing
 * Content-Length values, a Transfer-Encoding other than a final "chunked",
 * a malformed Content-Length — each an error with status 400.
 */
#ifndef ATRIUM_PROXY_HTTP_CODEC_H
#define ATRIUM_PROXY_HTTP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_CODEC_MAX_HEAD    (64 * 1024)
#define HTTP_CODEC_MAX_HEADERS 128

typedef enum http_codec_kind { HTTP_CODEC_REQUEST = 0, HTTP_CODEC_RESPONSE } http_codec_kind;

typedef enum http_codec_event {
    HTTP_CODEC_NEED_MORE = 0,
    HTTP_CODEC_HEAD,
    HTTP_CODEC_BODY,
    HTTP_CODEC_MESSAGE_END,
    HTTP_CODEC_ERROR
} http_codec_event;

/* Text fields point into the codec and are not NUL-terminated. */
typedef struct http_text {
    const char *data;
    size_t length;
} http_text;

typedef struct http_header {
    http_text name;  /* as received */
    http_text value; /* surrounding whitespace removed */
} http_header;

typedef struct http_head {
    /* Requests */
    http_text method; /* "GET" ... */
    bool is_head_method;
    http_text target; /* request target as received ("/a?b") */
    /* The target in origin form, to forward: the target itself, or for an
     * absolute-form target ("http://a.example/x?y") its path and query
     * ("/x?y"); never the fragment. Empty, or starting with '?', when the
     * URI has no path: the forwarded target is then "/" followed by it. */
    http_text path;
    http_text host; /* the Host header, or the authority of an absolute target; may be empty */
    /* host is the authority of an absolute-form target, which replaces any
     * Host header (RFC 9112 3.2.2): forward it as Host, drop the received one. */
    bool host_from_target;
    bool expect_continue; /* Expect: 100-continue */
    /* Responses */
    int status;
    http_text reason;
    /* Both */
    unsigned version_major, version_minor;
    http_header *headers;
    size_t header_count;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool has_body;          /* false when the message ends with its head */
    bool keep_alive;        /* per version and Connection header */
    bool upgrade;           /* Connection: upgrade with an Upgrade header (refused for now) */
} http_head;

typedef struct http_codec http_codec; /* opaque */

/* A new codec for requests or responses. Returns NULL when out of memory;
 * the caller frees it with http_codec_free. */
http_codec *http_codec_new(http_codec_kind kind);
void http_codec_free(http_codec *codec);

/* True while the codec holds part of a message head (its first byte has
 * arrived, HTTP_CODEC_HEAD has not): what a request-head timeout measures. */
bool http_codec_head_started(const http_codec *codec);

/* For a response codec: the next response answers a HEAD request (no body
 * follows its head whatever its headers say). Call before feeding it; the
 * flag holds through 1xx responses and is cleared by the final response. */
void http_codec_expect_head_response(http_codec *codec, bool head_request);

/* Parses from data (length bytes) up to the next event; *consumed is how many
 * bytes of data belong to what was parsed. See the top of this file. */
http_codec_event http_codec_execute(http_codec *codec, const char *data, size_t length,
                                    size_t *consumed);

/* The head of the current message, valid from HTTP_CODEC_HEAD until the next
 * message's first byte is fed; NULL outside that. */
const http_head *http_codec_head(const http_codec *codec);

/* After HTTP_CODEC_ERROR: the status to answer (400, 431, 501, 505, 500 when
 * out of memory; 502 for a response codec) and a short reason (static text). */
int http_codec_error(const http_codec *codec, const char **reason);

/* For a response codec whose message is delimited by the connection closing
 * (no Content-Length, not chunked): tells the codec the peer closed. Returns
 * HTTP_CODEC_MESSAGE_END when that ends the message, HTTP_CODEC_ERROR when the
 * close came early (inside a head or a delimited body), HTTP_CODEC_NEED_MORE
 * when no message was in progress (a clean close). */
http_codec_event http_codec_finish(http_codec *codec);

/* Case-insensitive header lookup in a head: the first value, or NULL. */
const http_text *http_head_find(const http_head *head, const char *name);

/* Case-insensitive comparison of a text with a NUL-terminated string. */
bool http_text_equals(http_text text, const char *string);

#endif
