/*
 * main.c — atrium-proxy: parses its settings, starts the data path, the
 * admin port and the delta xDS client, then waits for SIGINT or SIGTERM and
 * stops them in reverse order.
 */
#include "data_path.h"
#include "file_limit.h"
#include "log.h"
#include "proxy_admin.h"
#include "proxy_options.h"
#include "proxy_stats.h"
#include "xds_client.h"

#include <event2/thread.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct proxy_runtime {
    data_path *path;
    /* Set by main once the client started; read by the admin thread, which is
     * stopped before the client is. */
    _Atomic(xds_client *) client;
} proxy_runtime;

/* xDS client thread: a snapshot was accepted (or loaded from saved state). */
static void apply_config(proxy_config *config, void *context)
{
    proxy_runtime *runtime = context;
    size_t clusters = config->cluster_count, listeners = config->listener_count;
    uint64_t generation = config->generation;
    data_path_apply(runtime->path, config);
    log_info("applied configuration %llu: %zu listeners, %zu clusters",
             (unsigned long long)generation, listeners, clusters);
}

/* xDS client thread: before a snapshot is ACKed, its listeners must bind. */
static int check_config(const proxy_config *config, void *context, char *error, size_t error_size)
{
    proxy_runtime *runtime = context;
    return data_path_check_listeners(runtime->path, config, error, error_size);
}

/* A worker could not open listeners of the applied configuration (bound
 * moments before by check_config: another process took the port since). */
static void listener_failure(const char *reason, void *context)
{
    (void)context;
    log_error("listeners not opened: %s", reason);
}

static proxy_config *current_config(void *context)
{
    proxy_runtime *runtime = context;
    return data_path_current(runtime->path);
}

static void release_config(void *context, proxy_config *config)
{
    (void)context;
    proxy_config_release(config);
}

static void xds_status(void *context, xds_client_status *out)
{
    proxy_runtime *runtime = context;
    xds_client *client = atomic_load(&runtime->client);
    if (client != NULL)
        xds_client_get_status(client, out);
    else
        memset(out, 0, sizeof(*out));
}

int main(int argc, char **argv)
{
    proxy_options options;
    char error[1024];
    if (proxy_options_parse(argc, argv, &options, error, sizeof(error)) != 0) {
        fprintf(stderr, "atrium-proxy: %s\n", error);
        return 2;
    }
    if (options.show_help) {
        fputs(proxy_options_usage(), stdout);
        return 0;
    }
    log_level level = LOG_LEVEL_INFO;
    log_level_parse(options.log_level, &level);
    log_init("atrium-proxy", level);
    log_info("open files: up to %lld", (long long)file_limit_raise());

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();

    int status = 1;
    proxy_runtime runtime = {0};
    proxy_admin *admin = NULL;
    proxy_stats *stats = proxy_stats_new(options.workers);
    if (stats == NULL) {
        log_error("out of memory");
        return 1;
    }
    data_path_limits limits = {options.request_head_timeout_ms, options.idle_timeout_ms};
    runtime.path = data_path_start(options.workers, &limits, stats, listener_failure, NULL, error,
                                   sizeof(error));
    if (runtime.path == NULL) {
        log_error("data path: %s", error);
        goto done;
    }
    proxy_admin_sources sources = {stats, current_config, release_config, xds_status, &runtime};
    admin =
        proxy_admin_start(options.admin_host, options.admin_port, &sources, error, sizeof(error));
    if (admin == NULL) {
        log_error("admin port %s:%u: %s", options.admin_host, options.admin_port, error);
        goto done;
    }
    xds_client_options client_options = {
        .target = options.xds,
        .node_id = options.node_id,
        .service = options.service,
        .namespace_name = options.namespace_name,
        .app_port = options.app_port,
        .inbound_port = options.inbound_port,
        .outbound_port = options.outbound_port,
        .state_dir = options.state_dir[0] ? options.state_dir : NULL,
        .check = check_config,
    };
    xds_client *client =
        xds_client_start(&client_options, apply_config, &runtime, error, sizeof(error));
    if (client == NULL) {
        log_error("xds: %s", error);
        goto done;
    }
    atomic_store(&runtime.client, client);
    xds_client_status client_status;
    xds_client_get_status(client, &client_status);
    if (client_status.saved_state_refused[0] != '\0')
        log_warn("%s; waiting for atriumd at %s", client_status.saved_state_refused, options.xds);
    if (client_status.serving_saved_state)
        log_warn("serving the configuration saved in %s until atriumd at %s answers",
                 options.state_dir, options.xds);
    log_info("ready: node %s, service %s.%s, admin %s:%u, xds %s, %u worker%s", options.node_id,
             options.service, options.namespace_name, options.admin_host, proxy_admin_port(admin),
             options.xds, options.workers, options.workers == 1 ? "" : "s");

    int received = 0;
    sigwait(&stop_signals, &received);
    log_info("stopping on %s", received == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
done:
    proxy_admin_stop(admin); /* first: its thread reads the client's status */
    xds_client_stop(atomic_exchange(&runtime.client, NULL));
    data_path_stop(runtime.path);
    proxy_stats_free(stats);
    return status;
}
