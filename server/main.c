/*
 * main.c — atriumd, Atrium's control plane: reads its settings, takes the data
 * directory's lock, opens the store, starts the listeners, and runs until
 * SIGINT or SIGTERM, then stops them and closes the database.
 */
#include "admin_http.h"
#include "admin_token.h"
#include "ca_service.h"
#include "clock.h"
#include "file_limit.h"
#include "log.h"
#include "options.h"
#include "store.h"
#include "xds_server.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATABASE_FILE "atrium.db"
#define LOCK_FILE     "atriumd.lock"

/* Creates the data directory (mode 0700) when absent. */
static int ensure_data_dir(const char *path, char *error, size_t error_size)
{
    struct stat info;
    if (stat(path, &info) == 0) {
        if (!S_ISDIR(info.st_mode)) {
            snprintf(error, error_size, "data directory %s is not a directory", path);
            return -1;
        }
        return 0;
    }
    if (mkdir(path, 0700) != 0) {
        snprintf(error, error_size, "cannot create data directory %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Takes an exclusive lock on <data_dir>/atriumd.lock and writes our pid in
 * it. Returns the descriptor (held until exit), or -1 with a message. */
static int lock_data_dir(const char *data_dir, char *error, size_t error_size)
{
    char path[OPTIONS_TEXT_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", data_dir, LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(error, error_size, "cannot open lock file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[32] = "";
        ssize_t length = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[length > 0 ? length : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        snprintf(error, error_size,
                 "data directory %s is in use by another atriumd (pid %s); stop it or use "
                 "another --data-dir",
                 data_dir, holder[0] ? holder : "unknown");
        close(fd);
        return -1;
    }
    char pid[32];
    int length = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)length, 0) != length) {
        snprintf(error, error_size, "cannot write lock file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Maintenance, once a second on the main thread: the TTL reaper (endpoints
 * whose TTL passed without a heartbeat become unhealthy). */
#define MAINTENANCE_INTERVAL_MS 1000

/* What the main thread's callbacks work with. */
typedef struct daemon_parts {
    store *db;
    xds_server *xds;
    ca_service *authority;
    int64_t warned_at_ms;        /* of the last issuer-expiry warning */
    uint64_t disk_full_reported; /* store_disk_full_count() at the last report */
    const char *database_path;
} daemon_parts;

#define ISSUER_WARNING_MS (30LL * 24 * 3600 * 1000)
#define DAY_MS            (24LL * 3600 * 1000)

static void run_maintenance(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    daemon_parts *parts = context;
    int64_t now = clock_wall_ms();
    /* Disk full: one line per interval with the count, never one per refused write. */
    uint64_t disk_full = store_disk_full_count();
    if (disk_full != parts->disk_full_reported) {
        log_error("the disk holding %s is full (or --max-database-mb reached): %llu write%s "
                  "refused in the last second",
                  parts->database_path, (unsigned long long)(disk_full - parts->disk_full_reported),
                  disk_full - parts->disk_full_reported == 1 ? "" : "s");
        parts->disk_full_reported = disk_full;
    }
    if (parts->authority != NULL && now - parts->warned_at_ms > DAY_MS) {
        int64_t remaining = ca_service_issuer_not_after_ms(parts->authority) - now;
        if (remaining < ISSUER_WARNING_MS) {
            log_warn("the CA's issuing certificate expires in %lld days: rotate it "
                     "(atriumctl ca rotate)",
                     (long long)(remaining / DAY_MS));
            parts->warned_at_ms = now;
        }
    }
    size_t reaped = 0;
    int64_t revision = 0;
    store_error error;
    if (store_reap_expired_endpoints(parts->db, now, &reaped, &revision, &error) != STORE_OK)
        log_warn("TTL reaper: %s", error.message);
    else if (reaped > 0)
        log_info("TTL reaper: %zu endpoint%s missed heartbeats, now unhealthy (revision %lld)",
                 reaped, reaped == 1 ? "" : "s", (long long)revision);
}

static void notify_xds(void *context)
{
    xds_server_notify(context);
}

/* Registers the CA's method on the xDS server's gRPC server (TLS port). */
static void attach_authority(void *context, grpc_server *server)
{
    ca_service_attach(context, server);
}

/* An empty setting as "not given". */
static const char *or_null(const char *text)
{
    return text[0] != '\0' ? text : NULL;
}

/* The CA's trust bundle, for the xDS Secret ROOTCA. */
static char *trust_bundle(void *context)
{
    char error[256];
    return ca_service_bundle_pem(context, error, sizeof(error));
}

/* The xDS server's and the CA's metrics, for /metrics. */
static char *daemon_metrics(void *context)
{
    daemon_parts *parts = context;
    char *xds = parts->xds ? xds_server_metrics(parts->xds) : NULL;
    char *authority = parts->authority ? ca_service_metrics(parts->authority) : NULL;
    char *both = NULL;
    if (asprintf(&both,
                 "%s%s# HELP atrium_store_disk_full_total Writes SQLite refused because the disk "
                 "(or --max-database-mb) was full.\n"
                 "# TYPE atrium_store_disk_full_total counter\n"
                 "atrium_store_disk_full_total %llu\n",
                 xds ? xds : "", authority ? authority : "",
                 (unsigned long long)store_disk_full_count()) < 0)
        both = NULL;
    free(xds);
    free(authority);
    return both;
}

static void on_signal(evutil_socket_t signal_number, short events, void *context)
{
    (void)events;
    log_info("received %s, shutting down", strsignal((int)signal_number));
    event_base_loopbreak(context);
}

int main(int argc, char **argv)
{
    atriumd_options options;
    char error[2048];
    if (atriumd_options_parse(argc, argv, &options, error, sizeof(error)) != 0) {
        fprintf(stderr, "atriumd: %s\nTry 'atriumd --help'.\n", error);
        return 2;
    }
    if (options.show_help) {
        fputs(atriumd_options_usage(), stdout);
        return 0;
    }
    log_level level = LOG_LEVEL_INFO;
    log_level_parse(options.log_level, &level);
    log_init("atriumd", level);
    signal(SIGPIPE, SIG_IGN);
    log_info("open files: up to %lld", (long long)file_limit_raise());

    if (ensure_data_dir(options.data_dir, error, sizeof(error)) != 0) {
        log_error("%s", error);
        return 1;
    }
    int lock_fd = lock_data_dir(options.data_dir, error, sizeof(error));
    if (lock_fd < 0) {
        log_error("%s", error);
        return 1;
    }

    char database_path[OPTIONS_TEXT_MAX + 32];
    snprintf(database_path, sizeof(database_path), "%s/%s", options.data_dir, DATABASE_FILE);
    store_options store_settings = {.path = database_path,
                                    .synchronous_full = options.synchronous_full,
                                    .max_database_bytes = (int64_t)options.max_database_mb << 20};
    store *db = NULL;
    store_error store_failure = {0};
    if (store_open(&store_settings, &db, &store_failure) != STORE_OK) {
        log_error("cannot open the store: %s", store_failure.message);
        close(lock_fd);
        return 1;
    }
    int64_t revision = 0;
    store_revision(db, &revision, NULL);
    log_info("store %s open (schema %d, revision %lld, synchronous=%s)", database_path,
             store_schema_version(db), (long long)revision,
             options.synchronous_full ? "full" : "normal");

    char token[ADMIN_TOKEN_LENGTH + 1];
    bool token_created = false;
    if (admin_token_load_or_create(options.data_dir, token, &token_created, error, sizeof(error)) !=
        0) {
        log_error("admin token: %s", error);
        store_close(db);
        close(lock_fd);
        return 1;
    }
    log_info("admin token %s %s/%s (send it as Authorization: Bearer <token>)",
             token_created ? "created in" : "read from", options.data_dir, ADMIN_TOKEN_FILE);

    int exit_code = 0;
    struct event_base *base = event_base_new();
    struct event *sigint = base ? evsignal_new(base, SIGINT, on_signal, base) : NULL;
    struct event *sigterm = base ? evsignal_new(base, SIGTERM, on_signal, base) : NULL;
    daemon_parts parts = {db, NULL, NULL, 0, 0, database_path};
    struct event *maintenance =
        base ? event_new(base, -1, EV_PERSIST, run_maintenance, &parts) : NULL;
    struct timeval maintenance_interval = {MAINTENANCE_INTERVAL_MS / 1000,
                                           (MAINTENANCE_INTERVAL_MS % 1000) * 1000};
    admin_http *admin = NULL;
    uint16_t admin_port = 0;
    xds_server *xds = NULL;
    ca_service *authority = NULL;
    int xds_port = 0, tls_port = 0;
    xds_server_options xds_settings = {.address = options.xds_addr,
                                       .debounce_ms = options.xds_debounce_ms,
                                       .min_push_interval_ms = options.xds_push_interval_ms,
                                       .trust = trust_bundle,
                                       .tls_address = options.tls_addr,
                                       .trust_domain = options.trust_domain,
                                       .slow_consumer_ms = options.xds_slow_consumer_ms,
                                       .proxy_retention_ms = options.proxy_retention_ms,
                                       .max_proxy_rows = options.max_proxy_rows,
                                       .attach = attach_authority};
    /* Streams do not survive a restart: whatever the table says, nobody is connected. */
    store_error mark_error;
    store_mark_all_proxies_disconnected(db, clock_wall_ms(), &mark_error);
    if (sigint == NULL || sigterm == NULL || maintenance == NULL || event_add(sigint, NULL) != 0 ||
        event_add(sigterm, NULL) != 0 || event_add(maintenance, &maintenance_interval) != 0) {
        log_error("cannot set up signal handling and timers");
        exit_code = 1;
    } else if (ca_service_open(&(ca_service_options){options.data_dir, options.trust_domain,
                                                     or_null(options.ca_root_cert),
                                                     or_null(options.ca_root_key),
                                                     or_null(options.ca_issuer_cert),
                                                     or_null(options.ca_issuer_key)},
                               db, &authority, error, sizeof(error)) != 0) {
        log_error("certificate authority: %s", error);
        exit_code = 1;
    } else if ((xds_settings.trust_context = authority, xds_settings.attach_context = authority,
                xds_settings.tls_credentials = ca_service_credentials(authority),
                xds_server_start(&xds_settings, db, &xds, &xds_port, error, sizeof(error))) != 0) {
        log_error("xDS server: %s", error);
        exit_code = 1;
    } else if (ca_service_begin(authority, error, sizeof(error)) != 0) {
        log_error("certificate authority: %s", error);
        exit_code = 1;
    } else if ((parts.xds = xds, parts.authority = authority,
                admin_http_start(&(admin_http_options){options.rest_addr, token,
                                                       options.trust_domain, daemon_metrics, &parts,
                                                       authority},
                                 db, &admin, &admin_port, error, sizeof(error))) != 0) {
        log_error("admin REST API: %s", error);
        exit_code = 1;
    } else {
        store_set_commit_listener(db, notify_xds, xds);
        log_info("xDS (ADS, state of the world and delta, plaintext) listening on %.*s:%d",
                 (int)(strrchr(options.xds_addr, ':') - options.xds_addr), options.xds_addr,
                 xds_port);
        tls_port = xds_server_tls_port(xds);
        log_info("CA (CreateCertificate, TLS, trust domain %s) and xDS with client certificates "
                 "listening on %.*s:%d",
                 options.trust_domain, (int)(strrchr(options.tls_addr, ':') - options.tls_addr),
                 options.tls_addr, tls_port);
        log_info("admin REST API listening on %.*s:%u",
                 (int)(strrchr(options.rest_addr, ':') - options.rest_addr), options.rest_addr,
                 admin_port);
        log_info("ready (pid %ld, data directory %s)", (long)getpid(), options.data_dir);
        event_base_dispatch(base);
    }

    admin_http_stop(admin);
    store_set_commit_listener(db, NULL, NULL);
    xds_server_stop(xds);
    ca_service_stop(authority);
    store_mark_all_proxies_disconnected(db, clock_wall_ms(), &mark_error);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (maintenance)
        event_free(maintenance);
    if (base)
        event_base_free(base);
    store_close(db);
    log_info("stopped; database closed");
    close(lock_fd);
    return exit_code;
}
