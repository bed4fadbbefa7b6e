/*
 * admin_metrics.c — request counters and latency histograms for /metrics.
 * A few dozen (route, method) pairs exist, so entries live in small arrays
 * searched linearly.
 */
#include "admin_metrics.h"

#include <stdio.h>
#include <stdlib.h>

static const double bucket_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
#define BUCKET_COUNT (sizeof(bucket_bounds) / sizeof(bucket_bounds[0]))

typedef struct request_counter {
    const char *route;
    const char *method;
    int status;
    uint64_t count;
} request_counter;

typedef struct latency_histogram {
    const char *route;
    const char *method;
    uint64_t buckets[BUCKET_COUNT]; /* cumulative at render time, not here */
    uint64_t count;
    double sum;
} latency_histogram;

struct admin_metrics {
    request_counter *counters;
    size_t counter_count;
    latency_histogram *histograms;
    size_t histogram_count;
    size_t open_connections;
    size_t unauthenticated_connections;
    uint64_t connections_closed_for_limit;
    uint64_t accept_failures;
};

void admin_metrics_set_connections(admin_metrics *metrics, size_t open, size_t unauthenticated)
{
    metrics->open_connections = open;
    metrics->unauthenticated_connections = unauthenticated;
}

void admin_metrics_count_connection_closed_for_limit(admin_metrics *metrics)
{
    metrics->connections_closed_for_limit++;
}

void admin_metrics_count_accept_failure(admin_metrics *metrics)
{
    metrics->accept_failures++;
}

admin_metrics *admin_metrics_new(void)
{
    return calloc(1, sizeof(admin_metrics));
}

void admin_metrics_free(admin_metrics *metrics)
{
    if (metrics == NULL)
        return;
    free(metrics->counters);
    free(metrics->histograms);
    free(metrics);
}

void admin_metrics_record(admin_metrics *metrics, const char *route, const char *method, int status,
                          double seconds)
{
    request_counter *counter = NULL;
    for (size_t i = 0; i < metrics->counter_count && counter == NULL; i++) {
        request_counter *candidate = &metrics->counters[i];
        if (candidate->route == route && candidate->method == method && candidate->status == status)
            counter = candidate;
    }
    if (counter == NULL) {
        request_counter *grown =
            realloc(metrics->counters, (metrics->counter_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return;
        metrics->counters = grown;
        counter = &grown[metrics->counter_count++];
        *counter = (request_counter){route, method, status, 0};
    }
    counter->count++;

    latency_histogram *histogram = NULL;
    for (size_t i = 0; i < metrics->histogram_count && histogram == NULL; i++) {
        if (metrics->histograms[i].route == route && metrics->histograms[i].method == method)
            histogram = &metrics->histograms[i];
    }
    if (histogram == NULL) {
        latency_histogram *grown =
            realloc(metrics->histograms, (metrics->histogram_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return;
        metrics->histograms = grown;
        histogram = &grown[metrics->histogram_count++];
        *histogram = (latency_histogram){.route = route, .method = method};
    }
    for (size_t b = 0; b < BUCKET_COUNT; b++) {
        if (seconds <= bucket_bounds[b]) {
            histogram->buckets[b]++;
            break;
        }
    }
    histogram->count++;
    histogram->sum += seconds;
}

char *admin_metrics_render(const admin_metrics *metrics, int64_t store_revision)
{
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (out == NULL)
        return NULL;
    fprintf(out,
            "# HELP atrium_store_revision The store's current revision.\n"
            "# TYPE atrium_store_revision gauge\n"
            "atrium_store_revision %lld\n",
            (long long)store_revision);
    fprintf(out,
            "# HELP atrium_rest_connections Open admin API connections, by whether one of their "
            "requests presented the token.\n"
            "# TYPE atrium_rest_connections gauge\n"
            "atrium_rest_connections{authenticated=\"true\"} %zu\n"
            "atrium_rest_connections{authenticated=\"false\"} %zu\n"
            "# HELP atrium_rest_connections_closed_for_limit_total Unauthenticated admin API "
            "connections closed to admit newer ones.\n"
            "# TYPE atrium_rest_connections_closed_for_limit_total counter\n"
            "atrium_rest_connections_closed_for_limit_total %llu\n"
            "# HELP atrium_rest_accept_failures_total accept() failures of the admin API listener "
            "(out of file descriptors or memory); each paused it briefly.\n"
            "# TYPE atrium_rest_accept_failures_total counter\n"
            "atrium_rest_accept_failures_total %llu\n",
            metrics->open_connections - metrics->unauthenticated_connections,
            metrics->unauthenticated_connections,
            (unsigned long long)metrics->connections_closed_for_limit,
            (unsigned long long)metrics->accept_failures);
    fprintf(out, "# HELP atrium_rest_requests_total Admin API requests by route, method and "
                 "status code.\n"
                 "# TYPE atrium_rest_requests_total counter\n");
    for (size_t i = 0; i < metrics->counter_count; i++) {
        const request_counter *counter = &metrics->counters[i];
        fprintf(out, "atrium_rest_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} %llu\n",
                counter->route, counter->method, counter->status,
                (unsigned long long)counter->count);
    }
    fprintf(out, "# HELP atrium_rest_request_duration_seconds Admin API request latency.\n"
                 "# TYPE atrium_rest_request_duration_seconds histogram\n");
    for (size_t i = 0; i < metrics->histogram_count; i++) {
        const latency_histogram *histogram = &metrics->histograms[i];
        uint64_t cumulative = 0;
        for (size_t b = 0; b < BUCKET_COUNT; b++) {
            cumulative += histogram->buckets[b];
            fprintf(out,
                    "atrium_rest_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                    "le=\"%g\"} %llu\n",
                    histogram->route, histogram->method, bucket_bounds[b],
                    (unsigned long long)cumulative);
        }
        fprintf(out,
                "atrium_rest_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                "le=\"+Inf\"} %llu\n"
                "atrium_rest_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.6f\n"
                "atrium_rest_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %llu\n",
                histogram->route, histogram->method, (unsigned long long)histogram->count,
                histogram->route, histogram->method, histogram->sum, histogram->route,
                histogram->method, (unsigned long long)histogram->count);
    }
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
