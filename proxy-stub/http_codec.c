/*
 * http_codec.c — HTTP/1.1 message framing for atrium-proxy (the contract is
 * in http_codec.h): heads parsed by Debian's libhttp-parser 2.9.4, bodies
 * framed here.
 *
 * Heads. http_parser reads each head; on_headers_complete checks it (request
 * smuggling, Host, version, Transfer-Encoding) and pauses the parser, so the
 * caller sees HTTP_CODEC_HEAD only for a head that passed. Paused there,
 * http_parser has not yet consumed the head's final LF (it re-reads that byte
 * on resume); the codec counts it as consumed and never resumes that parser:
 * it re-initialises it when the next message starts (cheap, no allocation).
 *
 * Bodies. Debian builds libhttp-parser with HTTP_PARSER_STRICT=0 (upstream's
 * "library" target does), which makes its chunked decoder lax where request
 * smuggling lives: any two bytes pass as the CRLF after chunk data, a bare LF
 * inside a chunk extension does not end the line ("3;a\nb\r\n"), a CR followed
 * by anything ends a chunk-size line. So the codec frames bodies itself: a
 * count for Content-Length, a strict chunked decoder (RFC 9112 7.1: CRLF
 * exactly, no control bytes in extensions or trailers), or everything until
 * the close. Data bytes are skipped by count; only framing bytes are looked at.
 * The same non-strict build also accepts spaces in field names, tabs in the
 * request target and a bare CR where a status line or the head ends; the
 * codec refuses those: names and target when the head completes, the head's
 * end where the parser pauses, a status line's CR with a memchr over response
 * heads (request lines and field lines get HPE_LF_EXPECTED even non-strict).
 *
 * Limits. The parser never sees more than HTTP_CODEC_MAX_HEAD raw bytes of
 * one head (request line, fields, line ends), which also bounds the copied
 * text; a trailer section has the same limit.
 *
 * Ownership: the codec owns its parser, its head text buffer (allocated once
 * at HEAD_TEXT_INITIAL, grown up to HTTP_CODEC_MAX_HEAD, never shrunk), its
 * field arrays (likewise, up to HTTP_CODEC_MAX_HEADERS) and the http_head it
 * hands out. Input is only read during the call. Nothing is
 * allocated per message once the text buffer has grown.
 */
#include "http_codec.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A head's text buffer and field arrays start small (a typical head is a
 * few hundred bytes and a dozen fields: an idle keep-alive connection costs
 * about 2 KiB of codec) and grow to the limits when a message needs it. */
#define HEAD_TEXT_INITIAL   1024
#define HEADERS_INITIAL     16
#define CHUNK_SIZE_LINE_MAX 4096 /* size, extensions and CRLF */

/* Where a codec is in its stream. */
typedef enum codec_phase {
    PHASE_HEAD = 0, /* between messages or inside a head */
    PHASE_BODY,     /* after HTTP_CODEC_HEAD, until HTTP_CODEC_MESSAGE_END */
    PHASE_SWITCHED, /* after a 101 response: the bytes are no longer HTTP/1 */
    PHASE_CLOSED,   /* http_codec_finish was called */
    PHASE_FAILED    /* an error was reported; it is reported again */
} codec_phase;

/* How the current message's body ends. */
typedef enum body_framing {
    BODY_NONE = 0,   /* the message ends with its head */
    BODY_LENGTH,     /* Content-Length bytes */
    BODY_CHUNKED,    /* the chunked coding */
    BODY_UNTIL_CLOSE /* a response read until the connection closes */
} body_framing;

/* Where the chunked decoder is (RFC 9112 7.1). The order matters: states up
 * to CHUNK_SIZE_LF are the chunk-size line, from TRAILER_START the trailers. */
typedef enum chunk_state {
    CHUNK_SIZE_FIRST = 0, /* the first hex digit of a chunk size */
    CHUNK_SIZE,           /* more hex digits */
    CHUNK_SIZE_SPACE,     /* whitespace after the size: ';' or CR next */
    CHUNK_EXTENSION,      /* after ';', up to CR */
    CHUNK_SIZE_LF,        /* the LF ending the size line */
    CHUNK_DATA,           /* chunk data, skipped by count */
    CHUNK_DATA_CR,        /* the CRLF after chunk data */
    CHUNK_DATA_LF,
    TRAILER_START, /* a trailer field, or CR ending the body */
    TRAILER_NAME,
    TRAILER_VALUE,
    TRAILER_LF,
    CHUNKED_FINAL_LF /* the LF ending the body */
} chunk_state;

/* Which head piece http_parser delivered last, to join pieces split across
 * inputs and to start a new header when a name follows a value. */
typedef enum last_piece {
    PIECE_NONE = 0,
    PIECE_TARGET,
    PIECE_REASON,
    PIECE_NAME,
    PIECE_VALUE
} last_piece;

/* A stretch of the head text buffer; offsets because the buffer may move. */
typedef struct text_span {
    uint32_t offset;
    uint32_t length;
} text_span;

typedef struct header_spans {
    text_span name;
    text_span value;
} header_spans;

struct http_codec {
    http_parser parser;
    http_codec_kind kind;
    codec_phase phase;
    bool message_started; /* on_message_begin ran for the current message */
    bool head_valid;      /* head describes the current (or just ended) message */
    bool next_response_answers_head;
    bool switch_after_message;     /* a 101 response: stop after its end */
    bool connection_ends;          /* the last message was not keep-alive: no more may follow */
    size_t head_bytes;             /* raw bytes of the current head consumed so far */
    bool head_input_ended_with_cr; /* the CR's LF is the next input's first byte */

    /* The input of the http_parser_execute call in progress, to tell a value
     * split between two inputs from an obsolete line fold. */
    const char *input_start;
    const char *input_end;
    bool value_piece_ended_input; /* the last value piece ended its input */
    last_piece last;

    /* Body framing of the current message. */
    body_framing framing;
    uint64_t body_remaining; /* BODY_LENGTH: bytes left; BODY_CHUNKED: of this chunk */
    chunk_state chunk;
    size_t framing_line_bytes; /* chunk-size line so far, or the trailer section */

    char *text; /* owned: copied target, reason, header names and values */
    size_t text_length;
    size_t text_capacity;
    text_span target;
    text_span reason;
    size_t header_count;
    size_t header_capacity; /* of both arrays, up to HTTP_CODEC_MAX_HEADERS */
    header_spans *spans;    /* owned */
    http_header *headers;   /* owned */
    http_head head;

    int error_status;
    const char *error_reason; /* static text */
};

/* ---- errors ---------------------------------------------------------------------------------- */

/* Records an error; a response codec always answers 502 (the upstream is at
 * fault, the proxy tells its client so). Only the first error is kept. */
static void set_error(http_codec *codec, int request_status, const char *reason)
{
    if (codec->error_status != 0)
        return;
    codec->error_status = codec->kind == HTTP_CODEC_RESPONSE ? 502 : request_status;
    codec->error_reason = reason;
}

static bool has_header_named(const http_codec *codec, const char *name)
{
    size_t name_length = strlen(name);
    for (size_t i = 0; i < codec->header_count; i++) {
        const text_span *span = &codec->spans[i].name;
        if (span->length == name_length &&
            strncasecmp(codec->text + span->offset, name, name_length) == 0)
            return true;
    }
    return false;
}

/* Maps an http_parser error to a status and a reason. Errors raised by our
 * callbacks (HPE_CB_*) were recorded by set_error already. */
static void set_parser_error(http_codec *codec, enum http_errno error)
{
    switch (error) {
    case HPE_HEADER_OVERFLOW:
        set_error(codec, 431, "header section too large");
        break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        set_error(codec, 400,
                  has_header_named(codec, "transfer-encoding")
                      ? "Content-Length with Transfer-Encoding"
                      : "repeated Content-Length");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
        set_error(codec, 400, "malformed Content-Length");
        break;
    case HPE_INVALID_METHOD:
        set_error(codec, 400, "malformed request line");
        break;
    case HPE_INVALID_URL:
    case HPE_INVALID_HOST:
    case HPE_INVALID_PORT:
    case HPE_INVALID_PATH:
    case HPE_INVALID_QUERY_STRING:
    case HPE_INVALID_FRAGMENT:
        set_error(codec, 400, "invalid request target");
        break;
    case HPE_INVALID_VERSION:
        set_error(codec, 400, "malformed HTTP version");
        break;
    case HPE_INVALID_STATUS:
        set_error(codec, 400, "malformed status line");
        break;
    case HPE_INVALID_HEADER_TOKEN:
        set_error(codec, 400, "invalid character in header");
        break;
    case HPE_LF_EXPECTED:
        set_error(codec, 400, "bare CR in head");
        break;
    default:
        set_error(codec, 400, "malformed message");
        break;
    }
}

static http_codec_event fail(http_codec *codec, size_t *consumed)
{
    codec->phase = PHASE_FAILED;
    codec->head_valid = false;
    *consumed = 0;
    return HTTP_CODEC_ERROR;
}

/* ---- head text ------------------------------------------------------------------------------- */

static bool append_text(http_codec *codec, const char *at, size_t length)
{
    if (length > codec->text_capacity - codec->text_length) {
        size_t needed = codec->text_length + length;
        if (needed > HTTP_CODEC_MAX_HEAD) { /* cannot happen: raw head bytes are fewer */
            set_error(codec, 431, "header section too large");
            return false;
        }
        size_t capacity = codec->text_capacity;
        while (capacity < needed)
            capacity *= 2;
        if (capacity > HTTP_CODEC_MAX_HEAD)
            capacity = HTTP_CODEC_MAX_HEAD;
        char *grown = realloc(codec->text, capacity);
        if (grown == NULL) {
            set_error(codec, 500, "out of memory");
            return false;
        }
        codec->text = grown;
        codec->text_capacity = capacity;
    }
    memcpy(codec->text + codec->text_length, at, length);
    codec->text_length += length;
    return true;
}

/* Appends a piece to span, which must be the last thing in the buffer. */
static bool append_to_span(http_codec *codec, text_span *span, const char *at, size_t length)
{
    if (span->length == 0)
        span->offset = (uint32_t)codec->text_length;
    if (!append_text(codec, at, length))
        return false;
    span->length += (uint32_t)length;
    return true;
}

static http_text text_of(const http_codec *codec, text_span span)
{
    http_text text = {codec->text + span.offset, span.length};
    return text;
}

static bool is_optional_whitespace(char c)
{
    return c == ' ' || c == '\t';
}

static http_text trimmed(http_text text)
{
    while (text.length > 0 && is_optional_whitespace(text.data[0])) {
        text.data++;
        text.length--;
    }
    while (text.length > 0 && is_optional_whitespace(text.data[text.length - 1]))
        text.length--;
    return text;
}

/* ---- http_parser callbacks: collecting the head ------------------------------------------------
 */

static int on_message_begin(http_parser *parser)
{
    http_codec *codec = parser->data;
    codec->message_started = true;
    codec->head_valid = false;
    codec->text_length = 0;
    codec->target = (text_span){0, 0};
    codec->reason = (text_span){0, 0};
    codec->header_count = 0;
    codec->last = PIECE_NONE;
    codec->value_piece_ended_input = false;
    return 0;
}

static int on_url(http_parser *parser, const char *at, size_t length)
{
    http_codec *codec = parser->data;
    codec->last = PIECE_TARGET;
    return append_to_span(codec, &codec->target, at, length) ? 0 : -1;
}

static int on_status(http_parser *parser, const char *at, size_t length)
{
    http_codec *codec = parser->data;
    codec->last = PIECE_REASON;
    return append_to_span(codec, &codec->reason, at, length) ? 0 : -1;
}

/* Doubles the field arrays (up to HTTP_CODEC_MAX_HEADERS). False when out
 * of memory. */
static bool grow_headers(http_codec *codec)
{
    size_t capacity = codec->header_capacity * 2;
    if (capacity > HTTP_CODEC_MAX_HEADERS)
        capacity = HTTP_CODEC_MAX_HEADERS;
    header_spans *spans = realloc(codec->spans, capacity * sizeof(*spans));
    if (spans == NULL)
        return false;
    codec->spans = spans;
    http_header *headers = realloc(codec->headers, capacity * sizeof(*headers));
    if (headers == NULL)
        return false;
    codec->headers = headers;
    codec->head.headers = headers;
    codec->header_capacity = capacity;
    return true;
}

static int on_header_field(http_parser *parser, const char *at, size_t length)
{
    http_codec *codec = parser->data;
    if (codec->last != PIECE_NAME) {
        if (codec->header_count == HTTP_CODEC_MAX_HEADERS) {
            set_error(codec, 431, "too many header fields");
            return -1;
        }
        if (codec->header_count == codec->header_capacity && !grow_headers(codec)) {
            set_error(codec, 500, "out of memory");
            return -1;
        }
        codec->spans[codec->header_count++] = (header_spans){{0, 0}, {0, 0}};
        codec->last = PIECE_NAME;
    }
    header_spans *header = &codec->spans[codec->header_count - 1];
    return append_to_span(codec, &header->name, at, length) ? 0 : -1;
}

static int on_header_value(http_parser *parser, const char *at, size_t length)
{
    http_codec *codec = parser->data;
    if (codec->header_count == 0) { /* http_parser always names a field first */
        set_error(codec, 400, "malformed header");
        return -1;
    }
    if (codec->last == PIECE_VALUE) {
        /* http_parser hands a value over in several pieces only when the
         * input ended inside it, or at an obsolete line fold (RFC 9112 5.2:
         * a server rejects it or replaces it with spaces; we reject). */
        if (!codec->value_piece_ended_input || at != codec->input_start) {
            set_error(codec, 400, "obsolete line folding");
            return -1;
        }
    }
    codec->last = PIECE_VALUE;
    codec->value_piece_ended_input = at + length == codec->input_end;
    header_spans *header = &codec->spans[codec->header_count - 1];
    return append_to_span(codec, &header->value, at, length) ? 0 : -1;
}

/* ---- checking the head -------------------------------------------------------------------------
 */

static bool name_is(http_text name, const char *lowercase_name, size_t length)
{
    return name.length == length && (name.data[0] | 0x20) == lowercase_name[0] &&
           strncasecmp(name.data, lowercase_name, length) == 0;
}
#define NAME_IS(name, literal) name_is((name), (literal), sizeof(literal) - 1)

/* Content-Length = 1*DIGIT; returns -1 when malformed or above INT64_MAX. */
static int64_t parse_content_length(http_text value)
{
    if (value.length == 0)
        return -1;
    int64_t result = 0;
    for (size_t i = 0; i < value.length; i++) {
        char c = value.data[i];
        if (c < '0' || c > '9')
            return -1;
        if (result > (INT64_MAX - (c - '0')) / 10)
            return -1;
        result = result * 10 + (c - '0');
    }
    return result;
}

/* The transfer codings of all Transfer-Encoding fields, in order. */
typedef struct transfer_codings {
    bool present;
    bool chunked_seen;
    bool chunked_last;
    bool chunked_twice;
    bool chunked_with_parameters;
    bool unknown_coding;
} transfer_codings;

static bool is_known_coding(http_text name)
{
    return NAME_IS(name, "gzip") || NAME_IS(name, "x-gzip") || NAME_IS(name, "deflate") ||
           NAME_IS(name, "compress") || NAME_IS(name, "x-compress");
}

static void add_transfer_codings(transfer_codings *codings, http_text value)
{
    codings->present = true;
    size_t element_start = 0;
    while (element_start <= value.length) {
        const char *comma = memchr(value.data + element_start, ',', value.length - element_start);
        size_t element_end = comma != NULL ? (size_t)(comma - value.data) : value.length;
        http_text element =
            trimmed((http_text){value.data + element_start, element_end - element_start});
        element_start = element_end + 1;
        if (element.length == 0)
            continue; /* empty list elements are ignored (RFC 9110 5.6.1) */
        const char *semicolon = memchr(element.data, ';', element.length);
        http_text name = element;
        if (semicolon != NULL)
            name = trimmed((http_text){element.data, (size_t)(semicolon - element.data)});
        if (NAME_IS(name, "chunked")) {
            if (codings->chunked_seen)
                codings->chunked_twice = true;
            if (semicolon != NULL)
                codings->chunked_with_parameters = true;
            codings->chunked_seen = true;
            codings->chunked_last = true;
        } else {
            codings->chunked_last = false;
            if (!is_known_coding(name))
                codings->unknown_coding = true;
        }
    }
}

/* The authority ("host[:port]") of an absolute-form or authority-form target,
 * and its path and query (origin form, see http_head.path); false when the
 * target is not a valid URI or carries userinfo (RFC 9110 4.2.4: treated as
 * an error). */
static bool target_authority(http_text target, bool is_connect, http_text *authority,
                             http_text *path)
{
    struct http_parser_url url;
    http_parser_url_init(&url);
    if (http_parser_parse_url(target.data, target.length, is_connect, &url) != 0)
        return false;
    if ((url.field_set & (1 << UF_USERINFO)) || !(url.field_set & (1 << UF_HOST)) ||
        url.field_data[UF_HOST].len == 0)
        return false;
    size_t start = url.field_data[UF_HOST].off;
    size_t end = start + url.field_data[UF_HOST].len;
    if (start > 0 && target.data[start - 1] == '[') { /* an IPv6 literal keeps its brackets */
        start--;
        end++;
    }
    if (url.field_set & (1 << UF_PORT))
        end = (size_t)url.field_data[UF_PORT].off + url.field_data[UF_PORT].len;
    authority->data = target.data + start;
    authority->length = end - start;
    /* Path and query, without the fragment; "?q" alone when there is no path
     * (the '?' is the byte before the query). */
    size_t path_start = end, path_end = end;
    if (url.field_set & (1 << UF_PATH)) {
        path_start = url.field_data[UF_PATH].off;
        path_end = path_start + url.field_data[UF_PATH].len;
    } else if (url.field_set & (1 << UF_QUERY)) {
        path_start = (size_t)url.field_data[UF_QUERY].off - 1;
        path_end = path_start;
    }
    if (url.field_set & (1 << UF_QUERY))
        path_end = (size_t)url.field_data[UF_QUERY].off + url.field_data[UF_QUERY].len;
    path->data = target.data + path_start;
    path->length = path_end - path_start;
    return true;
}

/* The request target: printable, no whitespace (the non-strict build lets
 * HTAB and FF through, and bytes above 0x7f, which we keep). */
static bool target_is_clean(http_text target)
{
    for (size_t i = 0; i < target.length; i++) {
        unsigned char c = (unsigned char)target.data[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* Per version and Connection header, as http_should_keep_alive without its
 * "the body needs the close" part: the codec decides about bodies itself. */
static bool connection_allows_keep_alive(const http_parser *parser)
{
    if (parser->http_minor >= 1)
        return (parser->flags & F_CONNECTION_CLOSE) == 0;
    return (parser->flags & F_CONNECTION_KEEP_ALIVE) != 0;
}

/* Checks the Transfer-Encoding codings; false with the error recorded. */
static bool check_transfer_codings(http_codec *codec, const transfer_codings *codings)
{
    if (codec->parser.http_minor == 0) { /* RFC 9112 6.1: faulty framing */
        set_error(codec, 400, "Transfer-Encoding in HTTP/1.0");
        return false;
    }
    if (codings->chunked_twice || codings->chunked_with_parameters) {
        set_error(codec, 400, "malformed Transfer-Encoding");
        return false;
    }
    if (codec->kind == HTTP_CODEC_REQUEST) {
        /* RFC 9112 6.3: no final chunked in a request → 400. A final chunked
         * after a coding we do not know → 501 (RFC 9112 6.1: a server "that
         * receives a request message with a transfer coding it does not
         * understand SHOULD respond with 501"). */
        if (!codings->chunked_last) {
            set_error(codec, 400, "Transfer-Encoding without final chunked");
            return false;
        }
        if (codings->unknown_coding) {
            set_error(codec, 501, "unknown transfer coding");
            return false;
        }
    }
    /* A response without a final chunked is read until the close. */
    return true;
}

/* Request-only checks: Host (RFC 9112 3.2), the target, CONNECT. */
static bool check_request_head(http_codec *codec, size_t host_count)
{
    http_parser *parser = &codec->parser;
    http_head *head = &codec->head;
    if (!target_is_clean(head->target)) {
        set_error(codec, 400, "invalid request target");
        return false;
    }
    if (parser->method == HTTP_CONNECT && (head->chunked || head->content_length > 0)) {
        set_error(codec, 400, "CONNECT with a body"); /* RFC 9110 9.3.6 */
        return false;
    }
    if (host_count > 1) {
        set_error(codec, 400, "repeated Host");
        return false;
    }
    if (host_count == 0 && parser->http_minor >= 1) {
        set_error(codec, 400, "missing Host");
        return false;
    }
    http_text target = head->target;
    bool origin_form = target.length > 0 && target.data[0] == '/';
    bool asterisk_form = target.length == 1 && target.data[0] == '*';
    head->path = target;
    if (!origin_form && !asterisk_form) {
        /* Absolute or authority form: the target's authority replaces Host
         * (RFC 9112 3.2.2, 3.2.3). */
        if (!target_authority(target, parser->method == HTTP_CONNECT, &head->host, &head->path)) {
            set_error(codec, 400, "invalid request target");
            return false;
        }
        head->host_from_target = true;
    }
    return true;
}

/* Fills codec->head from the collected pieces, refuses what cannot be framed
 * safely and sets the body framing. Returns false with the error recorded. */
static bool complete_head(http_codec *codec)
{
    http_parser *parser = &codec->parser;
    http_head *head = &codec->head;
    bool is_request = codec->kind == HTTP_CODEC_REQUEST;

    memset(head, 0, sizeof(*head));
    head->headers = codec->headers;
    head->header_count = codec->header_count;
    head->content_length = -1;
    head->version_major = parser->http_major;
    head->version_minor = parser->http_minor;
    if (parser->http_major != 1) {
        set_error(codec, 505, "HTTP version not supported");
        return false;
    }
    if (is_request) {
        const char *method = http_method_str((enum http_method)parser->method);
        head->method = (http_text){method, strlen(method)};
        head->is_head_method = parser->method == HTTP_HEAD;
        head->target = text_of(codec, codec->target);
    } else {
        head->status = (int)parser->status_code;
        head->reason = text_of(codec, codec->reason);
    }

    transfer_codings codings = {0};
    size_t host_count = 0;
    for (size_t i = 0; i < codec->header_count; i++) {
        http_header *header = &codec->headers[i];
        header->name = text_of(codec, codec->spans[i].name);
        header->value = trimmed(text_of(codec, codec->spans[i].value));
        http_text name = header->name;
        if (memchr(name.data, ' ', name.length) != NULL) { /* RFC 9112 5.1 */
            set_error(codec, 400, "whitespace in a field name");
            return false;
        }
        switch (name.length) { /* the names the codec reads */
        case 14:
            if (NAME_IS(name, "content-length")) {
                int64_t length = parse_content_length(header->value);
                if (length < 0) {
                    set_error(codec, 400, "malformed Content-Length");
                    return false;
                }
                if (head->content_length >= 0 && head->content_length != length) {
                    set_error(codec, 400, "conflicting Content-Length");
                    return false;
                }
                head->content_length = length;
            }
            break;
        case 17:
            if (NAME_IS(name, "transfer-encoding"))
                add_transfer_codings(&codings, header->value);
            break;
        case 4:
            if (is_request && NAME_IS(name, "host")) {
                host_count++;
                head->host = header->value;
            }
            break;
        case 6:
            /* RFC 9110 10.1.1: 100-continue is ignored in an HTTP/1.0 request. */
            if (is_request && NAME_IS(name, "expect") && parser->http_minor >= 1 &&
                http_text_equals(header->value, "100-continue"))
                head->expect_continue = true;
            break;
        default:
            break;
        }
    }

    /* Request smuggling: one framing, and the one http_parser saw too. */
    if (codings.present && head->content_length >= 0) {
        set_error(codec, 400, "Content-Length with Transfer-Encoding");
        return false;
    }
    if (codings.present) {
        if (!check_transfer_codings(codec, &codings))
            return false;
        head->chunked = codings.chunked_last;
    }
    bool parser_has_length = (parser->flags & F_CONTENTLENGTH) != 0;
    if (head->chunked != ((parser->flags & F_CHUNKED) != 0) ||
        (head->content_length >= 0) != parser_has_length ||
        (parser_has_length && (uint64_t)head->content_length != parser->content_length)) {
        set_error(codec, 400, "ambiguous Content-Length or Transfer-Encoding");
        return false;
    }

    if (is_request) {
        if (!check_request_head(codec, host_count))
            return false;
        head->has_body = head->chunked || head->content_length > 0;
        /* Connection: upgrade with Upgrade, and CONNECT: http_parser sets
         * upgrade for both; the proxy refuses both for now. */
        head->upgrade = parser->upgrade;
    } else {
        int status = head->status;
        bool answers_head = false;
        if (status >= 200) { /* the flag is for the final response, after any 1xx */
            answers_head = codec->next_response_answers_head;
            codec->next_response_answers_head = false;
        }
        head->has_body = !(answers_head || status < 200 || status == 204 || status == 304);
        head->upgrade = parser->upgrade || status == 101;
        codec->switch_after_message = status == 101;
    }

    if (!head->has_body)
        codec->framing = BODY_NONE;
    else if (head->chunked)
        codec->framing = BODY_CHUNKED;
    else if (head->content_length >= 0)
        codec->framing = head->content_length > 0 ? BODY_LENGTH : BODY_NONE;
    else
        codec->framing = BODY_UNTIL_CLOSE; /* responses only: requests have a length */
    head->has_body = codec->framing != BODY_NONE;
    codec->body_remaining = head->content_length > 0 ? (uint64_t)head->content_length : 0;
    codec->chunk = CHUNK_SIZE_FIRST;
    codec->framing_line_bytes = 0;

    head->keep_alive = connection_allows_keep_alive(parser) && codec->framing != BODY_UNTIL_CLOSE &&
                       !codec->switch_after_message;
    codec->head_valid = true;
    return true;
}

static int on_headers_complete(http_parser *parser)
{
    http_codec *codec = parser->data;
    if (!complete_head(codec))
        return -1;
    http_parser_pause(parser, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

/* ---- the codec ---------------------------------------------------------------------------------
 */

/* Ready for a new message: a fresh http_parser (a few stores, no allocation). */
static void start_message(http_codec *codec)
{
    http_parser_init(&codec->parser,
                     codec->kind == HTTP_CODEC_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    codec->parser.data = codec;
    codec->message_started = false;
    codec->head_bytes = 0;
    codec->head_input_ended_with_cr = false;
    codec->framing = BODY_NONE;
}

http_codec *http_codec_new(http_codec_kind kind)
{
    http_codec *codec = calloc(1, sizeof(*codec));
    if (codec == NULL)
        return NULL;
    codec->text = malloc(HEAD_TEXT_INITIAL);
    codec->spans = malloc(HEADERS_INITIAL * sizeof(*codec->spans));
    codec->headers = malloc(HEADERS_INITIAL * sizeof(*codec->headers));
    if (codec->text == NULL || codec->spans == NULL || codec->headers == NULL) {
        http_codec_free(codec);
        return NULL;
    }
    codec->text_capacity = HEAD_TEXT_INITIAL;
    codec->header_capacity = HEADERS_INITIAL;
    codec->kind = kind;
    codec->head.headers = codec->headers;
    codec->head.content_length = -1;
    start_message(codec);
    return codec;
}

void http_codec_free(http_codec *codec)
{
    if (codec == NULL)
        return;
    free(codec->text);
    free(codec->spans);
    free(codec->headers);
    free(codec);
}

bool http_codec_head_started(const http_codec *codec)
{
    return codec->phase == PHASE_HEAD && codec->message_started;
}

void http_codec_expect_head_response(http_codec *codec, bool head_request)
{
    codec->next_response_answers_head = head_request;
}

/* The message ended after used more bytes: the next byte starts the next one. */
static http_codec_event end_message(http_codec *codec, size_t used, size_t *consumed)
{
    codec->phase = codec->switch_after_message ? PHASE_SWITCHED : PHASE_HEAD;
    bool interim = codec->kind == HTTP_CODEC_RESPONSE && codec->head.status < 200;
    if (!codec->head.keep_alive && !interim) /* a 1xx is never the last response */
        codec->connection_ends = true;
    start_message(codec);
    *consumed = used;
    return HTTP_CODEC_MESSAGE_END;
}

/* True when response head bytes hold a CR not followed by LF (the non-strict
 * parser takes any byte after the CR ending a status line). A memchr per
 * line, for responses only: in requests http_parser checks every line end. */
static bool has_bare_carriage_return(http_codec *codec, const char *data, size_t length)
{
    if (length == 0 || codec->kind == HTTP_CODEC_REQUEST)
        return false;
    if (codec->head_input_ended_with_cr && data[0] != '\n')
        return true;
    codec->head_input_ended_with_cr = false;
    const char *end = data + length;
    const char *cursor = data;
    while ((cursor = memchr(cursor, '\r', (size_t)(end - cursor))) != NULL) {
        if (cursor + 1 == end) {
            codec->head_input_ended_with_cr = true;
            break;
        }
        if (cursor[1] != '\n')
            return true;
        cursor += 2;
    }
    return false;
}

static http_codec_event execute_head(http_codec *codec, const char *data, size_t length,
                                     size_t *consumed)
{
    if (codec->connection_ends) {
        /* Nothing may follow the last message but stray line ends (RFC 9112 9.6). */
        size_t skipped = 0;
        while (skipped < length && (data[skipped] == '\r' || data[skipped] == '\n'))
            skipped++;
        if (skipped < length) {
            set_error(codec, 400, "data after the connection's last message");
            return fail(codec, consumed);
        }
        *consumed = skipped;
        return HTTP_CODEC_NEED_MORE;
    }

    /* Never show the parser more than the head may still hold. */
    size_t room = HTTP_CODEC_MAX_HEAD - codec->head_bytes;
    size_t feed = length < room ? length : room;
    codec->input_start = data;
    codec->input_end = data + feed;
    size_t parsed = http_parser_execute(&codec->parser, &parser_settings, data, feed);
    enum http_errno error = HTTP_PARSER_ERRNO(&codec->parser);
    if (error == HPE_PAUSED) {
        /* Paused in on_headers_complete with data[parsed] the head's last LF. */
        if (parsed >= feed || data[parsed] != '\n' ||
            has_bare_carriage_return(codec, data, parsed + 1)) {
            set_error(codec, 400, "bare CR in head");
            return fail(codec, consumed);
        }
        codec->phase = PHASE_BODY;
        *consumed = parsed + 1;
        return HTTP_CODEC_HEAD;
    }
    if (error != HPE_OK || parsed != feed) {
        set_parser_error(codec, error == HPE_OK ? HPE_UNKNOWN : error);
        return fail(codec, consumed);
    }
    if (has_bare_carriage_return(codec, data, parsed)) {
        set_error(codec, 400, "bare CR in head");
        return fail(codec, consumed);
    }
    codec->head_bytes += parsed;
    if (codec->head_bytes >= HTTP_CODEC_MAX_HEAD) {
        set_error(codec, 431, "header section too large");
        return fail(codec, consumed);
    }
    *consumed = parsed;
    return HTTP_CODEC_NEED_MORE;
}

static bool is_token_character(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte of a field value or chunk extension: HTAB, visible ASCII, SP, obs-text. */
static bool is_field_character(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The chunked decoder: reads framing bytes one by one and skips chunk data by
 * count. Returns MESSAGE_END after the body's final LF, BODY when it needs
 * more input, ERROR with the error recorded. */
static http_codec_event execute_chunked(http_codec *codec, const char *data, size_t length,
                                        size_t *consumed)
{
    size_t offset = 0;
    while (offset < length) {
        if (codec->chunk == CHUNK_DATA) {
            uint64_t available = length - offset;
            uint64_t take = codec->body_remaining < available ? codec->body_remaining : available;
            offset += (size_t)take;
            codec->body_remaining -= take;
            if (codec->body_remaining == 0)
                codec->chunk = CHUNK_DATA_CR;
            continue;
        }
        unsigned char c = (unsigned char)data[offset++];
        if (codec->chunk <= CHUNK_SIZE_LF) {
            if (++codec->framing_line_bytes > CHUNK_SIZE_LINE_MAX) {
                set_error(codec, 400, "chunk size line too long");
                return HTTP_CODEC_ERROR;
            }
        } else if (codec->chunk >= TRAILER_START) {
            if (++codec->framing_line_bytes > HTTP_CODEC_MAX_HEAD) {
                set_error(codec, 431, "trailer section too large");
                return HTTP_CODEC_ERROR;
            }
        }
        int digit;
        switch (codec->chunk) {
        case CHUNK_SIZE_FIRST:
        case CHUNK_SIZE:
            digit = hex_value(c);
            if (digit >= 0) {
                if (codec->body_remaining >> 59 != 0) { /* stays below 2^63 */
                    set_error(codec, 400, "chunk size too large");
                    return HTTP_CODEC_ERROR;
                }
                codec->body_remaining = codec->body_remaining << 4 | (uint64_t)digit;
                codec->chunk = CHUNK_SIZE;
            } else if (codec->chunk == CHUNK_SIZE && (c == ';' || c == '\r')) {
                codec->chunk = c == ';' ? CHUNK_EXTENSION : CHUNK_SIZE_LF;
            } else if (codec->chunk == CHUNK_SIZE && is_optional_whitespace((char)c)) {
                codec->chunk = CHUNK_SIZE_SPACE;
            } else {
                set_error(codec, 400, "malformed chunk size");
                return HTTP_CODEC_ERROR;
            }
            break;
        case CHUNK_SIZE_SPACE: /* BWS before ';' */
            if (c == ';')
                codec->chunk = CHUNK_EXTENSION;
            else if (c == '\r')
                codec->chunk = CHUNK_SIZE_LF;
            else if (!is_optional_whitespace((char)c)) {
                set_error(codec, 400, "malformed chunk size");
                return HTTP_CODEC_ERROR;
            }
            break;
        case CHUNK_EXTENSION:
            if (c == '\r')
                codec->chunk = CHUNK_SIZE_LF;
            else if (!is_field_character(c)) {
                set_error(codec, 400, "malformed chunk extension");
                return HTTP_CODEC_ERROR;
            }
            break;
        case CHUNK_SIZE_LF:
            if (c != '\n') {
                set_error(codec, 400, "malformed chunk size");
                return HTTP_CODEC_ERROR;
            }
            codec->framing_line_bytes = 0;
            codec->chunk = codec->body_remaining == 0 ? TRAILER_START : CHUNK_DATA;
            break;
        case CHUNK_DATA_CR:
        case CHUNK_DATA_LF:
            if (c != (codec->chunk == CHUNK_DATA_CR ? '\r' : '\n')) {
                set_error(codec, 400, "chunk data not followed by CRLF");
                return HTTP_CODEC_ERROR;
            }
            codec->chunk = codec->chunk == CHUNK_DATA_CR ? CHUNK_DATA_LF : CHUNK_SIZE_FIRST;
            break;
        case TRAILER_START:
            if (c == '\r') {
                codec->chunk = CHUNKED_FINAL_LF;
                break;
            }
            if (!is_token_character(c)) {
                set_error(codec, 400, "malformed trailer field");
                return HTTP_CODEC_ERROR;
            }
            codec->chunk = TRAILER_NAME;
            break;
        case TRAILER_NAME:
            if (c == ':')
                codec->chunk = TRAILER_VALUE;
            else if (!is_token_character(c)) {
                set_error(codec, 400, "malformed trailer field");
                return HTTP_CODEC_ERROR;
            }
            break;
        case TRAILER_VALUE:
            if (c == '\r')
                codec->chunk = TRAILER_LF;
            else if (!is_field_character(c)) {
                set_error(codec, 400, "malformed trailer field");
                return HTTP_CODEC_ERROR;
            }
            break;
        case TRAILER_LF:
        case CHUNKED_FINAL_LF:
            if (c != '\n') {
                set_error(codec, 400, "malformed trailer field");
                return HTTP_CODEC_ERROR;
            }
            if (codec->chunk == CHUNKED_FINAL_LF) {
                *consumed = offset;
                return HTTP_CODEC_MESSAGE_END;
            }
            codec->chunk = TRAILER_START;
            break;
        case CHUNK_DATA:
            break; /* handled above */
        }
    }
    *consumed = length;
    return HTTP_CODEC_BODY;
}

static http_codec_event execute_body(http_codec *codec, const char *data, size_t length,
                                     size_t *consumed)
{
    switch (codec->framing) {
    case BODY_NONE:
        return end_message(codec, 0, consumed);
    case BODY_LENGTH: {
        size_t take = codec->body_remaining < length ? (size_t)codec->body_remaining : length;
        codec->body_remaining -= take;
        if (codec->body_remaining == 0)
            return end_message(codec, take, consumed);
        *consumed = take;
        return HTTP_CODEC_BODY;
    }
    case BODY_CHUNKED: {
        size_t used = 0;
        http_codec_event event = execute_chunked(codec, data, length, &used);
        if (event == HTTP_CODEC_ERROR)
            return fail(codec, consumed);
        if (event == HTTP_CODEC_MESSAGE_END)
            return end_message(codec, used, consumed);
        *consumed = used;
        return HTTP_CODEC_BODY;
    }
    case BODY_UNTIL_CLOSE:
        break;
    }
    *consumed = length;
    return HTTP_CODEC_BODY;
}

http_codec_event http_codec_execute(http_codec *codec, const char *data, size_t length,
                                    size_t *consumed)
{
    *consumed = 0;
    switch (codec->phase) {
    case PHASE_FAILED:
        return HTTP_CODEC_ERROR;
    case PHASE_CLOSED:
        set_error(codec, 400, "input after the connection closed");
        return fail(codec, consumed);
    case PHASE_SWITCHED:
        if (length == 0)
            return HTTP_CODEC_NEED_MORE;
        set_error(codec, 502, "input after 101 Switching Protocols");
        return fail(codec, consumed);
    case PHASE_BODY:
        return execute_body(codec, data, length, consumed);
    case PHASE_HEAD:
        break;
    }
    if (length == 0)
        return HTTP_CODEC_NEED_MORE;
    return execute_head(codec, data, length, consumed);
}

const http_head *http_codec_head(const http_codec *codec)
{
    return codec->head_valid ? &codec->head : NULL;
}

int http_codec_error(const http_codec *codec, const char **reason)
{
    if (reason != NULL)
        *reason = codec->error_reason != NULL ? codec->error_reason : "";
    return codec->error_status;
}

http_codec_event http_codec_finish(http_codec *codec)
{
    size_t consumed;
    switch (codec->phase) {
    case PHASE_FAILED:
        return HTTP_CODEC_ERROR;
    case PHASE_CLOSED:
    case PHASE_SWITCHED:
        codec->phase = PHASE_CLOSED;
        return HTTP_CODEC_NEED_MORE;
    case PHASE_HEAD:
        if (!codec->message_started) { /* a clean close between messages */
            codec->phase = PHASE_CLOSED;
            return HTTP_CODEC_NEED_MORE;
        }
        set_error(codec, 400, "connection closed inside a head");
        return fail(codec, &consumed);
    case PHASE_BODY:
        break;
    }
    if (codec->framing == BODY_NONE || codec->framing == BODY_UNTIL_CLOSE) {
        end_message(codec, 0, &consumed);
        codec->phase = PHASE_CLOSED;
        return HTTP_CODEC_MESSAGE_END;
    }
    set_error(codec, 400, "connection closed inside a body");
    return fail(codec, &consumed);
}

/* ---- lookups -----------------------------------------------------------------------------------
 */

const http_text *http_head_find(const http_head *head, const char *name)
{
    size_t name_length = strlen(name);
    for (size_t i = 0; i < head->header_count; i++) {
        const http_header *header = &head->headers[i];
        if (header->name.length == name_length &&
            strncasecmp(header->name.data, name, name_length) == 0)
            return &header->value;
    }
    return NULL;
}

bool http_text_equals(http_text text, const char *string)
{
    size_t length = strlen(string);
    return text.length == length && strncasecmp(text.data, string, length) == 0;
}
