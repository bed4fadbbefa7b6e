/*
 * proxy_stats.c — atrium-proxy's counters, one shard per worker, summed by
 * the admin thread into Prometheus text (see proxy_stats.h).
 */
#include "proxy_stats.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A counter written by one thread and read by others: a relaxed load and
 * store is a plain move, and readers never see a torn value. */
#define COUNTER_ADD(counter, amount)                                                               \
    atomic_store_explicit(&(counter),                                                              \
                          atomic_load_explicit(&(counter), memory_order_relaxed) + (amount),       \
                          memory_order_relaxed)
#define COUNTER_READ(counter) atomic_load_explicit(&(counter), memory_order_relaxed)

/* Distinct status codes kept per cluster; more land in "other". */
#define STATUS_SLOTS 12

/* Histogram bucket upper bounds, microseconds (Prometheus "le" in seconds). */
static const uint64_t duration_bounds_us[] = {100,     250,     500,     1000,    2500,   5000,
                                              10000,   25000,   50000,   100000,  250000, 500000,
                                              1000000, 2500000, 5000000, 10000000};
#define DURATION_BUCKETS (sizeof(duration_bounds_us) / sizeof(duration_bounds_us[0]))

struct proxy_endpoint_stats {
    char address[64];
    uint16_t port;
    _Atomic uint64_t requests;
    _Atomic uint64_t failures;
    _Atomic uint64_t connect_failures;
    _Atomic int64_t active;
    proxy_endpoint_stats *next;
};

struct proxy_cluster_stats {
    char *name;
    uint64_t hash;
    _Atomic int status_codes[STATUS_SLOTS]; /* 0: free slot */
    _Atomic uint64_t status_counts[STATUS_SLOTS];
    _Atomic uint64_t other_status_count;
    _Atomic uint64_t connect_failures;
    _Atomic uint64_t timeouts;
    proxy_endpoint_stats *_Atomic endpoints; /* list, newest first */
    proxy_cluster_stats *next;               /* hash chain */
    proxy_cluster_stats *next_in_order;      /* every entry, newest first */
    proxy_stats_shard *shard;
};

struct proxy_stats_shard {
    pthread_mutex_t lock; /* held for inserts (worker) and reads (admin) */
    proxy_cluster_stats **buckets;
    size_t bucket_count;
    size_t count;
    proxy_cluster_stats *_Atomic all; /* list of every entry */
    proxy_cluster_stats *local;       /* responses without a cluster */
    _Atomic uint64_t local_replies[PROXY_REPLY_KIND_COUNT];
    _Atomic uint64_t duration_buckets[DURATION_BUCKETS + 1];
    _Atomic uint64_t duration_sum_us;
    _Atomic int64_t downstream_active;
    _Atomic uint64_t downstream_total;
    _Atomic int64_t upstream_active;
    _Atomic uint64_t upstream_total;
    _Atomic uint64_t request_head_timeouts;
    _Atomic uint64_t idle_timeouts;
    _Atomic uint64_t accept_fd_exhausted;
};

struct proxy_stats {
    proxy_stats_shard *shards;
    unsigned shard_count;
};

static const char *const local_reply_names[PROXY_REPLY_KIND_COUNT] = {
    [PROXY_REPLY_BAD_REQUEST] = "bad_request",
    [PROXY_REPLY_SMUGGLING] = "ambiguous_framing",
    [PROXY_REPLY_HEADERS_TOO_LARGE] = "headers_too_large",
    [PROXY_REPLY_NOT_IMPLEMENTED] = "not_implemented",
    [PROXY_REPLY_UNKNOWN_HOST] = "unknown_host",
    [PROXY_REPLY_NO_ROUTE] = "no_route",
    [PROXY_REPLY_NO_CLUSTER] = "no_cluster",
    [PROXY_REPLY_NO_HEALTHY] = "no_healthy_endpoint",
    [PROXY_REPLY_CONNECT_FAILURE] = "upstream_connect_failure",
    [PROXY_REPLY_UPSTREAM_TIMEOUT] = "upstream_timeout",
    [PROXY_REPLY_UPSTREAM_RESET] = "upstream_reset",
    [PROXY_REPLY_NOT_READY] = "no_configuration",
    [PROXY_REPLY_REQUEST_TIMEOUT] = "request_head_timeout",
    [PROXY_REPLY_IDLE_TIMEOUT] = "idle_timeout",
};

const char *proxy_local_reply_name(proxy_local_reply reply)
{
    return reply < PROXY_REPLY_KIND_COUNT ? local_reply_names[reply] : "unknown";
}

static uint64_t name_hash(const char *name)
{
    uint64_t hash = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        hash = (hash ^ *c) * 1099511628211ULL;
    return hash;
}

proxy_stats *proxy_stats_new(unsigned shard_count)
{
    proxy_stats *stats = calloc(1, sizeof(*stats));
    if (stats == NULL)
        return NULL;
    stats->shards = calloc(shard_count ? shard_count : 1, sizeof(*stats->shards));
    if (stats->shards == NULL) {
        free(stats);
        return NULL;
    }
    stats->shard_count = shard_count ? shard_count : 1;
    for (unsigned i = 0; i < stats->shard_count; i++)
        pthread_mutex_init(&stats->shards[i].lock, NULL);
    return stats;
}

static void free_cluster(proxy_cluster_stats *cluster)
{
    proxy_endpoint_stats *endpoint = atomic_load(&cluster->endpoints);
    while (endpoint != NULL) {
        proxy_endpoint_stats *next = endpoint->next;
        free(endpoint);
        endpoint = next;
    }
    free(cluster->name);
    free(cluster);
}

void proxy_stats_free(proxy_stats *stats)
{
    if (stats == NULL)
        return;
    for (unsigned i = 0; i < stats->shard_count; i++) {
        proxy_stats_shard *shard = &stats->shards[i];
        proxy_cluster_stats *cluster = atomic_load(&shard->all);
        while (cluster != NULL) {
            proxy_cluster_stats *next = cluster->next_in_order;
            free_cluster(cluster);
            cluster = next;
        }
        free(shard->buckets);
        pthread_mutex_destroy(&shard->lock);
    }
    free(stats->shards);
    free(stats);
}

proxy_stats_shard *proxy_stats_shard_of(proxy_stats *stats, unsigned index)
{
    return &stats->shards[index % stats->shard_count];
}

/* Doubles the bucket array; called with the lock held. Returns -1 when out
 * of memory (the table keeps working, only with longer chains). */
static int grow_buckets(proxy_stats_shard *shard)
{
    size_t count = shard->bucket_count ? shard->bucket_count * 2 : 64;
    proxy_cluster_stats **buckets = calloc(count, sizeof(*buckets));
    if (buckets == NULL)
        return -1;
    for (proxy_cluster_stats *entry = atomic_load(&shard->all); entry != NULL;
         entry = entry->next_in_order) {
        size_t slot = entry->hash & (count - 1);
        entry->next = buckets[slot];
        buckets[slot] = entry;
    }
    free(shard->buckets);
    shard->buckets = buckets;
    shard->bucket_count = count;
    return 0;
}

proxy_cluster_stats *proxy_stats_cluster(proxy_stats_shard *shard, const char *cluster_name)
{
    uint64_t hash = name_hash(cluster_name);
    if (shard->bucket_count > 0) {
        for (proxy_cluster_stats *entry = shard->buckets[hash & (shard->bucket_count - 1)];
             entry != NULL; entry = entry->next)
            if (entry->hash == hash && strcmp(entry->name, cluster_name) == 0)
                return entry;
    }
    proxy_cluster_stats *entry = calloc(1, sizeof(*entry));
    if (entry == NULL || (entry->name = strdup(cluster_name)) == NULL) {
        free(entry);
        return NULL;
    }
    entry->hash = hash;
    entry->shard = shard;
    pthread_mutex_lock(&shard->lock);
    if (shard->count + 1 > shard->bucket_count * 2 && grow_buckets(shard) != 0 &&
        shard->bucket_count == 0) {
        pthread_mutex_unlock(&shard->lock);
        free_cluster(entry);
        return NULL;
    }
    size_t slot = hash & (shard->bucket_count - 1);
    entry->next = shard->buckets[slot];
    shard->buckets[slot] = entry;
    entry->next_in_order = atomic_load(&shard->all);
    atomic_store(&shard->all, entry);
    shard->count++;
    pthread_mutex_unlock(&shard->lock);
    return entry;
}

proxy_endpoint_stats *proxy_stats_endpoint(proxy_stats_shard *shard, proxy_cluster_stats *cluster,
                                           const char *address, uint16_t port)
{
    if (cluster == NULL)
        return NULL;
    for (proxy_endpoint_stats *entry = atomic_load(&cluster->endpoints); entry != NULL;
         entry = entry->next)
        if (entry->port == port && strcmp(entry->address, address) == 0)
            return entry;
    proxy_endpoint_stats *entry = calloc(1, sizeof(*entry));
    if (entry == NULL)
        return NULL;
    snprintf(entry->address, sizeof(entry->address), "%s", address);
    entry->port = port;
    pthread_mutex_lock(&shard->lock);
    entry->next = atomic_load(&cluster->endpoints);
    atomic_store(&cluster->endpoints, entry);
    pthread_mutex_unlock(&shard->lock);
    return entry;
}

static void count_status(proxy_cluster_stats *cluster, int status)
{
    for (int slot = 0; slot < STATUS_SLOTS; slot++) {
        int held = atomic_load_explicit(&cluster->status_codes[slot], memory_order_relaxed);
        if (held == status) {
            COUNTER_ADD(cluster->status_counts[slot], 1);
            return;
        }
        if (held == 0) {
            /* The count first, then the code that makes readers look at it. */
            COUNTER_ADD(cluster->status_counts[slot], 1);
            atomic_store_explicit(&cluster->status_codes[slot], status, memory_order_release);
            return;
        }
    }
    COUNTER_ADD(cluster->other_status_count, 1);
}

void proxy_stats_response(proxy_stats_shard *shard, proxy_cluster_stats *cluster, int status,
                          uint64_t duration_us)
{
    if (cluster == NULL) {
        if (shard->local == NULL)
            shard->local = proxy_stats_cluster(shard, "");
        cluster = shard->local;
    }
    if (cluster != NULL)
        count_status(cluster, status);
    size_t bucket = 0;
    while (bucket < DURATION_BUCKETS && duration_us > duration_bounds_us[bucket])
        bucket++;
    COUNTER_ADD(shard->duration_buckets[bucket], 1);
    COUNTER_ADD(shard->duration_sum_us, duration_us);
}

void proxy_stats_local_reply(proxy_stats_shard *shard, proxy_local_reply reply)
{
    if (reply < PROXY_REPLY_KIND_COUNT)
        COUNTER_ADD(shard->local_replies[reply], 1);
}

void proxy_stats_endpoint_request(proxy_endpoint_stats *endpoint, bool failed)
{
    if (endpoint == NULL)
        return;
    COUNTER_ADD(endpoint->requests, 1);
    if (failed)
        COUNTER_ADD(endpoint->failures, 1);
}

void proxy_stats_connect_failure(proxy_cluster_stats *cluster, proxy_endpoint_stats *endpoint)
{
    if (cluster != NULL)
        COUNTER_ADD(cluster->connect_failures, 1);
    if (endpoint != NULL)
        COUNTER_ADD(endpoint->connect_failures, 1);
}

void proxy_stats_upstream_timeout(proxy_cluster_stats *cluster)
{
    if (cluster != NULL)
        COUNTER_ADD(cluster->timeouts, 1);
}

void proxy_stats_downstream_connections(proxy_stats_shard *shard, int delta)
{
    COUNTER_ADD(shard->downstream_active, delta);
    if (delta > 0)
        COUNTER_ADD(shard->downstream_total, (uint64_t)delta);
}

void proxy_stats_upstream_connections(proxy_stats_shard *shard, int delta)
{
    COUNTER_ADD(shard->upstream_active, delta);
    if (delta > 0)
        COUNTER_ADD(shard->upstream_total, (uint64_t)delta);
}

void proxy_stats_endpoint_active(proxy_endpoint_stats *endpoint, int delta)
{
    if (endpoint != NULL)
        COUNTER_ADD(endpoint->active, delta);
}

void proxy_stats_request_head_timeout(proxy_stats_shard *shard)
{
    COUNTER_ADD(shard->request_head_timeouts, 1);
}

void proxy_stats_idle_timeout(proxy_stats_shard *shard)
{
    COUNTER_ADD(shard->idle_timeouts, 1);
}

void proxy_stats_accept_fd_exhausted(proxy_stats_shard *shard)
{
    COUNTER_ADD(shard->accept_fd_exhausted, 1);
}

/* ---- the admin side ---- */

/* One labelled value, gathered from every shard, then sorted and summed. */
typedef struct labelled_value {
    const char *cluster;
    int status; /* 0 for per-cluster counters */
    uint64_t value;
} labelled_value;

typedef struct value_list {
    labelled_value *items;
    size_t count, capacity;
    bool failed;
} value_list;

static void value_list_add(value_list *list, const char *cluster, int status, uint64_t value)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 64;
        labelled_value *items = realloc(list->items, capacity * sizeof(*items));
        if (items == NULL) {
            list->failed = true;
            return;
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = (labelled_value){cluster, status, value};
}

static int compare_values(const void *left, const void *right)
{
    const labelled_value *a = left, *b = right;
    int order = strcmp(a->cluster, b->cluster);
    return order != 0 ? order : (a->status > b->status) - (a->status < b->status);
}

/* Sorts the list and sums entries with the same labels into the first. */
static void value_list_merge(value_list *list)
{
    if (list->count == 0)
        return;
    qsort(list->items, list->count, sizeof(*list->items), compare_values);
    size_t kept = 0;
    for (size_t i = 1; i < list->count; i++) {
        if (compare_values(&list->items[kept], &list->items[i]) == 0)
            list->items[kept].value += list->items[i].value;
        else
            list->items[++kept] = list->items[i];
    }
    list->count = kept + 1;
}

/* Appends a label value with Prometheus escaping (\\, \", \n). */
static void append_label(struct evbuffer *out, const char *text)
{
    for (const char *c = text; *c; c++) {
        if (*c == '\\' || *c == '"')
            evbuffer_add_printf(out, "\\%c", *c);
        else if (*c == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, c, 1);
    }
}

static void write_cluster_counter(struct evbuffer *out, const char *metric, const char *help,
                                  value_list *list)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", metric, help, metric);
    value_list_merge(list);
    for (size_t i = 0; i < list->count; i++) {
        evbuffer_add_printf(out, "%s{cluster=\"", metric);
        append_label(out, list->items[i].cluster);
        if (list->items[i].status != 0)
            evbuffer_add_printf(out, "\",code=\"%d\"} %" PRIu64 "\n", list->items[i].status,
                                list->items[i].value);
        else
            evbuffer_add_printf(out, "\"} %" PRIu64 "\n", list->items[i].value);
    }
}

int proxy_stats_write_prometheus(proxy_stats *stats, struct evbuffer *out)
{
    value_list requests = {0}, connect_failures = {0}, timeouts = {0};
    uint64_t local_replies[PROXY_REPLY_KIND_COUNT] = {0};
    uint64_t buckets[DURATION_BUCKETS + 1] = {0};
    uint64_t duration_sum_us = 0, downstream_total = 0, upstream_total = 0;
    uint64_t head_timeouts = 0, idle_timeouts = 0, fd_exhausted = 0;
    int64_t downstream_active = 0, upstream_active = 0;

    for (unsigned s = 0; s < stats->shard_count; s++) {
        proxy_stats_shard *shard = &stats->shards[s];
        pthread_mutex_lock(&shard->lock);
        for (proxy_cluster_stats *cluster = atomic_load(&shard->all); cluster != NULL;
             cluster = cluster->next_in_order) {
            for (int slot = 0; slot < STATUS_SLOTS; slot++) {
                int status =
                    atomic_load_explicit(&cluster->status_codes[slot], memory_order_acquire);
                if (status == 0)
                    break;
                value_list_add(&requests, cluster->name, status,
                               COUNTER_READ(cluster->status_counts[slot]));
            }
            uint64_t other = COUNTER_READ(cluster->other_status_count);
            if (other > 0)
                value_list_add(&requests, cluster->name, -1, other);
            if (cluster->name[0] != '\0') {
                value_list_add(&connect_failures, cluster->name, 0,
                               COUNTER_READ(cluster->connect_failures));
                value_list_add(&timeouts, cluster->name, 0, COUNTER_READ(cluster->timeouts));
            }
        }
        pthread_mutex_unlock(&shard->lock);
        for (int kind = 0; kind < PROXY_REPLY_KIND_COUNT; kind++)
            local_replies[kind] += COUNTER_READ(shard->local_replies[kind]);
        for (size_t b = 0; b <= DURATION_BUCKETS; b++)
            buckets[b] += COUNTER_READ(shard->duration_buckets[b]);
        duration_sum_us += COUNTER_READ(shard->duration_sum_us);
        downstream_active += COUNTER_READ(shard->downstream_active);
        downstream_total += COUNTER_READ(shard->downstream_total);
        upstream_active += COUNTER_READ(shard->upstream_active);
        upstream_total += COUNTER_READ(shard->upstream_total);
        head_timeouts += COUNTER_READ(shard->request_head_timeouts);
        idle_timeouts += COUNTER_READ(shard->idle_timeouts);
        fd_exhausted += COUNTER_READ(shard->accept_fd_exhausted);
    }
    int result = requests.failed || connect_failures.failed || timeouts.failed ? -1 : 0;
    if (result == 0) {
        write_cluster_counter(out, "atrium_proxy_requests_total",
                              "Responses sent downstream, by cluster (\"\" for local replies "
                              "without one) and status code (-1: codes beyond the tracked ones).",
                              &requests);
        write_cluster_counter(out, "atrium_proxy_upstream_connect_failures_total",
                              "Upstream connections that failed to open.", &connect_failures);
        write_cluster_counter(out, "atrium_proxy_upstream_timeouts_total",
                              "Requests that hit their route timeout.", &timeouts);
        evbuffer_add_printf(out, "# HELP atrium_proxy_local_replies_total Responses the proxy "
                                 "made itself, by reason.\n"
                                 "# TYPE atrium_proxy_local_replies_total counter\n");
        for (int kind = 0; kind < PROXY_REPLY_KIND_COUNT; kind++)
            evbuffer_add_printf(out,
                                "atrium_proxy_local_replies_total{reason=\"%s\"} %" PRIu64 "\n",
                                local_reply_names[kind], local_replies[kind]);
        evbuffer_add_printf(out, "# HELP atrium_proxy_request_duration_seconds From a request's "
                                 "head to its response's end.\n"
                                 "# TYPE atrium_proxy_request_duration_seconds histogram\n");
        uint64_t cumulative = 0;
        for (size_t b = 0; b < DURATION_BUCKETS; b++) {
            cumulative += buckets[b];
            evbuffer_add_printf(
                out, "atrium_proxy_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                (double)duration_bounds_us[b] / 1e6, cumulative);
        }
        cumulative += buckets[DURATION_BUCKETS];
        evbuffer_add_printf(out,
                            "atrium_proxy_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64
                            "\n"
                            "atrium_proxy_request_duration_seconds_sum %.6f\n"
                            "atrium_proxy_request_duration_seconds_count %" PRIu64 "\n",
                            cumulative, (double)duration_sum_us / 1e6, cumulative);
        evbuffer_add_printf(
            out,
            "# HELP atrium_proxy_downstream_connections_active Client connections open now.\n"
            "# TYPE atrium_proxy_downstream_connections_active gauge\n"
            "atrium_proxy_downstream_connections_active %" PRId64 "\n"
            "# HELP atrium_proxy_downstream_connections_total Client connections accepted.\n"
            "# TYPE atrium_proxy_downstream_connections_total counter\n"
            "atrium_proxy_downstream_connections_total %" PRIu64 "\n"
            "# HELP atrium_proxy_upstream_connections_active Upstream connections open now.\n"
            "# TYPE atrium_proxy_upstream_connections_active gauge\n"
            "atrium_proxy_upstream_connections_active %" PRId64 "\n"
            "# HELP atrium_proxy_upstream_connections_total Upstream connections opened.\n"
            "# TYPE atrium_proxy_upstream_connections_total counter\n"
            "atrium_proxy_upstream_connections_total %" PRIu64 "\n",
            downstream_active, downstream_total, upstream_active, upstream_total);
        evbuffer_add_printf(
            out,
            "# HELP atrium_proxy_downstream_request_head_timeouts_total Client connections "
            "answered 408 and closed because a request head did not arrive within the "
            "request-head timeout.\n"
            "# TYPE atrium_proxy_downstream_request_head_timeouts_total counter\n"
            "atrium_proxy_downstream_request_head_timeouts_total %" PRIu64 "\n"
            "# HELP atrium_proxy_downstream_idle_timeouts_total Client connections closed "
            "after the idle timeout without traffic.\n"
            "# TYPE atrium_proxy_downstream_idle_timeouts_total counter\n"
            "atrium_proxy_downstream_idle_timeouts_total %" PRIu64 "\n"
            "# HELP atrium_proxy_downstream_accept_fd_exhausted_total accept() calls that "
            "failed for want of file descriptors (the listeners then pause).\n"
            "# TYPE atrium_proxy_downstream_accept_fd_exhausted_total counter\n"
            "atrium_proxy_downstream_accept_fd_exhausted_total %" PRIu64 "\n",
            head_timeouts, idle_timeouts, fd_exhausted);
    }
    free(requests.items);
    free(connect_failures.items);
    free(timeouts.items);
    return result;
}

void proxy_stats_endpoint_counters(proxy_stats *stats, const char *cluster_name,
                                   const char *address, uint16_t port, proxy_endpoint_counters *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t hash = name_hash(cluster_name);
    for (unsigned s = 0; s < stats->shard_count; s++) {
        proxy_stats_shard *shard = &stats->shards[s];
        pthread_mutex_lock(&shard->lock);
        for (proxy_cluster_stats *cluster = atomic_load(&shard->all); cluster != NULL;
             cluster = cluster->next_in_order) {
            if (cluster->hash != hash || strcmp(cluster->name, cluster_name) != 0)
                continue;
            for (proxy_endpoint_stats *endpoint = atomic_load(&cluster->endpoints);
                 endpoint != NULL; endpoint = endpoint->next) {
                if (endpoint->port != port || strcmp(endpoint->address, address) != 0)
                    continue;
                out->requests += COUNTER_READ(endpoint->requests);
                out->failures += COUNTER_READ(endpoint->failures);
                out->connect_failures += COUNTER_READ(endpoint->connect_failures);
                out->active += COUNTER_READ(endpoint->active);
            }
        }
        pthread_mutex_unlock(&shard->lock);
    }
}
