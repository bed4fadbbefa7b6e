/*
 * data_path.c — atrium-proxy's HTTP/1.1 forwarding: workers, listeners,
 * downstream connections, the upstream keep-alive pool, and the replies the
 * proxy makes itself (see data_path.h).
 *
 * I/O. Each socket is registered once with its worker's libevent loop,
 * edge-triggered for reading and writing, and never modified afterwards;
 * reads go straight into the connection's input evbuffer (readv into
 * reserved space) and writes go out as soon as there is something to write
 * (writev from the output evbuffer). A request costs one read and one write
 * on each side and no epoll_ctl, which is what lets a proxy keep up with
 * the kernel; libevent still does the waiting, the timers and the buffers.
 *
 * Flow. One downstream connection carries one request at a time (pipelined
 * requests wait in its input buffer). A request's head is parsed by
 * http_codec, routed by router on the snapshot current when it arrived,
 * rewritten (hop-by-hop headers dropped; x-forwarded-for and x-request-id
 * added) and written to a pooled or new upstream connection; its body, and
 * the response body coming back, are moved between evbuffers as raw bytes
 * (chunk framing included) without being copied or held whole: a side stops
 * reading while the other side's output holds more than HIGH_WATER bytes and
 * resumes when it drains below LOW_WATER.
 *
 * Lifetimes. Everything a connection does happens in its progress function
 * (downstream_progress, upstream_progress); a nested call only marks that
 * there is more to do. A closed downstream is freed by the worker's reaper
 * after the current callback, so no callback ever touches freed memory.
 */
#include "data_path.h"

#include "error_text.h"
#include "http_codec.h"
#include "log.h"
#include "log_interval.h"
#include "router.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HIGH_WATER (256 * 1024)
#define LOW_WATER  (64 * 1024)
/* A read asks for SMALL_READ bytes (a request or response head fits) and,
 * after a read that filled its space (a body is streaming), for LARGE_READ:
 * idle keep-alive connections then hold no large buffers. */
#define SMALL_READ                 4096
#define LARGE_READ                 65536
#define MAX_IDLE_PER_ENDPOINT      256
#define POOL_BUCKETS               256 /* power of two */
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define LISTEN_BACKLOG             1024
/* Connections accepted per wake-up of a listener (level-triggered: the rest
 * wake the loop again after the other events had their turn). */
#define ACCEPT_BATCH 64
/* Out of file descriptors: how long the listeners pause, and how often at
 * most the failures are logged (with their count since the last line). */
#define FD_EXHAUSTED_PAUSE_MS        100
#define FD_EXHAUSTED_LOG_INTERVAL_MS 1000
/* Connections accepted by worker 0 waiting for the worker they were handed to. */
#define HANDOFF_CAPACITY 256
/* The sweep that enforces the request-head and idle timeouts runs every
 * 1/SWEEPS_PER_TIMEOUT of the shorter one, between these bounds. */
#define SWEEPS_PER_TIMEOUT 8
#define SWEEP_MIN_MS       10
#define SWEEP_MAX_MS       1000

typedef struct worker worker;
typedef struct downstream downstream;
typedef struct upstream upstream;

/* A non-blocking socket with its buffers. */
typedef struct socket_io {
    int fd;
    struct event *event; /* EV_READ | EV_WRITE | EV_ET | EV_PERSIST, added once */
    struct evbuffer *input;
    struct evbuffer *output;
    bool unread;      /* the kernel may hold bytes not read yet */
    bool peer_closed; /* a read returned end of file */
    bool failed;      /* a read or a write failed */
    bool streaming;   /* the last read filled its space: read large */
    /* The peer shut its side (EV_CLOSED): read on until end of file, since a
     * short read no longer means the socket is empty (data and FIN may come
     * with one edge). */
    bool hangup;
    /* The last read was short and so taken to have emptied the socket (no
     * EAGAIN seen): see confirm_short_read. */
    bool read_short;
} socket_io;

/* One listening socket of the process, opened (without SO_REUSEPORT, so no
 * other process can share its port) and accepted from by worker 0. */
typedef struct listener_socket {
    char name[128];
    char address[64];
    uint16_t port;
    int fd;
    struct event *event; /* EV_READ | EV_PERSIST, level-triggered */
    worker *owner;
    bool seen; /* still in the snapshot being applied */
    struct listener_socket *next;
} listener_socket;

/* A connection worker 0 accepted for another worker. */
typedef struct handoff {
    int fd;
    socklen_t address_length;
    struct sockaddr_storage address;
    char listener_name[128];
} handoff;

/* Idle keep-alive connections to one endpoint. */
typedef struct pool_entry {
    struct sockaddr_storage address;
    socklen_t address_length;
    upstream *idle; /* doubly linked through upstream->idle_next/idle_previous */
    size_t idle_count;
    struct pool_entry *next;
} pool_entry;

struct upstream {
    worker *owner;
    socket_io io;
    http_codec *codec;
    struct event *connect_timer;
    downstream *client; /* NULL while idle in the pool */
    pool_entry *pool;
    proxy_cluster_stats *cluster_stats;
    proxy_endpoint_stats *endpoint_stats;
    bool connected;
    bool reused; /* taken from the pool for the current request */
    bool idle;
    upstream *idle_next, *idle_previous;
};

typedef enum request_state {
    REQUEST_HEAD = 0, /* waiting for a head */
    REQUEST_BODY,     /* forwarding its body */
    REQUEST_DONE      /* whole request read; waiting for the response to end */
} request_state;

struct downstream {
    worker *owner;
    socket_io io;
    http_codec *codec;
    char peer[64];
    char listener_name[128];
    request_state state;
    /* The latest snapshot that had this connection's listener (a reference):
     * when the listener is removed, the connection drains on it. */
    proxy_config *listener_config;
    /* The request in flight. */
    proxy_config *config; /* reference held while a request is in flight */
    upstream *server;
    proxy_cluster_stats *cluster_stats;
    const proxy_endpoint *endpoint;
    proxy_cluster *cluster;
    bool head_request;
    bool response_started;
    bool close_after_response;
    bool retried;
    uint64_t start_us;
    int status;
    uint32_t route_timeout_ms; /* armed once the whole request was received */
    /* The timeouts' sweep (see sweep_connections): the worker's tick of the
     * last I/O for this connection, and of the first byte of a head still
     * incomplete (head_pending). */
    uint64_t active_tick;
    uint64_t head_started_tick;
    bool head_pending;
    /* The request head, kept for one retry when a pooled connection turns
     * out closed (0: no retry possible). */
    char retry_head[1024];
    size_t retry_head_length;
    struct event *timeout;
    bool closing;                /* flushing a last response, then closing */
    bool closed;                 /* waiting for the reaper */
    bool in_progress;            /* inside downstream_progress */
    bool again;                  /* downstream_progress was asked for while running */
    downstream *next, *previous; /* the worker's open connections */
    downstream *next_closed;     /* the reaper's list */
};

#define STATS_CACHE_SIZE 64 /* power of two */

typedef struct stats_cache_entry {
    uint64_t generation; /* 0: empty (snapshots count from 1) */
    const proxy_weighted_cluster *cluster;
    proxy_cluster_stats *stats;
} stats_cache_entry;

/* A timer duration libevent keeps in an O(1) queue instead of its heap. */
typedef struct common_timeout {
    uint32_t milliseconds;
    const struct timeval *queue;
} common_timeout;

#define COMMON_TIMEOUTS 8

struct worker {
    unsigned index;
    stats_cache_entry stats_cache[STATS_CACHE_SIZE];
    common_timeout timeouts[COMMON_TIMEOUTS];
    struct timeval heap_timeout; /* a duration without a common queue (copied by evtimer_add) */
    data_path *path;
    pthread_t thread;
    struct event_base *base;
    int wake_fd;
    struct event *wake_event;
    struct event *reaper;
    proxy_config *config;
    listener_socket *sockets;    /* worker 0 only; changed under path->listeners_lock */
    unsigned next_target;        /* worker 0: round robin of accepted connections */
    struct event *accept_resume; /* worker 0: ends a pause of the listeners */
    bool accepts_paused;
    log_interval fd_failure_lines;
    pthread_mutex_t handoff_lock; /* guards the handoff ring */
    handoff *handoffs;            /* HANDOFF_CAPACITY entries */
    size_t handoff_first, handoff_count;
    struct event *sweep; /* the timeouts' sweep, every path->sweep_ms */
    uint64_t tick;       /* sweeps so far */
    downstream *clients; /* every open downstream connection */
    downstream *closed;  /* closed, to be freed by the reaper */
    pool_entry *pool[POOL_BUCKETS];
    proxy_stats_shard *stats;
    uint64_t random_state[2];
};

struct data_path {
    worker *workers;
    unsigned worker_count;
    pthread_mutex_t lock; /* guards current */
    proxy_config *current;
    pthread_mutex_t listeners_lock; /* guards worker 0's list of sockets */
    int reserve_fd;                 /* /dev/null, given up to shed a connection when out of fds */
    uint32_t head_timeout_ms, idle_timeout_ms; /* 0: none */
    uint32_t sweep_ms;                         /* 0: no sweep */
    uint64_t head_timeout_ticks, idle_timeout_ticks;
    data_path_listener_failure on_failure;
    void *failure_context;
    atomic_bool stopping;
};

static void downstream_progress(downstream *client);
static void upstream_progress(upstream *server);
static void upstream_release(upstream *server, bool keep);

/* ---- small helpers ---- */

static uint64_t now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

/* xorshift128+: request ids and weighted cluster picks, per worker. */
static uint64_t next_random(worker *self)
{
    uint64_t s1 = self->random_state[0];
    const uint64_t s0 = self->random_state[1];
    self->random_state[0] = s0;
    s1 ^= s1 << 23;
    self->random_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return self->random_state[1] + s0;
}

static bool name_is(const http_text *name, const char *lower, size_t length)
{
    return name->length == length && strncasecmp(name->data, lower, length) == 0;
}

/* Headers that describe one connection, not the message (RFC 9110 7.6.1). */
static bool is_hop_by_hop(const http_text *name)
{
    switch (name->length) {
    case 2:
        return name_is(name, "te", 2);
    case 7:
        return name_is(name, "upgrade", 7);
    case 10:
        return name_is(name, "connection", 10) || name_is(name, "keep-alive", 10);
    case 16:
        return name_is(name, "proxy-connection", 16);
    default:
        return false;
    }
}

static const char *status_reason(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 500:
        return "Internal Server Error";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* A head being written: bytes gathered on the stack, added to the evbuffer
 * in one piece (or a few, for a head larger than the buffer). */
typedef struct head_writer {
    struct evbuffer *out;
    size_t used;
    bool spilled; /* part of the head went to out already */
    char bytes[4096];
} head_writer;

static void head_put(head_writer *writer, const char *data, size_t length)
{
    if (writer->used + length > sizeof(writer->bytes)) {
        evbuffer_add(writer->out, writer->bytes, writer->used);
        writer->used = 0;
        writer->spilled = true;
        if (length > sizeof(writer->bytes)) {
            evbuffer_add(writer->out, data, length);
            return;
        }
    }
    memcpy(writer->bytes + writer->used, data, length);
    writer->used += length;
}

static void head_put_text(head_writer *writer, const char *text)
{
    head_put(writer, text, strlen(text));
}

static void head_finish(head_writer *writer)
{
    evbuffer_add(writer->out, writer->bytes, writer->used);
    writer->used = 0;
}

static void head_put_header(head_writer *writer, const http_header *header)
{
    head_put(writer, header->name.data, header->name.length);
    head_put(writer, ": ", 2);
    head_put(writer, header->value.data, header->value.length);
    head_put(writer, "\r\n", 2);
}

/* After a head without a body: lets the codec end that message (it does so
 * without input), so that its next bytes start the next message. */
static void end_bodyless_message(http_codec *codec)
{
    size_t consumed = 0;
    (void)http_codec_execute(codec, "", 0, &consumed);
}

/* ---- sockets ---- */

/* The four calls of the hot path, made as raw system calls: libc wraps
 * recv, send, readv and writev as thread-cancellation points, which costs
 * two calls per wrapper (about 1.5 % of the proxy's CPU), and atrium-proxy
 * never cancels a thread. Each returns what the system call does (-1 and
 * errno on failure). */
static ssize_t raw_recv(int fd, void *buffer, size_t length)
{
    return syscall(SYS_recvfrom, fd, buffer, length, 0, NULL, NULL);
}

static ssize_t raw_send(int fd, const void *buffer, size_t length)
{
    return syscall(SYS_sendto, fd, buffer, length, MSG_NOSIGNAL, NULL, 0);
}

static ssize_t raw_readv(int fd, const struct iovec *vectors, int count)
{
    return syscall(SYS_readv, fd, vectors, count);
}

static ssize_t raw_writev(int fd, const struct iovec *vectors, int count)
{
    return syscall(SYS_writev, fd, vectors, count);
}

static int socket_io_open(socket_io *io, struct event_base *base, int fd,
                          event_callback_fn callback, void *context)
{
    io->fd = fd;
    io->input = evbuffer_new();
    io->output = evbuffer_new();
    io->event =
        event_new(base, fd, EV_READ | EV_WRITE | EV_ET | EV_PERSIST | EV_CLOSED, callback, context);
    if (io->input == NULL || io->output == NULL || io->event == NULL ||
        event_add(io->event, NULL) != 0)
        return -1;
    return 0;
}

/* Closes the socket and frees the buffers (a zeroed io is fine). */
static void socket_io_close(socket_io *io)
{
    if (io->event != NULL)
        event_free(io->event);
    if (io->input != NULL)
        evbuffer_free(io->input);
    if (io->output != NULL)
        evbuffer_free(io->output);
    if (io->fd >= 0)
        close(io->fd);
    io->event = NULL;
    io->input = io->output = NULL;
    io->fd = -1;
}

/* Reads until the kernel has nothing more or the input holds limit bytes
 * (then unread stays true, and the caller reads again later). */
static void socket_io_read(socket_io *io, size_t limit)
{
    while (io->unread && !io->peer_closed && !io->failed &&
           evbuffer_get_length(io->input) < limit) {
        struct evbuffer_iovec space[2];
        int count =
            evbuffer_reserve_space(io->input, io->streaming ? LARGE_READ : SMALL_READ, space, 2);
        if (count <= 0) {
            io->failed = true;
            return;
        }
        struct iovec vectors[2];
        size_t reserved = 0;
        for (int i = 0; i < count; i++) {
            vectors[i].iov_base = space[i].iov_base;
            vectors[i].iov_len = space[i].iov_len;
            reserved += space[i].iov_len;
        }
        /* recv on one buffer skips readv's copy of the vector array. */
        ssize_t got = count == 1 ? raw_recv(io->fd, space[0].iov_base, space[0].iov_len)
                                 : raw_readv(io->fd, vectors, count);
        if (got < 0) {
            evbuffer_commit_space(io->input, space, 0);
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                io->unread = io->read_short = false;
            else
                io->failed = true;
            return;
        }
        if (got == 0) {
            evbuffer_commit_space(io->input, space, 0);
            io->peer_closed = true;
            io->unread = false;
            return;
        }
        size_t left = (size_t)got;
        int used = 0;
        for (; used < count && left > 0; used++) {
            if (space[used].iov_len > left)
                space[used].iov_len = left;
            left -= space[used].iov_len;
        }
        evbuffer_commit_space(io->input, space, used);
        io->streaming = (size_t)got == reserved;
        /* A short read emptied the socket: the next bytes bring a new edge
         * (unless the peer closed: its end of file brings none). */
        if ((size_t)got < reserved && !io->hangup)
            io->unread = false, io->read_short = true;
    }
}

/* One read into the caller's buffer instead of the input evbuffer, with the
 * flags kept as socket_io_read keeps them. Returns the bytes read; 0 when
 * none were (end of file, nothing there, or a failure: the flags say). */
static size_t socket_io_read_into(socket_io *io, char *buffer, size_t size)
{
    for (;;) {
        ssize_t got = raw_recv(io->fd, buffer, size);
        if (got > 0) {
            if ((size_t)got < size && !io->hangup)
                io->unread = false, io->read_short = true; /* a short read emptied the socket */
            return (size_t)got;
        }
        if (got == 0) {
            io->peer_closed = true;
            io->unread = false;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            io->unread = io->read_short = false;
        else
            io->failed = true;
        return 0;
    }
}

/* A short read is taken to have emptied the socket, which saves a read per
 * request. But a reset that came with the data (EPOLLHUP, which libevent
 * reports as plain EV_READ | EV_WRITE, without EV_CLOSED) brings no later
 * edge: while a message is incomplete, the caller reads once more to see
 * EAGAIN, or the reset or end of file that would otherwise go unseen until
 * a timeout. Returns true (and marks the socket unread) when that read is due. */
static bool confirm_short_read(socket_io *io)
{
    if (!io->read_short || io->unread || io->peer_closed || io->failed)
        return false;
    io->read_short = false;
    io->unread = true;
    return true;
}

/* Writes what the socket takes; the rest waits for the write edge. */
static void socket_io_flush(socket_io *io)
{
    while (!io->failed && evbuffer_get_length(io->output) > 0) {
        struct evbuffer_iovec pieces[16];
        int count = evbuffer_peek(io->output, -1, NULL, pieces, 16);
        if (count > 16)
            count = 16;
        ssize_t wrote;
        if (count == 1) {
            wrote = raw_send(io->fd, pieces[0].iov_base, pieces[0].iov_len);
        } else {
            struct iovec vectors[16];
            for (int i = 0; i < count; i++) {
                vectors[i].iov_base = pieces[i].iov_base;
                vectors[i].iov_len = pieces[i].iov_len;
            }
            wrote = raw_writev(io->fd, vectors, count);
        }
        if (wrote < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                io->failed = true;
            return;
        }
        evbuffer_drain(io->output, (size_t)wrote);
        if (wrote == 0)
            return;
    }
}

/* Bytes gathered on the stack: sent from there when may_send and nothing is
 * queued before them (no evbuffer chain to allocate, fill and free); what
 * the socket does not take now is queued in order. */
static void send_or_queue(socket_io *io, const char *bytes, size_t length, bool may_send)
{
    size_t sent = 0;
    if (may_send && length > 0 && evbuffer_get_length(io->output) == 0) {
        ssize_t wrote = raw_send(io->fd, bytes, length);
        if (wrote > 0)
            sent = (size_t)wrote;
        else if (wrote < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            io->failed = true;
    }
    evbuffer_add(io->output, bytes + sent, length - sent);
}

/* ---- the end of a request ---- */

/* Forgets the request in flight (its snapshot reference, its timer). */
static void finish_request(downstream *client)
{
    if (client->timeout != NULL)
        evtimer_del(client->timeout);
    proxy_config_release(client->config);
    client->config = NULL;
    client->cluster = NULL;
    client->endpoint = NULL;
    client->cluster_stats = NULL;
    client->response_started = false;
    client->retried = false;
    client->status = 0;
    client->retry_head_length = 0;
    client->route_timeout_ms = 0;
}

/* Closes the connection now; the reaper frees it after this callback. */
static void downstream_close(downstream *client)
{
    if (client->closed)
        return;
    client->closed = true;
    worker *self = client->owner;
    if (client->server != NULL) {
        proxy_stats_endpoint_request(client->server->endpoint_stats, true);
        upstream_release(client->server, false);
        client->server = NULL;
    }
    finish_request(client);
    proxy_stats_downstream_connections(self->stats, -1);
    if (client->previous != NULL)
        client->previous->next = client->next;
    else
        self->clients = client->next;
    if (client->next != NULL)
        client->next->previous = client->previous;
    socket_io_close(&client->io);
    client->next_closed = self->closed;
    self->closed = client;
    event_active(self->reaper, EV_TIMEOUT, 0);
}

static void downstream_free(downstream *client)
{
    proxy_config_release(client->listener_config);
    if (client->timeout != NULL)
        event_free(client->timeout);
    http_codec_free(client->codec);
    free(client);
}

static void reap_closed(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    worker *self = context;
    while (self->closed != NULL) {
        downstream *client = self->closed;
        self->closed = client->next_closed;
        downstream_free(client);
    }
}

/* The response has been sent whole (or the proxy answered): count it, then
 * read the next request or close once the output is flushed. */
static void response_complete(downstream *client)
{
    proxy_stats_response(client->owner->stats, client->cluster_stats, client->status,
                         now_us() - client->start_us);
    bool request_done = client->state == REQUEST_DONE;
    finish_request(client);
    if (client->close_after_response || !request_done) {
        client->closing = true;
        return;
    }
    client->state = REQUEST_HEAD;
}

/* Answers the request in flight itself. After a malformed request, or when
 * part of the request body is still unread, the connection closes. */
static void local_reply(downstream *client, int status, proxy_local_reply reason, const char *body)
{
    proxy_stats_local_reply(client->owner->stats, reason);
    if (client->server != NULL) {
        upstream_release(client->server, false);
        client->server = NULL;
    }
    if (client->state != REQUEST_DONE)
        client->close_after_response = true;
    size_t body_length = strlen(body);
    evbuffer_add_printf(client->io.output,
                        "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                        "%s\r\n%s\n",
                        status, status_reason(status), body_length + 1,
                        client->close_after_response ? "connection: close\r\n" : "", body);
    client->status = status;
    response_complete(client);
}

/* ---- upstream connections ---- */

static pool_entry *pool_find(worker *self, const struct sockaddr *address, socklen_t length)
{
    uint64_t hash = 1469598103934665603ULL;
    const unsigned char *bytes = (const unsigned char *)address;
    for (socklen_t i = 0; i < length; i++)
        hash = (hash ^ bytes[i]) * 1099511628211ULL;
    pool_entry **slot = &self->pool[hash & (POOL_BUCKETS - 1)];
    for (pool_entry *entry = *slot; entry != NULL; entry = entry->next)
        if (entry->address_length == length && memcmp(&entry->address, address, length) == 0)
            return entry;
    pool_entry *entry = calloc(1, sizeof(*entry));
    if (entry == NULL)
        return NULL;
    memcpy(&entry->address, address, length);
    entry->address_length = length;
    entry->next = *slot;
    *slot = entry;
    return entry;
}

static void pool_unlink(upstream *server)
{
    if (!server->idle)
        return;
    pool_entry *entry = server->pool;
    if (server->idle_previous != NULL)
        server->idle_previous->idle_next = server->idle_next;
    else
        entry->idle = server->idle_next;
    if (server->idle_next != NULL)
        server->idle_next->idle_previous = server->idle_previous;
    server->idle_next = server->idle_previous = NULL;
    server->idle = false;
    entry->idle_count--;
}

static void upstream_destroy(upstream *server)
{
    pool_unlink(server);
    proxy_stats_upstream_connections(server->owner->stats, -1);
    socket_io_close(&server->io);
    if (server->connect_timer != NULL)
        event_free(server->connect_timer);
    http_codec_free(server->codec);
    free(server);
}

/* Closes every idle connection in entry's pool. The next one is read before
 * its predecessor is destroyed: no pointer into a freed connection is used. */
static void pool_close_idle(pool_entry *entry)
{
    upstream *server = entry->idle;
    while (server != NULL) {
        upstream *next = server->idle_next;
        upstream_destroy(server);
        server = next;
    }
}

/* Ends the upstream's part in a request: back to the pool when keep is true
 * and the pool has room, otherwise closed. */
static void upstream_release(upstream *server, bool keep)
{
    proxy_stats_endpoint_active(server->endpoint_stats, -1);
    server->client = NULL;
    if (!keep || !server->connected || server->pool->idle_count >= MAX_IDLE_PER_ENDPOINT ||
        evbuffer_get_length(server->io.input) > 0 || server->io.peer_closed || server->io.failed ||
        atomic_load(&server->owner->path->stopping)) {
        upstream_destroy(server);
        return;
    }
    server->idle = true;
    server->idle_next = server->pool->idle;
    server->idle_previous = NULL;
    if (server->idle_next != NULL)
        server->idle_next->idle_previous = server;
    server->pool->idle = server;
    server->pool->idle_count++;
}

static void upstream_io(evutil_socket_t fd, short events, void *context);

static void upstream_connect_timed_out(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    upstream *server = context;
    server->io.failed = true;
    upstream_progress(server);
}

/* An idle connection or a new one to the endpoint. NULL when a socket cannot
 * be made or the connect fails at once. */
static upstream *upstream_acquire(worker *self, const proxy_endpoint *endpoint,
                                  uint32_t connect_timeout_ms, bool *reused)
{
    const struct sockaddr *address = (const struct sockaddr *)&endpoint->socket_address;
    pool_entry *entry = pool_find(self, address, endpoint->socket_address_length);
    if (entry == NULL)
        return NULL;
    if (entry->idle != NULL) {
        upstream *server = entry->idle;
        pool_unlink(server);
        *reused = true;
        return server;
    }
    *reused = false;
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, address, endpoint->socket_address_length) != 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    upstream *server = calloc(1, sizeof(*server));
    if (server == NULL) {
        close(fd);
        return NULL;
    }
    server->owner = self;
    server->pool = entry;
    server->codec = http_codec_new(HTTP_CODEC_RESPONSE);
    server->connect_timer = evtimer_new(self->base, upstream_connect_timed_out, server);
    if (socket_io_open(&server->io, self->base, fd, upstream_io, server) != 0 ||
        server->codec == NULL || server->connect_timer == NULL) {
        socket_io_close(&server->io);
        if (server->connect_timer != NULL)
            event_free(server->connect_timer);
        http_codec_free(server->codec);
        free(server);
        return NULL;
    }
    proxy_stats_upstream_connections(self->stats, 1);
    uint32_t timeout_ms = connect_timeout_ms ? connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    struct timeval timeout = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(server->connect_timer, &timeout);
    return server;
}

/* Attaches a connection to the client's request. */
static void upstream_attach(downstream *client, upstream *server, bool reused)
{
    server->client = client;
    server->reused = reused;
    /* A pooled connection goes to one endpoint: its counters are found once
     * per cluster that uses it. */
    if (server->endpoint_stats == NULL || server->cluster_stats != client->cluster_stats)
        server->endpoint_stats =
            proxy_stats_endpoint(client->owner->stats, client->cluster_stats,
                                 client->endpoint->address, client->endpoint->port);
    server->cluster_stats = client->cluster_stats;
    proxy_stats_endpoint_active(server->endpoint_stats, 1);
    http_codec_expect_head_response(server->codec, client->head_request);
    client->server = server;
}

/* Sends the kept request head on a fresh connection to the same endpoint,
 * after a pooled connection turned out closed. Returns 0, or -1. */
static int retry_on_new_connection(downstream *client)
{
    bool reused = false;
    pool_entry *entry = client->server->pool;
    upstream_release(client->server, false);
    client->server = NULL;
    /* Other pooled connections to the same endpoint may be stale too. */
    pool_close_idle(entry);
    upstream *server = upstream_acquire(client->owner, client->endpoint,
                                        client->cluster->connect_timeout_ms, &reused);
    if (server == NULL)
        return -1;
    client->retried = true;
    upstream_attach(client, server, reused);
    evbuffer_add(server->io.output, client->retry_head, client->retry_head_length);
    return 0;
}

/* Writes the response head for the client into writer (not finished): the
 * status line and the headers without the hop-by-hop ones. */
static void write_response_head(downstream *client, const http_head *head, head_writer *writer)
{
    int status = head->status >= 100 && head->status <= 999 ? head->status : 502;
    char status_line[13] = {'H',
                            'T',
                            'T',
                            'P',
                            '/',
                            '1',
                            '.',
                            '1',
                            ' ',
                            (char)('0' + status / 100),
                            (char)('0' + status / 10 % 10),
                            (char)('0' + status % 10),
                            ' '};
    head_put(writer, status_line, sizeof(status_line));
    head_put(writer, head->reason.data, head->reason.length);
    head_put(writer, "\r\n", 2);
    for (size_t i = 0; i < head->header_count; i++)
        if (!is_hop_by_hop(&head->headers[i].name))
            head_put_header(writer, &head->headers[i]);
    if (client->close_after_response)
        head_put(writer, "connection: close\r\n", 19);
    head_put(writer, "\r\n", 2);
}

/* The upstream connection ended (closed, failed or timed out) while a
 * request used it. */
static void upstream_ended(upstream *server)
{
    downstream *client = server->client;
    if (client->response_started) {
        if (server->io.peer_closed && !server->io.failed &&
            http_codec_finish(server->codec) == HTTP_CODEC_MESSAGE_END) {
            /* A response delimited by the close. */
            proxy_stats_endpoint_request(server->endpoint_stats, false);
            client->server = NULL;
            upstream_release(server, false);
            client->close_after_response = true;
            response_complete(client);
            return;
        }
        /* Cut mid-response: nothing correct can follow; close the client. */
        proxy_stats_endpoint_request(server->endpoint_stats, true);
        client->server = NULL;
        upstream_release(server, false);
        proxy_stats_response(client->owner->stats, client->cluster_stats, client->status,
                             now_us() - client->start_us);
        finish_request(client);
        client->closing = true;
        return;
    }
    if (server->reused && !client->retried && client->state == REQUEST_DONE &&
        client->retry_head_length > 0) {
        /* A pooled connection the endpoint had closed: once more, on a new one. */
        if (retry_on_new_connection(client) == 0)
            return;
        proxy_stats_connect_failure(client->cluster_stats, NULL);
        local_reply(client, 503, PROXY_REPLY_CONNECT_FAILURE,
                    "upstream connect failure: no connection to the endpoint");
        return;
    }
    proxy_stats_endpoint_request(server->endpoint_stats, true);
    if (!server->connected) {
        proxy_stats_connect_failure(server->cluster_stats, server->endpoint_stats);
        local_reply(client, 503, PROXY_REPLY_CONNECT_FAILURE,
                    "upstream connect failure: no connection to the endpoint");
    } else {
        local_reply(client, 502, PROXY_REPLY_UPSTREAM_RESET,
                    "upstream reset: the connection closed before a response");
    }
}

/* A response head arrived (writer: where the client's bytes go). Returns
 * true when the response had no body and so has ended. */
static bool response_head_parsed(upstream *server, head_writer *writer)
{
    downstream *client = server->client;
    const http_head *head = http_codec_head(server->codec);
    if (head->status >= 100 && head->status < 200) {
        /* An interim response: passed on; the final one follows. */
        if (head->status != 101)
            write_response_head(client, head, writer);
        end_bodyless_message(server->codec);
        return false;
    }
    client->response_started = true;
    client->status = head->status;
    client->retry_head_length = 0;
    if (head->has_body && head->content_length < 0 && !head->chunked)
        client->close_after_response = true; /* delimited by the close */
    write_response_head(client, head, writer);
    if (head->has_body)
        return false;
    end_bodyless_message(server->codec);
    return true;
}

/* The response ended: the upstream connection goes back to its pool (or
 * closes) and the client's request is complete. */
static void response_ended(upstream *server)
{
    downstream *client = server->client;
    bool keep = http_codec_head(server->codec)->keep_alive && client->state == REQUEST_DONE;
    proxy_stats_endpoint_request(server->endpoint_stats, client->status >= 500);
    client->server = NULL;
    upstream_release(server, keep);
    response_complete(client);
}

/* The upstream sent what is not HTTP: a 502 if nothing was passed on yet,
 * else the client connection closes (nothing correct can follow). */
static void response_malformed(upstream *server)
{
    downstream *client = server->client;
    proxy_stats_endpoint_request(server->endpoint_stats, true);
    if (!client->response_started) {
        local_reply(client, 502, PROXY_REPLY_UPSTREAM_RESET, "upstream sent a malformed response");
    } else {
        client->server = NULL;
        upstream_release(server, false);
        finish_request(client);
        client->closing = true;
    }
}

/* Parses what the upstream sent and moves it downstream. Returns true when
 * the upstream is no longer attached to the client (released). */
static bool upstream_forward(upstream *server)
{
    downstream *client = server->client;
    struct evbuffer *input = server->io.input;
    while (evbuffer_get_length(input) > 0) {
        struct evbuffer_iovec chunk;
        if (evbuffer_peek(input, -1, NULL, &chunk, 1) < 1)
            break;
        size_t consumed = 0;
        http_codec_event event =
            http_codec_execute(server->codec, chunk.iov_base, chunk.iov_len, &consumed);
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            evbuffer_drain(input, consumed);
            break;
        case HTTP_CODEC_HEAD: {
            head_writer writer = {.out = client->io.output};
            bool ended = response_head_parsed(server, &writer);
            head_finish(&writer);
            evbuffer_drain(input, consumed);
            if (ended) {
                response_ended(server);
                return true;
            }
            break;
        }
        case HTTP_CODEC_BODY:
            evbuffer_remove_buffer(input, client->io.output, consumed);
            if (evbuffer_get_length(client->io.output) > HIGH_WATER)
                return false; /* resumes when the client's output drains */
            break;
        case HTTP_CODEC_MESSAGE_END:
            evbuffer_remove_buffer(input, client->io.output, consumed);
            if (!client->response_started)
                break; /* the end of an interim response */
            response_ended(server);
            return true;
        case HTTP_CODEC_ERROR:
        default:
            response_malformed(server);
            return true;
        }
    }
    return false;
}

/* The common case without evbuffers: a response read on the stack while
 * nothing is buffered on either side, its head rewritten and its body copied
 * behind the head on the stack, all sent to the client in one call. What
 * does not fit (a large head or body) goes to the client's output evbuffer
 * in order, what the client does not take now waits there, and bytes past
 * the response stay in the upstream's input, as if read there. Returns true
 * when the upstream is no longer attached to the client (released). */
static bool upstream_forward_direct(upstream *server)
{
    downstream *client = server->client;
    char input[SMALL_READ];
    size_t length = socket_io_read_into(&server->io, input, sizeof(input));
    if (length == 0)
        return false; /* the flags tell upstream_progress what happened */
    head_writer writer = {.out = client->io.output};
    size_t taken = 0;
    bool ended = false, malformed = false;
    while (taken < length && !ended && !malformed) {
        size_t consumed = 0;
        const char *at = input + taken;
        http_codec_event event = http_codec_execute(server->codec, at, length - taken, &consumed);
        taken += consumed;
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            break;
        case HTTP_CODEC_HEAD:
            ended = response_head_parsed(server, &writer);
            break;
        case HTTP_CODEC_BODY:
        case HTTP_CODEC_MESSAGE_END:
            head_put(&writer, at, consumed);
            ended = event == HTTP_CODEC_MESSAGE_END && client->response_started;
            break;
        case HTTP_CODEC_ERROR:
        default:
            malformed = true;
            break;
        }
    }
    if (taken < length)
        evbuffer_add(server->io.input, input + taken, length - taken);
    send_or_queue(&client->io, writer.bytes, writer.used, !writer.spilled);
    if (malformed) {
        response_malformed(server);
        return true;
    }
    if (ended) {
        response_ended(server);
        return true;
    }
    return false;
}

static void upstream_progress(upstream *server)
{
    socket_io *io = &server->io;
    if (!server->connected && !io->failed) {
        int error = 0;
        socklen_t length = sizeof(error);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0)
            io->failed = true;
        else if (io->unread || evbuffer_get_length(io->output) > 0 || server->client != NULL) {
            /* Writable (or readable) without an error: the connect finished.
             * A zero-length send tells a pending connect (ENOTCONN) from an
             * established one. */
            if (send(io->fd, "", 0, MSG_NOSIGNAL) == 0) {
                server->connected = true;
                evtimer_del(server->connect_timer);
            }
        }
    }
    if (server->client == NULL) { /* idle in the pool: any byte or close ends it */
        socket_io_read(io, SMALL_READ);
        if (evbuffer_get_length(io->input) > 0 || io->peer_closed || io->failed)
            upstream_destroy(server);
        return;
    }
    downstream *client = server->client;
    if (server->connected)
        socket_io_flush(io);
    bool released = false;
    if (server->connected && io->unread && !client->response_started &&
        evbuffer_get_length(io->input) == 0 && evbuffer_get_length(client->io.output) == 0)
        released = upstream_forward_direct(server);
    if (released) {
        downstream_progress(client); /* server may be freed */
        return;
    }
    if (server->connected && evbuffer_get_length(client->io.output) <= HIGH_WATER)
        socket_io_read(io, HIGH_WATER);
    released = upstream_forward(server);
    if (!released && server->connected && evbuffer_get_length(client->io.output) <= HIGH_WATER &&
        confirm_short_read(io)) { /* the response is incomplete */
        socket_io_read(io, HIGH_WATER);
        released = upstream_forward(server);
    }
    if (!released && (io->peer_closed || io->failed) &&
        (evbuffer_get_length(io->input) == 0 || io->failed)) {
        upstream_ended(server);
        released = true;
    }
    (void)released; /* server may be freed from here on */
    downstream_progress(client);
}

static void upstream_io(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    upstream *server = context;
    if (events & EV_CLOSED)
        server->io.hangup = true;
    if (events & (EV_READ | EV_CLOSED))
        server->io.unread = true;
    upstream_progress(server);
}

/* ---- requests ---- */

static void write_request_id(head_writer *writer, worker *self)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t high = next_random(self), low = next_random(self);
    char id[36];
    for (int i = 0; i < 16; i++)
        id[i] = hex[(high >> (60 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++)
        id[16 + i] = hex[(low >> (60 - 4 * i)) & 15];
    /* xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx, version 4, variant 10 */
    char text[36];
    memcpy(text, id, 8);
    text[8] = '-';
    memcpy(text + 9, id + 8, 4);
    text[13] = '-';
    text[14] = '4';
    memcpy(text + 15, id + 13, 3);
    text[18] = '-';
    text[19] = hex[8 | (low & 3)];
    memcpy(text + 20, id + 17, 3);
    text[23] = '-';
    memcpy(text + 24, id + 20, 12);
    head_put(writer, "x-request-id: ", 14);
    head_put(writer, text, 36);
    head_put(writer, "\r\n", 2);
}

/* Writes the rewritten request head into writer (not finished). */
static void write_request_head(downstream *client, const http_head *head,
                               const proxy_listener *listener, head_writer *writer)
{
    head_put(writer, head->method.data, head->method.length);
    head_put(writer, " ", 1);
    /* Origin form (an absolute-form target loses its scheme and authority). */
    if (head->path.length == 0 || head->path.data[0] == '?')
        head_put(writer, "/", 1);
    head_put(writer, head->path.data, head->path.length);
    head_put(writer, " HTTP/1.1\r\n", 11);
    if (head->host_from_target) {
        /* The authority replaces Host (RFC 9112 3.2.2): the one routed on. */
        head_put(writer, "host: ", 6);
        head_put(writer, head->host.data, head->host.length);
        head_put(writer, "\r\n", 2);
    }
    const http_text *forwarded_for = NULL;
    bool has_request_id = false;
    for (size_t i = 0; i < head->header_count; i++) {
        const http_header *header = &head->headers[i];
        const http_text *name = &header->name;
        if (is_hop_by_hop(name) || name_is(name, "expect", 6) ||
            (head->host_from_target && name_is(name, "host", 4)))
            continue;
        if (name_is(name, "x-forwarded-for", 15)) {
            forwarded_for = &header->value;
            continue;
        }
        if (name_is(name, "x-request-id", 12))
            has_request_id = true;
        head_put_header(writer, header);
    }
    head_put(writer, "x-forwarded-for: ", 17);
    if (forwarded_for != NULL) {
        head_put(writer, forwarded_for->data, forwarded_for->length);
        head_put(writer, ", ", 2);
    }
    head_put_text(writer, client->peer);
    head_put(writer, "\r\n", 2);
    if (!has_request_id && listener->generate_request_id)
        write_request_id(writer, client->owner);
    head_put(writer, "\r\n", 2);
}

static void request_timed_out(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    downstream *client = context;
    proxy_stats_upstream_timeout(client->cluster_stats);
    if (client->server != NULL)
        proxy_stats_endpoint_request(client->server->endpoint_stats, true);
    if (!client->response_started) {
        local_reply(client, 504, PROXY_REPLY_UPSTREAM_TIMEOUT,
                    "upstream timeout: no response within the route timeout");
    } else {
        /* Part of the response went out already: all that is left is to close. */
        proxy_stats_local_reply(client->owner->stats, PROXY_REPLY_UPSTREAM_TIMEOUT);
        if (client->server != NULL) {
            upstream_release(client->server, false);
            client->server = NULL;
        }
        finish_request(client);
        client->closing = true;
    }
    downstream_progress(client);
}

/* The timeval to arm a route's timer with. Routes use a handful of
 * durations; each gets one of libevent's common-timeout queues (adding and
 * removing a timer is then O(1) instead of a heap operation per request).
 * Durations beyond the first COMMON_TIMEOUTS go to the heap. */
static const struct timeval *route_timeout(worker *self, uint32_t milliseconds)
{
    for (int i = 0; i < COMMON_TIMEOUTS; i++) {
        common_timeout *known = &self->timeouts[i];
        if (known->queue != NULL && known->milliseconds == milliseconds)
            return known->queue;
        if (known->queue == NULL) {
            struct timeval duration = {milliseconds / 1000, (milliseconds % 1000) * 1000};
            known->queue = event_base_init_common_timeout(self->base, &duration);
            known->milliseconds = milliseconds;
            if (known->queue != NULL)
                return known->queue;
            break;
        }
    }
    self->heap_timeout = (struct timeval){milliseconds / 1000, (milliseconds % 1000) * 1000};
    return &self->heap_timeout;
}

/* Starts the route timeout of the request in flight. As Envoy does, it runs
 * from the end of the request, not its head: an upload is bounded by the
 * idle timeout while its body moves, then the upstream has the route's
 * timeout to answer. */
static void start_route_timer(downstream *client)
{
    if (client->route_timeout_ms > 0 && client->server != NULL && !client->response_started)
        evtimer_add(client->timeout, route_timeout(client->owner, client->route_timeout_ms));
}

/* The counters of a route's cluster: remembered per worker for the snapshot
 * they were found in (the generation tells snapshots apart, since a freed
 * snapshot's addresses may come back), so a request does no lookup by name. */
static proxy_cluster_stats *cluster_stats_of(worker *self, const proxy_config *config,
                                             const proxy_weighted_cluster *cluster)
{
    size_t slot = ((uintptr_t)cluster / sizeof(*cluster)) & (STATS_CACHE_SIZE - 1);
    stats_cache_entry *entry = &self->stats_cache[slot];
    if (entry->generation != config->generation || entry->cluster != cluster) {
        entry->generation = config->generation;
        entry->cluster = cluster;
        entry->stats = proxy_stats_cluster(self->stats, cluster->name);
    }
    return entry->stats;
}

/* A request head arrived: route it and start forwarding (or answer it). */
static void start_request(downstream *client, const http_head *head)
{
    worker *self = client->owner;
    client->start_us = now_us();
    client->head_request = head->is_head_method;
    client->close_after_response = !head->keep_alive;
    proxy_config *config = self->config;
    const proxy_listener *listener =
        config != NULL ? proxy_config_find_listener(config, client->listener_name) : NULL;
    if (listener != NULL && config != client->listener_config) {
        proxy_config_release(client->listener_config);
        client->listener_config = proxy_config_retain(config);
    } else if (listener == NULL && client->listener_config != NULL) {
        /* The listener was removed: the connection drains. Its requests are
         * served on the last snapshot that had the listener, each answered
         * with "connection: close". */
        config = client->listener_config;
        listener = proxy_config_find_listener(config, client->listener_name);
        client->close_after_response = true;
    }
    client->config = config != NULL ? proxy_config_retain(config) : NULL;
    if (listener == NULL) {
        local_reply(client, 503, PROXY_REPLY_NOT_READY, "no configuration yet");
        return;
    }
    if (head->upgrade) {
        local_reply(client, 501, PROXY_REPLY_NOT_IMPLEMENTED,
                    "connection upgrades are not supported");
        return;
    }
    router_result routed = router_route(listener->route_table, head, next_random(self));
    if (routed.outcome == ROUTER_UNKNOWN_HOST || routed.outcome == ROUTER_NO_ROUTE_TABLE) {
        char body[300];
        snprintf(body, sizeof(body), "unknown host: no service \"%.*s\" is known to this proxy",
                 (int)(head->host.length > 200 ? 200 : head->host.length), head->host.data);
        local_reply(client, 404, PROXY_REPLY_UNKNOWN_HOST, body);
        return;
    }
    if (routed.outcome == ROUTER_NO_ROUTE) {
        local_reply(client, 404, PROXY_REPLY_NO_ROUTE, "no route matches this request");
        return;
    }
    client->cluster_stats = cluster_stats_of(self, client->config, routed.cluster);
    client->cluster = routed.cluster->cluster;
    if (client->cluster == NULL) {
        local_reply(client, 503, PROXY_REPLY_NO_CLUSTER, "no such cluster: not received yet");
        return;
    }
    client->endpoint = proxy_cluster_pick(client->cluster);
    if (client->endpoint == NULL) {
        local_reply(client, 503, PROXY_REPLY_NO_HEALTHY, "no healthy upstream endpoint");
        return;
    }
    bool reused = false;
    upstream *server =
        upstream_acquire(self, client->endpoint, client->cluster->connect_timeout_ms, &reused);
    if (server == NULL) {
        proxy_stats_connect_failure(client->cluster_stats,
                                    proxy_stats_endpoint(self->stats, client->cluster_stats,
                                                         client->endpoint->address,
                                                         client->endpoint->port));
        local_reply(client, 503, PROXY_REPLY_CONNECT_FAILURE,
                    "upstream connect failure: no connection to the endpoint");
        return;
    }
    upstream_attach(client, server, reused);
    if (head->expect_continue && head->has_body)
        evbuffer_add(client->io.output, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    head_writer writer = {.out = server->io.output};
    write_request_head(client, head, listener, &writer);
    if (reused && !head->has_body && !writer.spilled && writer.used <= sizeof(client->retry_head)) {
        /* Kept for one retry in case this pooled connection was closed. */
        memcpy(client->retry_head, writer.bytes, writer.used);
        client->retry_head_length = writer.used;
    }
    send_or_queue(&server->io, writer.bytes, writer.used, !writer.spilled && server->connected);
    client->route_timeout_ms = routed.route->timeout_ms;
    if (client->state == REQUEST_DONE)
        start_route_timer(client);
}

/* The whole request was received (its body ended). */
static void request_received(downstream *client)
{
    client->state = REQUEST_DONE;
    start_route_timer(client);
}

/* A request head was parsed: the request starts. */
static void request_head_parsed(downstream *client)
{
    const http_head *head = http_codec_head(client->codec);
    if (!head->has_body)
        end_bodyless_message(client->codec);
    client->state = head->has_body ? REQUEST_BODY : REQUEST_DONE;
    start_request(client, head);
}

/* The codec refused the request: the reply says why, then the connection
 * closes (what follows cannot be trusted). */
static void request_malformed(downstream *client)
{
    const char *reason = NULL;
    int status = http_codec_error(client->codec, &reason);
    if (reason == NULL)
        reason = "malformed request";
    proxy_local_reply kind =
        status == 431   ? PROXY_REPLY_HEADERS_TOO_LARGE
        : status == 501 ? PROXY_REPLY_NOT_IMPLEMENTED
        : strstr(reason, "Content-Length") != NULL || strstr(reason, "Transfer-Encoding") != NULL
            ? PROXY_REPLY_SMUGGLING
            : PROXY_REPLY_BAD_REQUEST;
    if (client->config == NULL)
        client->start_us = now_us();
    client->state = REQUEST_BODY;
    local_reply(client, status, kind, reason);
}

/* Whether the client's bytes may be parsed now: not while a response is
 * awaited (pipelining) or the upstream's output is full. */
static bool requests_may_proceed(const downstream *client)
{
    return !client->closing && client->state != REQUEST_DONE &&
           (client->server == NULL || evbuffer_get_length(client->server->io.output) <= HIGH_WATER);
}

/* Parses what the client sent, as far as the request in flight allows. */
static void process_requests(downstream *client)
{
    struct evbuffer *input = client->io.input;
    while (evbuffer_get_length(input) > 0 && requests_may_proceed(client)) {
        struct evbuffer_iovec chunk;
        if (evbuffer_peek(input, -1, NULL, &chunk, 1) < 1)
            return;
        size_t consumed = 0;
        http_codec_event event =
            http_codec_execute(client->codec, chunk.iov_base, chunk.iov_len, &consumed);
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            evbuffer_drain(input, consumed);
            break;
        case HTTP_CODEC_HEAD:
            evbuffer_drain(input, consumed);
            request_head_parsed(client);
            break;
        case HTTP_CODEC_BODY:
        case HTTP_CODEC_MESSAGE_END:
            if (client->server != NULL)
                evbuffer_remove_buffer(input, client->server->io.output, consumed);
            else
                evbuffer_drain(input, consumed);
            if (event == HTTP_CODEC_MESSAGE_END)
                request_received(client);
            break;
        case HTTP_CODEC_ERROR:
        default:
            request_malformed(client);
            return;
        }
    }
}

/* The common case without an evbuffer: a connection waiting for a request
 * head, with nothing buffered, reads on the stack and parses there; a request
 * that is all head starts from there (its head goes upstream from the stack
 * too, see start_request). What else the read brought (a body, the next
 * pipelined request) goes to the input buffer, as if read there. */
static void read_requests_direct(downstream *client)
{
    socket_io *io = &client->io;
    char input[SMALL_READ];
    size_t length = socket_io_read_into(io, input, sizeof(input));
    size_t taken = 0;
    while (taken < length && requests_may_proceed(client)) {
        size_t consumed = 0;
        const char *at = input + taken;
        http_codec_event event = http_codec_execute(client->codec, at, length - taken, &consumed);
        taken += consumed;
        if (event == HTTP_CODEC_HEAD) {
            request_head_parsed(client);
        } else if (event == HTTP_CODEC_BODY || event == HTTP_CODEC_MESSAGE_END) {
            if (client->server != NULL)
                evbuffer_add(client->server->io.output, at, consumed);
            if (event == HTTP_CODEC_MESSAGE_END)
                request_received(client);
        } else if (event != HTTP_CODEC_NEED_MORE) {
            request_malformed(client);
            return;
        }
    }
    if (taken < length)
        evbuffer_add(io->input, input + taken, length - taken);
}

/* Everything a downstream connection can do now: read, parse, forward,
 * write, and close when it is over. */
static void downstream_progress(downstream *client)
{
    if (client->closed)
        return;
    if (client->in_progress) {
        client->again = true;
        return;
    }
    client->in_progress = true;
    client->active_tick = client->owner->tick; /* for the idle timeout */
    do {
        client->again = false;
        socket_io *io = &client->io;
        bool upstream_full =
            client->server != NULL && evbuffer_get_length(client->server->io.output) > HIGH_WATER;
        if (!client->closing && !upstream_full) {
            if (client->state == REQUEST_HEAD && io->unread && evbuffer_get_length(io->input) == 0)
                read_requests_direct(client);
            socket_io_read(io, HIGH_WATER);
        }
        process_requests(client);
        upstream *server = client->server;
        if (server != NULL && server->connected) {
            socket_io_flush(&server->io);
            if (server->io.failed) {
                upstream_progress(server); /* reports the failure */
                continue;
            }
        }
        socket_io_flush(io);
        if (io->failed) {
            downstream_close(client);
            break;
        }
        size_t pending = evbuffer_get_length(io->output);
        if (client->closing && pending == 0) {
            downstream_close(client);
            break;
        }
        /* The request is incomplete: a short read is confirmed by one more. */
        if (!client->closing &&
            (client->state == REQUEST_BODY ||
             (client->state == REQUEST_HEAD &&
              (evbuffer_get_length(io->input) > 0 || http_codec_head_started(client->codec)))))
            confirm_short_read(io);
        /* Bytes left in the kernel when the read stopped at its limit bring no
         * new edge: read again once the upstream took what was read. */
        if (io->unread && !client->closing && !io->peer_closed &&
            evbuffer_get_length(io->input) < HIGH_WATER &&
            (client->server == NULL ||
             evbuffer_get_length(client->server->io.output) <= HIGH_WATER))
            client->again = true;
        /* The client's output drained: the response may go on. */
        if (server != NULL && server == client->server && pending <= LOW_WATER &&
            server->io.unread && client->response_started)
            upstream_progress(server);
        if (io->peer_closed && !client->closing) {
            /* The client closed its side. A whole request still gets its
             * response (then the connection closes); anything else ends. */
            if (client->state == REQUEST_DONE && client->config != NULL) {
                client->close_after_response = true;
            } else {
                if (client->config != NULL) {
                    client->status = 499; /* as nginx logs a client that closed first */
                    proxy_stats_response(client->owner->stats, client->cluster_stats,
                                         client->status, now_us() - client->start_us);
                }
                downstream_close(client);
                break;
            }
        }
    } while (client->again && !client->closed);
    client->in_progress = false;
    /* Part of a head waiting for the rest starts the request-head timeout
     * (checked by the worker's sweep; a head read whole never gets here). */
    bool partial_head =
        !client->closed && !client->closing && client->state == REQUEST_HEAD &&
        (evbuffer_get_length(client->io.input) > 0 || http_codec_head_started(client->codec));
    if (partial_head && !client->head_pending)
        client->head_started_tick = client->owner->tick;
    client->head_pending = partial_head;
}

static void downstream_io(evutil_socket_t fd, short events, void *context)
{
    downstream *client = context;
    if (events & EV_CLOSED)
        client->io.hangup = true;
    if (events & (EV_READ | EV_CLOSED)) {
        client->io.unread = true;
        /* While the upstream's output is full the client is not read, so a
         * reset would go unnoticed until the upstream drains: ask the
         * socket (a rare path: only when the upstream is slow). */
        if (client->server != NULL && evbuffer_get_length(client->server->io.output) > HIGH_WATER) {
            int error = 0;
            socklen_t length = sizeof(error);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error != 0)
                client->io.failed = true;
        }
    }
    downstream_progress(client);
}

/* ---- accepting ---- */

/* Wakes a worker: a new snapshot, connections handed to it, or stopping. */
static void worker_signal(worker *self)
{
    uint64_t one = 1;
    ssize_t written = write(self->wake_fd, &one, sizeof(one));
    (void)written; /* a full eventfd counter still wakes the worker */
}

/* Takes a new client connection into this worker's loop. */
static void adopt_connection(worker *self, const char *listener_name, int fd,
                             const struct sockaddr *address)
{
    downstream *client = calloc(1, sizeof(*client));
    if (client == NULL) {
        close(fd);
        return;
    }
    client->owner = self;
    client->io.fd = -1;
    client->codec = http_codec_new(HTTP_CODEC_REQUEST);
    client->timeout = evtimer_new(self->base, request_timed_out, client);
    if (client->codec == NULL || client->timeout == NULL ||
        socket_io_open(&client->io, self->base, fd, downstream_io, client) != 0) {
        if (client->io.fd < 0)
            close(fd);
        socket_io_close(&client->io);
        downstream_free(client);
        return;
    }
    snprintf(client->listener_name, sizeof(client->listener_name), "%s", listener_name);
    if (self->config != NULL)
        client->listener_config = proxy_config_retain(self->config);
    if (address->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)address)->sin_addr, client->peer,
                  sizeof(client->peer));
    else if (address->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)address)->sin6_addr, client->peer,
                  sizeof(client->peer));
    else
        snprintf(client->peer, sizeof(client->peer), "unknown");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    client->active_tick = self->tick;
    proxy_stats_downstream_connections(self->stats, 1);
    client->next = self->clients;
    if (client->next != NULL)
        client->next->previous = client;
    self->clients = client;
}

/* Queues a connection for target. Returns false when its queue is full;
 * *was_empty tells whether target must be woken. */
static bool handoff_push(worker *target, const char *listener_name, int fd,
                         const struct sockaddr_storage *address, socklen_t length, bool *was_empty)
{
    pthread_mutex_lock(&target->handoff_lock);
    bool queued = target->handoff_count < HANDOFF_CAPACITY;
    if (queued) {
        handoff *slot =
            &target->handoffs[(target->handoff_first + target->handoff_count) % HANDOFF_CAPACITY];
        slot->fd = fd;
        slot->address_length = length;
        memcpy(&slot->address, address, length);
        snprintf(slot->listener_name, sizeof(slot->listener_name), "%s", listener_name);
        *was_empty = target->handoff_count == 0;
        target->handoff_count++;
    }
    pthread_mutex_unlock(&target->handoff_lock);
    return queued;
}

/* Takes one queued connection out into *out; false when none is queued. */
static bool handoff_pop(worker *self, handoff *out)
{
    pthread_mutex_lock(&self->handoff_lock);
    bool found = self->handoff_count > 0;
    if (found) {
        *out = self->handoffs[self->handoff_first];
        self->handoff_first = (self->handoff_first + 1) % HANDOFF_CAPACITY;
        self->handoff_count--;
    }
    pthread_mutex_unlock(&self->handoff_lock);
    return found;
}

/* Worker 0 accepted a connection: it goes to the workers in turn (kept when
 * it is worker 0's turn, or the other's queue is full). */
static void dispatch_connection(worker *self, const listener_socket *entry, int fd,
                                const struct sockaddr_storage *address, socklen_t length)
{
    data_path *path = self->path;
    worker *target = &path->workers[self->next_target++ % path->worker_count];
    bool was_empty = false;
    if (target != self && handoff_push(target, entry->name, fd, address, length, &was_empty)) {
        if (was_empty)
            worker_signal(target);
        return;
    }
    adopt_connection(self, entry->name, fd, (const struct sockaddr *)address);
}

static void set_accepting(worker *self, bool accepting)
{
    self->accepts_paused = !accepting;
    for (listener_socket *entry = self->sockets; entry != NULL; entry = entry->next) {
        if (accepting)
            event_add(entry->event, NULL);
        else
            event_del(entry->event);
    }
}

static void resume_accepting(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    set_accepting(context, true);
}

/* accept() found no file descriptor (EMFILE, ENFILE) or no kernel memory.
 * Retrying at once would spin (the listener stays readable) and log
 * millions of lines; instead: one waiting connection is accepted with the
 * reserve descriptor and closed at once (its client learns now instead of
 * waiting in the backlog), the listeners pause for FD_EXHAUSTED_PAUSE_MS,
 * and a line is logged at most every FD_EXHAUSTED_LOG_INTERVAL_MS with the
 * count of failures since the previous one. */
static void accept_exhausted(worker *self, const listener_socket *entry, int error)
{
    data_path *path = self->path;
    proxy_stats_accept_fd_exhausted(self->stats);
    if (path->reserve_fd >= 0) {
        close(path->reserve_fd);
        int shed = accept4(entry->fd, NULL, NULL, SOCK_CLOEXEC);
        if (shed >= 0)
            close(shed);
        path->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    set_accepting(self, false);
    struct timeval pause = {0, FD_EXHAUSTED_PAUSE_MS * 1000};
    evtimer_add(self->accept_resume, &pause);
    uint64_t failures = 0;
    if (log_interval_due(&self->fd_failure_lines, (int64_t)(now_us() / 1000),
                         FD_EXHAUSTED_LOG_INTERVAL_MS, &failures))
        log_warn("listener \"%s\" %s:%u: accept: %s (%llu time%s since the last report): "
                 "accepting paused for %d ms at a time, one waiting connection closed each time",
                 entry->name, entry->address, entry->port, strerror(error),
                 (unsigned long long)failures, failures == 1 ? "" : "s", FD_EXHAUSTED_PAUSE_MS);
}

/* A listening socket is readable (worker 0): accept what waits, non-blocking. */
static void accept_ready(evutil_socket_t fd, short events, void *context)
{
    (void)events;
    listener_socket *entry = context;
    worker *self = entry->owner;
    for (int i = 0; i < ACCEPT_BATCH && !self->accepts_paused; i++) {
        struct sockaddr_storage address;
        socklen_t length = sizeof(address);
        int client =
            accept4(fd, (struct sockaddr *)&address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client >= 0) {
            dispatch_connection(self, entry, client, &address, length);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            accept_exhausted(self, entry, errno);
        return; /* EAGAIN: nothing more waits */
    }
}

/* ---- the request-head and idle timeouts ---- */

/* A head began longer than the request-head timeout ago and is still not
 * whole: 408, then the connection closes (as Envoy's
 * request_headers_timeout). */
static void request_head_timed_out(downstream *client, proxy_local_reply reason)
{
    char body[160];
    snprintf(body, sizeof(body), "request timeout: the request head did not arrive within %u ms",
             reason == PROXY_REPLY_REQUEST_TIMEOUT ? client->owner->path->head_timeout_ms
                                                   : client->owner->path->idle_timeout_ms);
    client->head_pending = false;
    client->start_us = now_us();
    client->state = REQUEST_BODY; /* what follows is not a request: close after the reply */
    local_reply(client, 408, reason, body);
    downstream_progress(client);
}

/* Nothing moved on the connection (or its request's upstream) for the idle
 * timeout. An idle keep-alive connection closes silently; a request whose
 * body stalled gets 408, one whose upstream stalled before answering 504;
 * a response already begun is cut (the client sees the close). */
static void idle_timed_out(downstream *client)
{
    proxy_stats_idle_timeout(client->owner->stats);
    if (client->closing || (client->state == REQUEST_HEAD && !client->head_pending)) {
        downstream_close(client);
        return;
    }
    if (client->state == REQUEST_HEAD) {
        request_head_timed_out(client, PROXY_REPLY_IDLE_TIMEOUT);
        return;
    }
    if (client->response_started) {
        downstream_close(client); /* releases the upstream, never to the pool */
        return;
    }
    if (client->server != NULL)
        proxy_stats_endpoint_request(client->server->endpoint_stats, true);
    if (client->state == REQUEST_DONE)
        local_reply(client, 504, PROXY_REPLY_IDLE_TIMEOUT,
                    "upstream idle timeout: no response within the idle timeout");
    else
        local_reply(client, 408, PROXY_REPLY_IDLE_TIMEOUT,
                    "request timeout: the request body stalled for the idle timeout");
    downstream_progress(client);
}

/* Every path->sweep_ms: one tick more, and the connections past a deadline
 * are timed out. A connection stores only the tick of its last I/O (one
 * store per event), so the hot path adds or removes no timer; the sweep
 * walks the worker's connections, a few nanoseconds each. Deadlines are
 * kept to within one sweep period late, never early. */
static void sweep_connections(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    worker *self = context;
    data_path *path = self->path;
    self->tick++;
    downstream *next;
    for (downstream *client = self->clients; client != NULL; client = next) {
        next = client->next; /* timing a client out touches no other client */
        if (path->head_timeout_ticks > 0 && client->head_pending &&
            self->tick - client->head_started_tick > path->head_timeout_ticks) {
            proxy_stats_request_head_timeout(self->stats);
            request_head_timed_out(client, PROXY_REPLY_REQUEST_TIMEOUT);
        } else if (path->idle_timeout_ticks > 0 &&
                   self->tick - client->active_tick > path->idle_timeout_ticks) {
            idle_timed_out(client);
        }
    }
}

/* ---- listeners ---- */

/* The socket address a listener binds; 0, or -1 when its address is not a
 * numeric IPv4 or IPv6 address. */
static int listener_address(const proxy_listener *wanted, struct sockaddr_storage *address,
                            socklen_t *length)
{
    memset(address, 0, sizeof(*address));
    struct sockaddr_in *v4 = (struct sockaddr_in *)address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)address;
    if (inet_pton(AF_INET, wanted->address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(wanted->port);
        *length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, wanted->address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(wanted->port);
        *length = sizeof(*v6);
    } else {
        return -1;
    }
    return 0;
}

/* Whether this process holds a listening socket on the listener's address
 * (worker 0 opened it for an earlier snapshot). */
/* Whether this process has the address already: worker 0 holds a socket on
 * it, or the snapshot in force has a listener there (applied, so worker 0
 * opens it on its next turn, or has bound it and not yet linked it: binding
 * again here would find it "in use" by ourselves). A listener of the
 * snapshot in force that worker 0 could not open is reported by
 * listener_failure, not here. */
static bool holds_address(data_path *path, const proxy_listener *wanted)
{
    bool held = false;
    pthread_mutex_lock(&path->listeners_lock);
    worker *owner = &path->workers[0];
    for (listener_socket *entry = owner->sockets; entry != NULL && !held; entry = entry->next)
        held = entry->port == wanted->port && strcmp(entry->address, wanted->address) == 0;
    pthread_mutex_unlock(&path->listeners_lock);
    proxy_config *current = held ? NULL : data_path_current(path);
    for (size_t i = 0; current != NULL && i < current->listener_count && !held; i++)
        held = current->listeners[i].port == wanted->port &&
               strcmp(current->listeners[i].address, wanted->address) == 0;
    proxy_config_release(current);
    return held;
}

int data_path_check_listeners(data_path *path, const proxy_config *config, char *error,
                              size_t error_size)
{
    for (size_t i = 0; config != NULL && i < config->listener_count; i++) {
        const proxy_listener *wanted = &config->listeners[i];
        struct sockaddr_storage address;
        socklen_t length;
        if (listener_address(wanted, &address, &length) != 0) {
            error_text(error, error_size, "listener \"%s\": %s is not a numeric address",
                       wanted->name, wanted->address);
            return -1;
        }
        if (path != NULL && holds_address(path, wanted))
            continue;
        /* As open_listener binds: SO_REUSEADDR (a port in TIME_WAIT is
         * free), no SO_REUSEPORT (a port another process listens on is not). */
        int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int on = 1;
        bool bound = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0 &&
                     bind(fd, (struct sockaddr *)&address, length) == 0;
        int reason = errno;
        if (fd >= 0)
            close(fd);
        if (!bound) {
            error_text(error, error_size, "listener \"%s\": cannot bind %s:%u: %s", wanted->name,
                       wanted->address, wanted->port, strerror(reason));
            return -1;
        }
    }
    return 0;
}

/* Opens a listening socket in worker 0's loop: SO_REUSEADDR but never
 * SO_REUSEPORT, so that a second process asking for the same port is
 * refused ("Address already in use") instead of silently sharing it. */
static listener_socket *open_listener(worker *self, const proxy_listener *wanted, char *error,
                                      size_t error_size)
{
    listener_socket *entry = calloc(1, sizeof(*entry));
    if (entry == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    snprintf(entry->name, sizeof(entry->name), "%s", wanted->name);
    snprintf(entry->address, sizeof(entry->address), "%s", wanted->address);
    entry->port = wanted->port;
    entry->owner = self;
    struct sockaddr_storage address;
    socklen_t length;
    if (listener_address(wanted, &address, &length) != 0) {
        snprintf(error, error_size, "%s %s:%u: not a numeric address", wanted->name,
                 wanted->address, wanted->port);
        free(entry);
        return NULL;
    }
    int on = 1;
    entry->fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (entry->fd < 0 || setsockopt(entry->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        bind(entry->fd, (struct sockaddr *)&address, length) != 0 ||
        listen(entry->fd, LISTEN_BACKLOG) != 0 ||
        (entry->event =
             event_new(self->base, entry->fd, EV_READ | EV_PERSIST, accept_ready, entry)) == NULL ||
        (!self->accepts_paused && event_add(entry->event, NULL) != 0)) {
        snprintf(error, error_size, "%s %s:%u: %s", wanted->name, wanted->address, wanted->port,
                 strerror(errno));
        if (entry->event != NULL)
            event_free(entry->event);
        if (entry->fd >= 0)
            close(entry->fd);
        free(entry);
        return NULL;
    }
    return entry;
}

static void close_listener(listener_socket *entry)
{
    event_free(entry->event);
    close(entry->fd);
    free(entry);
}

/* Opens, keeps or closes the process's listening sockets to match the
 * snapshot (worker 0 only). A listener renamed on the same address keeps
 * its socket. */
static void reconcile_listeners(worker *self, char *errors, size_t errors_size)
{
    data_path *path = self->path;
    for (listener_socket *entry = self->sockets; entry != NULL; entry = entry->next)
        entry->seen = false;
    const proxy_config *config = self->config;
    for (size_t i = 0; config != NULL && i < config->listener_count; i++) {
        const proxy_listener *wanted = &config->listeners[i];
        listener_socket *found = NULL;
        for (listener_socket *entry = self->sockets; entry != NULL; entry = entry->next)
            if (!entry->seen && entry->port == wanted->port &&
                strcmp(entry->address, wanted->address) == 0)
                found = entry;
        if (found != NULL) {
            found->seen = true;
            if (strcmp(found->name, wanted->name) != 0) {
                pthread_mutex_lock(&path->listeners_lock);
                snprintf(found->name, sizeof(found->name), "%s", wanted->name);
                pthread_mutex_unlock(&path->listeners_lock);
            }
            continue;
        }
        char error[256];
        listener_socket *opened = open_listener(self, wanted, error, sizeof(error));
        if (opened == NULL) {
            size_t used = strlen(errors);
            snprintf(errors + used, errors_size - used, "%s%s", used ? "; " : "", error);
            continue;
        }
        opened->seen = true;
        pthread_mutex_lock(&path->listeners_lock);
        opened->next = self->sockets;
        self->sockets = opened;
        pthread_mutex_unlock(&path->listeners_lock);
    }
    /* Sockets not in the snapshot stop accepting; their connections drain. */
    listener_socket **link = &self->sockets;
    while (*link != NULL) {
        listener_socket *entry = *link;
        if (entry->seen) {
            link = &entry->next;
            continue;
        }
        pthread_mutex_lock(&path->listeners_lock);
        *link = entry->next;
        pthread_mutex_unlock(&path->listeners_lock);
        close_listener(entry);
    }
}

/* ---- workers ---- */

static void worker_wake(evutil_socket_t fd, short events, void *context)
{
    (void)events;
    worker *self = context;
    uint64_t count;
    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return;
    data_path *path = self->path;
    if (atomic_load(&path->stopping)) {
        event_base_loopbreak(self->base);
        return;
    }
    proxy_config *config = data_path_current(path);
    if (config == self->config) {
        proxy_config_release(config);
    } else {
        proxy_config_release(self->config);
        self->config = config;
        /* The snapshot just dropped and the xDS client's temporaries were
         * freed in several threads' arenas: give the free pages back to the
         * kernel (a proxy's memory should not keep its peak of the last
         * rebuild). */
        if (self->index == 0) {
            malloc_trim(0);
            char errors[1024] = "";
            reconcile_listeners(self, errors, sizeof(errors));
            if (errors[0] != '\0' && path->on_failure != NULL)
                path->on_failure(errors, path->failure_context);
        }
    }
    /* Connections worker 0 accepted for this worker (after the snapshot,
     * which may have brought their listener). */
    handoff entry;
    while (handoff_pop(self, &entry))
        adopt_connection(self, entry.listener_name, entry.fd,
                         (const struct sockaddr *)&entry.address);
}

static void *worker_main(void *context)
{
    worker *self = context;
    event_base_dispatch(self->base);
    return NULL;
}

/* Frees a worker's loop and everything on it (after its thread ended). */
static void worker_clear(worker *self)
{
    while (self->clients != NULL)
        downstream_close(self->clients);
    if (self->reaper != NULL)
        reap_closed(-1, 0, self);
    while (self->sockets != NULL) {
        listener_socket *next = self->sockets->next;
        close_listener(self->sockets);
        self->sockets = next;
    }
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        while (self->pool[i] != NULL) {
            pool_entry *next = self->pool[i]->next;
            pool_close_idle(self->pool[i]);
            free(self->pool[i]);
            self->pool[i] = next;
        }
    }
    if (self->handoffs != NULL) {
        for (size_t i = 0; i < self->handoff_count; i++)
            close(self->handoffs[(self->handoff_first + i) % HANDOFF_CAPACITY].fd);
        free(self->handoffs);
        self->handoffs = NULL;
    }
    pthread_mutex_destroy(&self->handoff_lock);
    if (self->sweep != NULL)
        event_free(self->sweep);
    if (self->accept_resume != NULL)
        event_free(self->accept_resume);
    if (self->reaper != NULL)
        event_free(self->reaper);
    if (self->wake_event != NULL)
        event_free(self->wake_event);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    proxy_config_release(self->config);
    self->config = NULL;
    if (self->base != NULL)
        event_base_free(self->base);
}

/* The sweep period for these timeouts (0: no timeout, no sweep). */
static uint32_t sweep_period_ms(uint32_t head_timeout_ms, uint32_t idle_timeout_ms)
{
    uint32_t shortest = head_timeout_ms;
    if (shortest == 0 || (idle_timeout_ms > 0 && idle_timeout_ms < shortest))
        shortest = idle_timeout_ms;
    if (shortest == 0)
        return 0;
    uint32_t period = shortest / SWEEPS_PER_TIMEOUT;
    return period < SWEEP_MIN_MS ? SWEEP_MIN_MS : period > SWEEP_MAX_MS ? SWEEP_MAX_MS : period;
}

static void free_path(data_path *path)
{
    if (path->reserve_fd >= 0)
        close(path->reserve_fd);
    pthread_mutex_destroy(&path->listeners_lock);
    pthread_mutex_destroy(&path->lock);
    free(path->workers);
    free(path);
}

data_path *data_path_start(unsigned worker_count, const data_path_limits *limits,
                           proxy_stats *stats, data_path_listener_failure on_failure, void *context,
                           char *error, size_t error_size)
{
    if (worker_count == 0) {
        snprintf(error, error_size, "at least one worker is needed");
        return NULL;
    }
    data_path *path = calloc(1, sizeof(*path));
    if (path != NULL)
        path->workers = calloc(worker_count, sizeof(*path->workers));
    struct event_config *settings = event_config_new();
    if (path == NULL || path->workers == NULL || settings == NULL) {
        if (path != NULL)
            free(path->workers);
        free(path);
        if (settings != NULL)
            event_config_free(settings);
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&path->lock, NULL);
    pthread_mutex_init(&path->listeners_lock, NULL);
    path->on_failure = on_failure;
    path->failure_context = context;
    /* Opened while descriptors are plentiful; given up when they run out. */
    path->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    data_path_limits defaults = DATA_PATH_LIMITS_DEFAULT;
    if (limits == NULL)
        limits = &defaults;
    path->head_timeout_ms = limits->request_head_timeout_ms;
    path->idle_timeout_ms = limits->idle_timeout_ms;
    path->sweep_ms = sweep_period_ms(path->head_timeout_ms, path->idle_timeout_ms);
    if (path->sweep_ms > 0) {
        path->head_timeout_ticks = (path->head_timeout_ms + path->sweep_ms - 1) / path->sweep_ms;
        path->idle_timeout_ticks = (path->idle_timeout_ms + path->sweep_ms - 1) / path->sweep_ms;
    }
    event_config_set_flag(settings, EVENT_BASE_FLAG_NOLOCK); /* one thread per loop */
    uint64_t seed = now_us() ^ ((uint64_t)getpid() << 32);
    for (unsigned i = 0; i < worker_count; i++) {
        worker *self = &path->workers[i];
        pthread_mutex_init(&self->handoff_lock, NULL);
        self->index = i;
        self->path = path;
        self->stats = proxy_stats_shard_of(stats, i);
        self->random_state[0] = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
        self->random_state[1] = (seed << 7) ^ 0xbf58476d1ce4e5b9ULL ^ i;
        self->base = event_base_new_with_config(settings);
        self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        self->handoffs = calloc(HANDOFF_CAPACITY, sizeof(*self->handoffs));
        bool ready = self->base != NULL && self->wake_fd >= 0 && self->handoffs != NULL;
        if (ready) {
            self->wake_event =
                event_new(self->base, self->wake_fd, EV_READ | EV_PERSIST, worker_wake, self);
            self->reaper = event_new(self->base, -1, 0, reap_closed, self);
            if (i == 0)
                self->accept_resume = evtimer_new(self->base, resume_accepting, self);
            if (path->sweep_ms > 0) {
                struct timeval period = {path->sweep_ms / 1000, (path->sweep_ms % 1000) * 1000};
                self->sweep = event_new(self->base, -1, EV_PERSIST, sweep_connections, self);
                ready = self->sweep != NULL && event_add(self->sweep, &period) == 0;
            }
        }
        if (!ready || self->wake_event == NULL || self->reaper == NULL ||
            (i == 0 && self->accept_resume == NULL) || event_add(self->wake_event, NULL) != 0) {
            snprintf(error, error_size, "worker %u: cannot create its event loop", i);
            for (unsigned j = 0; j <= i; j++)
                worker_clear(&path->workers[j]);
            event_config_free(settings);
            free_path(path);
            return NULL;
        }
    }
    event_config_free(settings);
    path->worker_count = worker_count;
    for (unsigned i = 0; i < worker_count; i++) {
        if (pthread_create(&path->workers[i].thread, NULL, worker_main, &path->workers[i]) != 0) {
            snprintf(error, error_size, "worker %u: cannot start its thread", i);
            atomic_store(&path->stopping, true);
            for (unsigned j = 0; j < i; j++) {
                worker_signal(&path->workers[j]);
                pthread_join(path->workers[j].thread, NULL);
            }
            for (unsigned j = 0; j < worker_count; j++)
                worker_clear(&path->workers[j]);
            free_path(path);
            return NULL;
        }
    }
    return path;
}
void data_path_apply(data_path *path, proxy_config *config)
{
    pthread_mutex_lock(&path->lock);
    proxy_config *previous = path->current;
    path->current = config;
    pthread_mutex_unlock(&path->lock);
    proxy_config_release(previous);
    for (unsigned i = 0; i < path->worker_count; i++)
        worker_signal(&path->workers[i]);
}

proxy_config *data_path_current(data_path *path)
{
    pthread_mutex_lock(&path->lock);
    proxy_config *config = path->current != NULL ? proxy_config_retain(path->current) : NULL;
    pthread_mutex_unlock(&path->lock);
    return config;
}

void data_path_stop(data_path *path)
{
    if (path == NULL)
        return;
    atomic_store(&path->stopping, true);
    for (unsigned i = 0; i < path->worker_count; i++)
        worker_signal(&path->workers[i]);
    for (unsigned i = 0; i < path->worker_count; i++)
        pthread_join(path->workers[i].thread, NULL);
    for (unsigned i = 0; i < path->worker_count; i++)
        worker_clear(&path->workers[i]);
    proxy_config_release(path->current);
    free_path(path);
}
