/*
 * store.c — Atrium's state in SQLite: schema and migrations, connections and
 * cached statements, typed accessors, and the change log. See store.h.
 *
 * Concurrency: one writer connection guarded by write_lock; readers borrow a
 * connection from a small pool (opened on demand), so reads never wait for
 * a writer (WAL). The store revision is kept in store_meta and mirrored in
 * memory; it is allocated lazily inside a write transaction, the first time
 * the transaction logs a change, so a transaction that changes nothing
 * visible (a reap that found nothing, a heartbeat) does not advance it.
 */
#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define READER_POOL_MAX 8

/* ---- schema ----
 * CHECK constraints list allowed values with OR, not IN (...): SQLite compiles
 * an IN list of three or more into an ephemeral table built on every insert,
 * which cost a third of the endpoint upsert's time. */

/* migrations[i] brings a database from user_version i to i + 1. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* 1: the mesh configuration and its change log. */
    "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO store_meta (key, value) VALUES ('compacted_through', 0);"
    "CREATE TABLE services ("
    "  name TEXT PRIMARY KEY,"
    "  namespace TEXT NOT NULL,"
    "  protocol TEXT NOT NULL CHECK (protocol = 'http' OR protocol = 'grpc' OR protocol = 'tcp'),"
    "  lb_policy TEXT NOT NULL CHECK (lb_policy = 'round_robin' OR lb_policy = 'least_request'"
    "    OR lb_policy = 'random' OR lb_policy = 'ring_hash'),"
    "  connect_timeout_ms INTEGER NOT NULL CHECK (connect_timeout_ms BETWEEN 1 AND 60000),"
    "  outlier_consecutive_5xx INTEGER,"
    "  outlier_interval_ms INTEGER,"
    "  outlier_base_ejection_time_ms INTEGER,"
    "  outlier_max_ejection_percent INTEGER,"
    "  breaker_max_connections INTEGER,"
    "  breaker_max_pending_requests INTEGER,"
    "  breaker_max_requests INTEGER,"
    "  breaker_max_retries INTEGER,"
    "  dependencies TEXT," /* JSON array of names; NULL: may call every service */
    "  revision INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE endpoints ("
    "  service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,"
    "  id TEXT NOT NULL,"
    "  address TEXT NOT NULL,"
    "  port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),"
    "  weight INTEGER NOT NULL CHECK (weight BETWEEN 1 AND 128),"
    "  labels TEXT NOT NULL," /* JSON object */
    "  zone TEXT NOT NULL,"
    "  health TEXT NOT NULL"
    "    CHECK (health = 'healthy' OR health = 'unhealthy' OR health = 'draining'),"
    "  ttl_s INTEGER NOT NULL CHECK (ttl_s >= 0),"
    "  expires_at_ms INTEGER NOT NULL,"
    "  expired INTEGER NOT NULL DEFAULT 0," /* 1: made unhealthy by the reaper */
    "  proxy_port INTEGER NOT NULL CHECK (proxy_port BETWEEN 0 AND 65535),"
    "  revision INTEGER NOT NULL,"
    "  PRIMARY KEY (service, id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX endpoints_by_expiry ON endpoints (expires_at_ms) WHERE ttl_s > 0;"
    "CREATE TABLE routes ("
    "  service TEXT PRIMARY KEY REFERENCES services (name) ON DELETE CASCADE,"
    "  document TEXT NOT NULL," /* model_routes_to_json */
    "  revision INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE policies ("
    "  service TEXT PRIMARY KEY REFERENCES services (name) ON DELETE CASCADE,"
    "  document TEXT NOT NULL," /* model_policy_to_json */
    "  revision INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    /* One row per changed entity; position orders the rows of one revision.
     * The current revision is the highest logged (or compacted) one. */
    "CREATE TABLE change_log ("
    "  revision INTEGER NOT NULL,"
    "  position INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  op TEXT NOT NULL CHECK (op = 'put' OR op = 'delete'),"
    "  PRIMARY KEY (revision, position)"
    ") WITHOUT ROWID;",

    /* 2: identity (join tokens, issued certificates) and proxy status. */
    "CREATE TABLE join_tokens ("
    "  id TEXT PRIMARY KEY,"
    "  service TEXT NOT NULL,"
    "  namespace TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),"
    "  created_at_ms INTEGER NOT NULL,"
    "  expires_at_ms INTEGER NOT NULL,"
    "  uses_allowed INTEGER NOT NULL CHECK (uses_allowed >= 1),"
    "  uses INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE TABLE certificates ("
    "  serial TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  not_before_ms INTEGER NOT NULL,"
    "  not_after_ms INTEGER NOT NULL CHECK (not_after_ms > not_before_ms),"
    "  revoked_at_ms INTEGER"
    ") WITHOUT ROWID;"
    "CREATE INDEX certificates_by_identity ON certificates (identity, not_before_ms);"
    "CREATE TABLE proxies ("
    "  node_id TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  service TEXT NOT NULL,"
    "  namespace TEXT NOT NULL,"
    "  connected INTEGER NOT NULL,"
    "  connected_since_ms INTEGER NOT NULL,"
    "  last_seen_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE proxy_type_status ("
    "  node_id TEXT NOT NULL REFERENCES proxies (node_id) ON DELETE CASCADE,"
    "  type_url TEXT NOT NULL,"
    "  acked_version TEXT,"
    "  acked_at_ms INTEGER NOT NULL DEFAULT 0,"
    "  nacked_version TEXT,"
    "  nack_message TEXT,"
    "  nacked_at_ms INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (node_id, type_url)"
    ") WITHOUT ROWID;",

    /* 3: the xDS variant of each proxy's stream and what was last sent per type. */
    "ALTER TABLE proxies ADD COLUMN protocol TEXT NOT NULL DEFAULT '';" /* 'sotw' or 'delta' */
    "ALTER TABLE proxy_type_status ADD COLUMN sent_version TEXT;"
    "ALTER TABLE proxy_type_status ADD COLUMN sent_at_ms INTEGER NOT NULL DEFAULT 0;",
};

/* ---- statements, prepared once per connection ---- */

typedef enum statement_id {
    SQL_BEGIN,
    SQL_COMMIT,
    SQL_ROLLBACK,
    SQL_SAVEPOINT,
    SQL_ROLLBACK_TO_SAVEPOINT,
    SQL_RELEASE_SAVEPOINT,
    SQL_LAST_REVISION,
    SQL_META_GET,
    SQL_LOG_CHANGE,
    SQL_SERVICE_REVISION,
    SQL_SERVICE_UPSERT,
    SQL_SERVICE_GET,
    SQL_SERVICE_LIST,
    SQL_SERVICE_DELETE,
    SQL_ENDPOINT_REVISION,
    SQL_ENDPOINT_UPSERT,
    SQL_ENDPOINT_GET,
    SQL_ENDPOINT_LIST,
    SQL_ENDPOINT_LIST_ALL,
    SQL_ENDPOINT_IDS,
    SQL_ENDPOINT_DELETE,
    SQL_ENDPOINT_DELETE_ALL,
    SQL_ENDPOINT_TTL_GET,
    SQL_ENDPOINT_HEARTBEAT,
    SQL_ENDPOINT_SET_HEALTH,
    SQL_ENDPOINT_REAP,
    SQL_ROUTES_REVISION,
    SQL_ROUTES_UPSERT,
    SQL_ROUTES_GET,
    SQL_ROUTES_DELETE,
    SQL_POLICY_REVISION,
    SQL_POLICY_UPSERT,
    SQL_POLICY_GET,
    SQL_POLICY_DELETE,
    SQL_TOKEN_INSERT,
    SQL_TOKEN_LIST,
    SQL_TOKEN_DELETE,
    SQL_TOKEN_BY_HASH,
    SQL_TOKEN_USE,
    SQL_CERT_INSERT,
    SQL_CERT_LIST,
    SQL_CERT_LIST_IDENTITY,
    SQL_CERT_REVOKED_AT,
    SQL_CERT_REVOKE,
    SQL_CERT_LIST_REVOKED,
    SQL_PROXY_CONNECTED,
    SQL_PROXY_DISCONNECTED,
    SQL_PROXY_SEEN,
    SQL_PROXY_ACKED,
    SQL_PROXY_NACKED,
    SQL_PROXY_SAVE,
    SQL_PROXY_TYPE_SAVE,
    SQL_PROXY_DISCONNECT_ALL,
    SQL_PROXY_LIST,
    SQL_PROXY_PRUNE_AGE,
    SQL_PROXY_PRUNE_COUNT,
    SQL_CHANGES_SINCE,
    SQL_CHANGES_COMPACT,
    SQL_SET_COMPACTED,
    STATEMENT_COUNT
} statement_id;

#define SERVICE_COLUMNS                                                                            \
    "name, namespace, protocol, lb_policy, connect_timeout_ms, outlier_consecutive_5xx, "          \
    "outlier_interval_ms, outlier_base_ejection_time_ms, outlier_max_ejection_percent, "           \
    "breaker_max_connections, breaker_max_pending_requests, breaker_max_requests, "                \
    "breaker_max_retries, dependencies, revision"
#define ENDPOINT_COLUMNS                                                                           \
    "service, id, address, port, weight, labels, zone, health, ttl_s, expires_at_ms, proxy_port, " \
    "revision"
#define TOKEN_COLUMNS                                                                              \
    "id, service, namespace, hash, created_at_ms, expires_at_ms, uses_allowed, uses"
#define CERT_COLUMNS "serial, identity, not_before_ms, not_after_ms, revoked_at_ms"

static const char *const statement_sql[STATEMENT_COUNT] = {
    [SQL_BEGIN] = "BEGIN IMMEDIATE",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_SAVEPOINT] = "SAVEPOINT one_record",
    [SQL_ROLLBACK_TO_SAVEPOINT] = "ROLLBACK TO one_record",
    [SQL_RELEASE_SAVEPOINT] = "RELEASE one_record",
    [SQL_LAST_REVISION] = "SELECT max(revision) FROM change_log",
    [SQL_META_GET] = "SELECT value FROM store_meta WHERE key = ?1",
    [SQL_LOG_CHANGE] = "INSERT INTO change_log (revision, position, kind, key, op) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
    [SQL_SERVICE_REVISION] = "SELECT revision FROM services WHERE name = ?1",
    [SQL_SERVICE_UPSERT] =
        "INSERT INTO services (" SERVICE_COLUMNS ") VALUES "
        "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
        "ON CONFLICT (name) DO UPDATE SET namespace = ?2, protocol = ?3, lb_policy = ?4, "
        "connect_timeout_ms = ?5, outlier_consecutive_5xx = ?6, outlier_interval_ms = ?7, "
        "outlier_base_ejection_time_ms = ?8, outlier_max_ejection_percent = ?9, "
        "breaker_max_connections = ?10, breaker_max_pending_requests = ?11, "
        "breaker_max_requests = ?12, breaker_max_retries = ?13, dependencies = ?14, "
        "revision = ?15",
    [SQL_SERVICE_GET] = "SELECT " SERVICE_COLUMNS " FROM services WHERE name = ?1",
    [SQL_SERVICE_LIST] = "SELECT " SERVICE_COLUMNS " FROM services ORDER BY name",
    [SQL_SERVICE_DELETE] = "DELETE FROM services WHERE name = ?1",
    [SQL_ENDPOINT_REVISION] = "SELECT revision FROM endpoints WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_UPSERT] =
        "INSERT INTO endpoints (" ENDPOINT_COLUMNS ") VALUES "
        "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
        "ON CONFLICT (service, id) DO UPDATE SET address = ?3, port = ?4, weight = ?5, "
        "labels = ?6, zone = ?7, health = ?8, ttl_s = ?9, expires_at_ms = ?10, expired = 0, "
        "proxy_port = ?11, revision = ?12",
    [SQL_ENDPOINT_GET] =
        "SELECT " ENDPOINT_COLUMNS " FROM endpoints WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_LIST] =
        "SELECT " ENDPOINT_COLUMNS " FROM endpoints WHERE service = ?1 ORDER BY id",
    [SQL_ENDPOINT_LIST_ALL] = "SELECT " ENDPOINT_COLUMNS " FROM endpoints ORDER BY service, id",
    [SQL_ENDPOINT_IDS] = "SELECT id FROM endpoints WHERE service = ?1 ORDER BY id",
    [SQL_ENDPOINT_DELETE] = "DELETE FROM endpoints WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_DELETE_ALL] = "DELETE FROM endpoints WHERE service = ?1",
    [SQL_ENDPOINT_TTL_GET] = "SELECT ttl_s, expired FROM endpoints WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_HEARTBEAT] =
        "UPDATE endpoints SET expires_at_ms = ?3 + ttl_s * 1000, "
        "health = CASE WHEN expired THEN 'healthy' ELSE health END, "
        "revision = CASE WHEN expired THEN ?4 ELSE revision END, expired = 0 "
        "WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_SET_HEALTH] = "UPDATE endpoints SET health = ?3, expired = 0, revision = ?4 "
                                "WHERE service = ?1 AND id = ?2",
    [SQL_ENDPOINT_REAP] =
        "UPDATE endpoints SET health = 'unhealthy', expired = 1, revision = ?2 "
        "WHERE ttl_s > 0 AND expires_at_ms < ?1 AND health = 'healthy' RETURNING service, id",
    [SQL_ROUTES_REVISION] = "SELECT revision FROM routes WHERE service = ?1",
    [SQL_POLICY_REVISION] = "SELECT revision FROM policies WHERE service = ?1",
    [SQL_ROUTES_UPSERT] = "INSERT INTO routes (service, document, revision) VALUES (?1, ?2, ?3) "
                          "ON CONFLICT (service) DO UPDATE SET document = ?2, revision = ?3",
    [SQL_ROUTES_GET] = "SELECT document, revision FROM routes WHERE service = ?1",
    [SQL_ROUTES_DELETE] = "DELETE FROM routes WHERE service = ?1",
    [SQL_POLICY_UPSERT] = "INSERT INTO policies (service, document, revision) VALUES (?1, ?2, ?3) "
                          "ON CONFLICT (service) DO UPDATE SET document = ?2, revision = ?3",
    [SQL_POLICY_GET] = "SELECT document, revision FROM policies WHERE service = ?1",
    [SQL_POLICY_DELETE] = "DELETE FROM policies WHERE service = ?1",
    [SQL_TOKEN_INSERT] = "INSERT INTO join_tokens (" TOKEN_COLUMNS ") VALUES "
                         "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [SQL_TOKEN_LIST] = "SELECT " TOKEN_COLUMNS " FROM join_tokens ORDER BY created_at_ms, id",
    [SQL_TOKEN_DELETE] = "DELETE FROM join_tokens WHERE id = ?1",
    [SQL_TOKEN_BY_HASH] = "SELECT " TOKEN_COLUMNS " FROM join_tokens WHERE hash = ?1",
    [SQL_TOKEN_USE] = "UPDATE join_tokens SET uses = uses + 1 WHERE id = ?1",
    [SQL_CERT_INSERT] = "INSERT INTO certificates (" CERT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5)",
    [SQL_CERT_LIST] = "SELECT " CERT_COLUMNS " FROM certificates ORDER BY not_before_ms, serial",
    [SQL_CERT_LIST_IDENTITY] = "SELECT " CERT_COLUMNS " FROM certificates WHERE identity = ?1 "
                               "ORDER BY not_before_ms, serial",
    [SQL_CERT_REVOKED_AT] = "SELECT revoked_at_ms FROM certificates WHERE serial = ?1",
    [SQL_CERT_REVOKE] = "UPDATE certificates SET revoked_at_ms = ?2 WHERE serial = ?1",
    [SQL_CERT_LIST_REVOKED] =
        "SELECT " CERT_COLUMNS " FROM certificates WHERE revoked_at_ms IS NOT NULL "
        "AND not_after_ms > ?1 ORDER BY serial",
    [SQL_PROXY_CONNECTED] =
        "INSERT INTO proxies (node_id, identity, service, namespace, connected, "
        "connected_since_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5) "
        "ON CONFLICT (node_id) DO UPDATE SET identity = ?2, service = ?3, namespace = ?4, "
        "connected = 1, connected_since_ms = ?5, last_seen_ms = ?5",
    [SQL_PROXY_DISCONNECTED] =
        "UPDATE proxies SET connected = 0, last_seen_ms = ?2 WHERE node_id = ?1",
    [SQL_PROXY_SEEN] = "UPDATE proxies SET last_seen_ms = ?2 WHERE node_id = ?1",
    [SQL_PROXY_ACKED] =
        "INSERT INTO proxy_type_status (node_id, type_url, acked_version, acked_at_ms) "
        "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_id, type_url) DO UPDATE SET "
        "acked_version = ?3, acked_at_ms = ?4, nacked_version = NULL, nack_message = NULL, "
        "nacked_at_ms = 0",
    [SQL_PROXY_NACKED] =
        "INSERT INTO proxy_type_status (node_id, type_url, nacked_version, nack_message, "
        "nacked_at_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node_id, type_url) DO UPDATE "
        "SET nacked_version = ?3, nack_message = ?4, nacked_at_ms = ?5",
    [SQL_PROXY_SAVE] =
        "INSERT INTO proxies (node_id, identity, service, namespace, protocol, connected, "
        "connected_since_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (node_id) DO UPDATE SET identity = ?2, service = ?3, namespace = ?4, "
        "protocol = ?5, connected = ?6, connected_since_ms = ?7, last_seen_ms = ?8",
    [SQL_PROXY_TYPE_SAVE] =
        "INSERT INTO proxy_type_status (node_id, type_url, sent_version, sent_at_ms, "
        "acked_version, acked_at_ms, nacked_version, nack_message, nacked_at_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (node_id, type_url) DO UPDATE "
        "SET sent_version = ?3, sent_at_ms = ?4, acked_version = ?5, acked_at_ms = ?6, "
        "nacked_version = ?7, nack_message = ?8, nacked_at_ms = ?9",
    [SQL_PROXY_DISCONNECT_ALL] =
        "UPDATE proxies SET connected = 0, last_seen_ms = ?1 WHERE connected != 0",
    [SQL_PROXY_LIST] =
        "SELECT p.node_id, p.identity, p.service, p.namespace, p.protocol, p.connected, "
        "p.connected_since_ms, p.last_seen_ms, s.type_url, s.sent_version, s.sent_at_ms, "
        "s.acked_version, s.acked_at_ms, s.nacked_version, s.nack_message, s.nacked_at_ms "
        "FROM proxies p LEFT JOIN proxy_type_status s ON s.node_id = p.node_id "
        "WHERE p.last_seen_ms >= ?1 ORDER BY p.node_id, s.type_url",
    [SQL_PROXY_PRUNE_AGE] = "DELETE FROM proxies WHERE connected = 0 AND last_seen_ms < ?1",
    [SQL_PROXY_PRUNE_COUNT] =
        "DELETE FROM proxies WHERE node_id IN (SELECT node_id FROM proxies "
        "ORDER BY connected DESC, last_seen_ms DESC, node_id LIMIT -1 OFFSET ?1)",
    [SQL_CHANGES_SINCE] = "SELECT revision, kind, key, op FROM change_log WHERE revision > ?1 "
                          "AND revision <= ?2 ORDER BY revision, position",
    [SQL_CHANGES_COMPACT] = "DELETE FROM change_log WHERE revision <= ?1",
    [SQL_SET_COMPACTED] = "UPDATE store_meta SET value = max(value, ?1) "
                          "WHERE key = 'compacted_through'",
};

typedef struct connection {
    sqlite3 *handle;
    sqlite3_stmt *statements[STATEMENT_COUNT];
} connection;

struct store {
    char *path;
    int busy_timeout_ms;
    bool synchronous_full;
    int64_t max_database_bytes; /* 0: no cap */
    int schema_version;

    pthread_mutex_t write_lock;
    connection writer;
    int64_t transaction_revision; /* 0 until the open transaction logs a change */
    int64_t transaction_position; /* change-log rows written by the open transaction */

    pthread_mutex_t pool_lock;

    /* The checkpointer thread and its connection (see checkpoints). */
    connection checkpointer;
    pthread_t checkpoint_thread;
    bool checkpoint_running; /* set before the writer commits anything else */
    pthread_mutex_t checkpoint_lock;
    pthread_cond_t checkpoint_signal;
    pthread_mutex_t checkpoint_run_lock; /* held while either side runs a checkpoint */
    bool checkpoint_wanted, checkpoint_stopping;
    _Atomic int wal_frames_copied; /* by the last checkpoint */
    int wal_frames_seen;           /* by the last commit; guarded by write_lock */

    /* Certificate records waiting for a group commit (see below). */
    pthread_mutex_t group_lock;
    pthread_cond_t group_finished;
    struct certificate_request *group_head, *group_tail;
    bool group_committing;

    store_commit_listener commit_listener; /* guarded by write_lock */
    void *commit_listener_context;
    connection *idle_readers[READER_POOL_MAX];
    size_t idle_reader_count;

    _Atomic int64_t revision; /* last committed revision */
};

/* ---- errors ---- */

const char *store_status_name(store_status status)
{
    static const char *const names[] = {"ok",   "not_found", "conflict",           "invalid",
                                        "busy", "io",        "precondition_failed"};
    return (unsigned)status <= STORE_PRECONDITION_FAILED ? names[status] : "unknown";
}

__attribute__((format(printf, 4, 5))) static store_status
set_error(store_error *error, store_status status, const char *field, const char *format, ...)
{
    if (error == NULL)
        return status;
    error->status = status;
    snprintf(error->field, sizeof(error->field), "%s", field ? field : "");
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error->message, sizeof(error->message), format, arguments);
    va_end(arguments);
    return status;
}

static store_status invalid_from_model(store_error *error, const model_error *model)
{
    return set_error(error, STORE_INVALID, model->field, "%s", model->message);
}

/* Writes refused with SQLITE_FULL, process-wide (store_disk_full_count). */
static _Atomic uint64_t disk_full_count;

uint64_t store_disk_full_count(void)
{
    return atomic_load(&disk_full_count);
}

/* Maps an SQLite result code to a status and describes it. */
static store_status sqlite_failure(store_error *error, sqlite3 *handle, int code, const char *what)
{
    store_status status;
    if ((code & 0xff) == SQLITE_FULL)
        atomic_fetch_add(&disk_full_count, 1);
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        status = STORE_BUSY;
        break;
    case SQLITE_CONSTRAINT:
        status = code == SQLITE_CONSTRAINT_FOREIGNKEY ? STORE_NOT_FOUND
                 : code == SQLITE_CONSTRAINT_CHECK    ? STORE_INVALID
                                                      : STORE_CONFLICT;
        break;
    default:
        status = STORE_IO;
    }
    return set_error(error, status, NULL, "%s: %s", what,
                     handle ? sqlite3_errmsg(handle) : sqlite3_errstr(code));
}

/* ---- connections ---- */

static sqlite3_stmt *statement(connection *conn, statement_id id, store_error *error)
{
    if (conn->statements[id] == NULL) {
        int code = sqlite3_prepare_v3(conn->handle, statement_sql[id], -1,
                                      SQLITE_PREPARE_PERSISTENT, &conn->statements[id], NULL);
        if (code != SQLITE_OK || conn->statements[id] == NULL) {
            sqlite_failure(error, conn->handle, code != SQLITE_OK ? code : SQLITE_ERROR,
                           "preparing a statement");
            return NULL;
        }
    }
    return conn->statements[id];
}

/* Resets a statement for its next use and drops its bindings. */
static void finish(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

static void connection_close(connection *conn)
{
    for (int i = 0; i < STATEMENT_COUNT; i++)
        sqlite3_finalize(conn->statements[i]);
    sqlite3_close(conn->handle);
    memset(conn, 0, sizeof(*conn));
}

/* ---- checkpoints ---- */

/* SQLite's default is to checkpoint inside the commit that takes the WAL past
 * 1,000 pages: that commit copies the pages into the database file and waits
 * for two fsyncs, with the write lock held, so every writer behind it waits
 * too (a few milliseconds, a dozen times a second under a stream of
 * certificate records). Here a commit that leaves 1,000 frames not yet copied
 * only signals, and a thread of the store runs a PASSIVE checkpoint on its
 * own connection while writers go on appending. Such a checkpoint stops at
 * the WAL's end as it was when it began, and the WAL starts over only after
 * a checkpoint that reached its end, which steady writes never allow: so the
 * commit that takes the WAL past CHECKPOINT_RESTART_FRAMES checkpoints
 * itself, as SQLite would, copying the few frames the thread has not, and
 * the next write starts the WAL over. The WAL stays under ~16 MiB and the
 * commits that wait on a checkpoint are a quarter as many and shorter. */
#define CHECKPOINT_PAGES          1000
#define CHECKPOINT_RESTART_FRAMES 4000

/* sqlite3_wal_hook on the writer: after each commit, with the number of
 * frames in the WAL. Runs under the write lock. */
static int wal_committed(void *context, sqlite3 *handle, const char *name, int frames)
{
    store *db = context;
    if (frames < db->wal_frames_seen) /* the WAL started over */
        atomic_store(&db->wal_frames_copied, 0);
    db->wal_frames_seen = frames;
    int copied = atomic_load(&db->wal_frames_copied);
    int pending = frames >= copied ? frames - copied : frames;
    if (!db->checkpoint_running) {
        if (frames >= CHECKPOINT_PAGES)
            sqlite3_wal_checkpoint_v2(handle, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= CHECKPOINT_RESTART_FRAMES) {
        /* Wait for a background checkpoint in progress: against it this one would
         * fail at once (SQLITE_BUSY) and the WAL would keep growing meanwhile. */
        pthread_mutex_lock(&db->checkpoint_run_lock);
        int copied_now = 0;
        if (sqlite3_wal_checkpoint_v2(handle, name, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied_now) ==
            SQLITE_OK)
            atomic_store(&db->wal_frames_copied, copied_now);
        pthread_mutex_unlock(&db->checkpoint_run_lock);
    } else if (pending >= CHECKPOINT_PAGES) {
        pthread_mutex_lock(&db->checkpoint_lock);
        db->checkpoint_wanted = true;
        pthread_cond_signal(&db->checkpoint_signal);
        pthread_mutex_unlock(&db->checkpoint_lock);
    }
    return SQLITE_OK;
}

static void *run_checkpoints(void *context)
{
    store *db = context;
    pthread_mutex_lock(&db->checkpoint_lock);
    for (;;) {
        while (!db->checkpoint_wanted && !db->checkpoint_stopping)
            pthread_cond_wait(&db->checkpoint_signal, &db->checkpoint_lock);
        if (db->checkpoint_stopping)
            break;
        db->checkpoint_wanted = false;
        pthread_mutex_unlock(&db->checkpoint_lock);
        /* A failure (busy, I/O) leaves the WAL as it is; the next signal
         * tries again, and the data is safe in the WAL meanwhile. */
        int frames = 0, copied = 0;
        pthread_mutex_lock(&db->checkpoint_run_lock);
        if (sqlite3_wal_checkpoint_v2(db->checkpointer.handle, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                      &frames, &copied) == SQLITE_OK)
            atomic_store(&db->wal_frames_copied, copied);
        pthread_mutex_unlock(&db->checkpoint_run_lock);
        pthread_mutex_lock(&db->checkpoint_lock);
    }
    pthread_mutex_unlock(&db->checkpoint_lock);
    return NULL;
}

typedef enum connection_role {
    ROLE_WRITER,       /* the one connection that writes; sets up WAL */
    ROLE_READER,       /* read-only, pooled */
    ROLE_CHECKPOINTER, /* copies the WAL into the database file (see checkpoints) */
} connection_role;

static store_status connection_open(store *db, connection *conn, connection_role role,
                                    store_error *error)
{
    memset(conn, 0, sizeof(*conn));
    bool writer = role == ROLE_WRITER;
    int flags = SQLITE_OPEN_NOMUTEX |
                (role == ROLE_READER         ? SQLITE_OPEN_READONLY
                 : role == ROLE_CHECKPOINTER ? SQLITE_OPEN_READWRITE
                                             : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int code = sqlite3_open_v2(db->path, &conn->handle, flags, NULL);
    if (code != SQLITE_OK) {
        store_status status = sqlite_failure(error, conn->handle, code, "opening the database");
        connection_close(conn);
        return status;
    }
    sqlite3_extended_result_codes(conn->handle, 1);
    sqlite3_busy_timeout(conn->handle, db->busy_timeout_ms);
    char pragmas[256];
    char page_cap[64] = "";
    if (writer && db->max_database_bytes > 0) /* pages of the default 4,096 bytes */
        snprintf(
            page_cap, sizeof(page_cap), " PRAGMA max_page_count = %lld;",
            (long long)(db->max_database_bytes / 4096 > 0 ? db->max_database_bytes / 4096 : 1));
    snprintf(pragmas, sizeof(pragmas), "PRAGMA foreign_keys = ON; PRAGMA synchronous = %s;%s%s",
             db->synchronous_full ? "FULL" : "NORMAL", writer ? " PRAGMA journal_mode = WAL;" : "",
             page_cap);
    code = sqlite3_exec(conn->handle, pragmas, NULL, NULL, NULL);
    if (code != SQLITE_OK) {
        store_status status = sqlite_failure(error, conn->handle, code, "configuring the database");
        connection_close(conn);
        return status;
    }
    if (writer) /* the checkpointer thread checkpoints, not the committing thread */
        sqlite3_wal_hook(conn->handle, wal_committed, db);
    return STORE_OK;
}

static connection *reader_acquire(store *db, store_error *error)
{
    pthread_mutex_lock(&db->pool_lock);
    connection *conn = db->idle_reader_count > 0 ? db->idle_readers[--db->idle_reader_count] : NULL;
    pthread_mutex_unlock(&db->pool_lock);
    if (conn != NULL)
        return conn;
    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        set_error(error, STORE_IO, NULL, "out of memory");
        return NULL;
    }
    if (connection_open(db, conn, ROLE_READER, error) != STORE_OK) {
        free(conn);
        return NULL;
    }
    return conn;
}

static void reader_release(store *db, connection *conn)
{
    pthread_mutex_lock(&db->pool_lock);
    if (db->idle_reader_count < READER_POOL_MAX) {
        db->idle_readers[db->idle_reader_count++] = conn;
        conn = NULL;
    }
    pthread_mutex_unlock(&db->pool_lock);
    if (conn != NULL) {
        connection_close(conn);
        free(conn);
    }
}

/* ---- write transactions ---- */

static store_status run_simple(connection *conn, statement_id id, store_error *error)
{
    sqlite3_stmt *stmt = statement(conn, id, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    int code = sqlite3_step(stmt);
    finish(stmt);
    return code == SQLITE_DONE ? STORE_OK
                               : sqlite_failure(error, conn->handle, code, statement_sql[id]);
}

static store_status write_begin(store *db, store_error *error)
{
    pthread_mutex_lock(&db->write_lock);
    db->transaction_revision = 0;
    db->transaction_position = 0;
    store_status status = run_simple(&db->writer, SQL_BEGIN, error);
    if (status != STORE_OK)
        pthread_mutex_unlock(&db->write_lock);
    return status;
}

/* The revision of the open transaction, allocated on first use. */
static int64_t write_revision(store *db)
{
    if (db->transaction_revision == 0)
        db->transaction_revision = atomic_load(&db->revision) + 1;
    return db->transaction_revision;
}

/* Commits when status is STORE_OK, rolls back otherwise; releases the writer.
 * *revision (may be NULL) receives the revision after the transaction. */
static store_status write_end(store *db, store_status status, int64_t *revision, store_error *error)
{
    if (status == STORE_OK)
        status = run_simple(&db->writer, SQL_COMMIT, error);
    if (status != STORE_OK) {
        if (!sqlite3_get_autocommit(db->writer.handle))
            run_simple(&db->writer, SQL_ROLLBACK, NULL);
    } else if (db->transaction_revision != 0) {
        atomic_store(&db->revision, db->transaction_revision);
    }
    if (status == STORE_OK && revision != NULL)
        *revision = atomic_load(&db->revision);
    bool advanced = status == STORE_OK && db->transaction_revision != 0;
    db->transaction_revision = 0;
    store_commit_listener listener = db->commit_listener;
    void *context = db->commit_listener_context;
    pthread_mutex_unlock(&db->write_lock);
    if (advanced && listener != NULL)
        listener(context);
    return status;
}

void store_set_commit_listener(store *db, store_commit_listener listener, void *context)
{
    pthread_mutex_lock(&db->write_lock);
    db->commit_listener = listener;
    db->commit_listener_context = context;
    pthread_mutex_unlock(&db->write_lock);
}

static store_status log_change(store *db, model_entity_kind kind, const char *key,
                               model_change_op op, store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, SQL_LOG_CHANGE, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_int64(stmt, 1, write_revision(db));
    sqlite3_bind_int64(stmt, 2, db->transaction_position++);
    sqlite3_bind_text(stmt, 3, model_entity_kind_name(kind), -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, model_change_op_name(op), -1, SQLITE_STATIC);
    int code = sqlite3_step(stmt);
    finish(stmt);
    return code == SQLITE_DONE ? STORE_OK
                               : sqlite_failure(error, db->writer.handle, code, "logging a change");
}

static store_status log_endpoint_change(store *db, const char *service, const char *id,
                                        model_change_op op, store_error *error)
{
    char key[2 * MODEL_NAME_MAX + 2];
    snprintf(key, sizeof(key), "%s/%s", service, id);
    return log_change(db, MODEL_KIND_ENDPOINT, key, op, error);
}

/* Steps a statement that writes; *changed (may be NULL) gets the row count. */
static store_status step_write(store *db, sqlite3_stmt *stmt, int *changed, const char *what,
                               store_error *error)
{
    int code = sqlite3_step(stmt);
    finish(stmt);
    if (code != SQLITE_DONE)
        return sqlite_failure(error, db->writer.handle, code, what);
    if (changed != NULL)
        *changed = sqlite3_changes(db->writer.handle);
    return STORE_OK;
}

/* Steps a one-row query on conn; *found tells whether a row came back. The
 * statement stays on its row for the caller to read; the caller calls finish(). */
static store_status step_row(sqlite3 *handle, sqlite3_stmt *stmt, bool *found, const char *what,
                             store_error *error)
{
    int code = sqlite3_step(stmt);
    if (code == SQLITE_ROW || code == SQLITE_DONE) {
        *found = code == SQLITE_ROW;
        return STORE_OK;
    }
    finish(stmt);
    return sqlite_failure(error, handle, code, what);
}

/* Looks up the revision of the row (first[, second]) with statement id, inside
 * the write transaction. *found tells whether it exists; *revision (may be
 * NULL) receives its revision. */
static store_status row_revision(store *db, statement_id id, const char *first, const char *second,
                                 bool *found, int64_t *revision, store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, id, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, first, -1, SQLITE_STATIC);
    if (second != NULL)
        sqlite3_bind_text(stmt, 2, second, -1, SQLITE_STATIC);
    store_status status = step_row(db->writer.handle, stmt, found, "looking up a row", error);
    if (status == STORE_OK) {
        if (revision != NULL)
            *revision = *found ? sqlite3_column_int64(stmt, 0) : 0;
        finish(stmt);
    }
    return status;
}

/* Checks a write's condition on the current row: if_revision 0 is none,
 * STORE_IF_EXISTS needs the row, a revision needs the row at that revision. */
static store_status check_condition(store *db, statement_id id, const char *first,
                                    const char *second, int64_t if_revision, bool *found,
                                    store_error *error)
{
    int64_t revision = 0;
    store_status status = row_revision(db, id, first, second, found, &revision, error);
    if (status != STORE_OK || if_revision == 0)
        return status;
    if (!*found)
        return set_error(error, STORE_PRECONDITION_FAILED, "", "%s%s%s does not exist", first,
                         second ? "/" : "", second ? second : "");
    if (if_revision != STORE_IF_EXISTS && revision != if_revision)
        return set_error(error, STORE_PRECONDITION_FAILED, "",
                         "%s%s%s is at revision %lld, not %lld", first, second ? "/" : "",
                         second ? second : "", (long long)revision, (long long)if_revision);
    return STORE_OK;
}

/* ---- open, close, migrate ---- */

static store_status migrate(store *db, int target, store_error *error)
{
    sqlite3 *handle = db->writer.handle;
    sqlite3_stmt *stmt = NULL;
    int code = sqlite3_prepare_v2(handle, "PRAGMA user_version", -1, &stmt, NULL);
    if (code != SQLITE_OK)
        return sqlite_failure(error, handle, code, "reading the schema version");
    code = sqlite3_step(stmt);
    int version = code == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : -1;
    sqlite3_finalize(stmt);
    if (version < 0)
        return sqlite_failure(error, handle, code, "reading the schema version");
    if (version > STORE_SCHEMA_VERSION)
        return set_error(error, STORE_INVALID, NULL,
                         "database %s has schema version %d, newer than the %d this build "
                         "supports; use a newer atriumd",
                         db->path, version, STORE_SCHEMA_VERSION);
    while (version < target) {
        char set_version[64];
        snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d", version + 1);
        char *message = NULL;
        code = sqlite3_exec(handle, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (code == SQLITE_OK)
            code = sqlite3_exec(handle, migrations[version], NULL, NULL, &message);
        if (code == SQLITE_OK)
            code = sqlite3_exec(handle, set_version, NULL, NULL, &message);
        if (code == SQLITE_OK)
            code = sqlite3_exec(handle, "COMMIT", NULL, NULL, &message);
        if (code != SQLITE_OK) {
            store_status status =
                set_error(error, STORE_IO, NULL, "migrating schema from version %d to %d: %s",
                          version, version + 1, message ? message : sqlite3_errmsg(handle));
            sqlite3_free(message);
            sqlite3_exec(handle, "ROLLBACK", NULL, NULL, NULL);
            return status;
        }
        version++;
    }
    db->schema_version = version;
    return STORE_OK;
}

static store_status read_meta(connection *conn, const char *key, int64_t *value, store_error *error)
{
    sqlite3_stmt *stmt = statement(conn, SQL_META_GET, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    bool found = false;
    store_status status = step_row(conn->handle, stmt, &found, "reading store metadata", error);
    if (status != STORE_OK)
        return status;
    *value = found ? sqlite3_column_int64(stmt, 0) : 0;
    finish(stmt);
    return STORE_OK;
}

/* The current revision: the last one logged, or compacted away. */
static store_status read_last_revision(store *db, int64_t *revision, store_error *error)
{
    int64_t compacted = 0;
    store_status status = read_meta(&db->writer, "compacted_through", &compacted, error);
    sqlite3_stmt *stmt =
        status == STORE_OK ? statement(&db->writer, SQL_LAST_REVISION, error) : NULL;
    if (status == STORE_OK && stmt == NULL)
        status = error ? error->status : STORE_IO;
    bool found = false;
    if (status == STORE_OK)
        status = step_row(db->writer.handle, stmt, &found, "reading the revision", error);
    if (status != STORE_OK)
        return status;
    int64_t logged = found ? sqlite3_column_int64(stmt, 0) : 0;
    finish(stmt);
    *revision = logged > compacted ? logged : compacted;
    return STORE_OK;
}

/* A zero-byte database file is refused: SQLite would take it for a new,
 * empty database, and atriumd would serve an empty mesh without a word. A new
 * store is made only where no file exists. */
static store_status refuse_empty_file(const char *path, store_error *error)
{
    struct stat file;
    if (stat(path, &file) == 0 && S_ISREG(file.st_mode) && file.st_size == 0)
        return set_error(error, STORE_IO, NULL,
                         "the database file %s is empty (0 bytes), so it holds no mesh; "
                         "remove it to start a new, empty store",
                         path);
    return STORE_OK;
}

/* SQLite's quick_check (every page and index entry, not their cross-checks):
 * a corrupt database is refused at start with SQLite's first finding, instead
 * of failing later on whichever read meets the damage. */
static store_status quick_check(store *db, store_error *error)
{
    sqlite3_stmt *check = NULL;
    int code = sqlite3_prepare_v2(db->writer.handle, "PRAGMA quick_check(1)", -1, &check, NULL);
    if (code != SQLITE_OK)
        return sqlite_failure(error, db->writer.handle, code, "checking the database");
    code = sqlite3_step(check);
    store_status status = STORE_OK;
    if (code != SQLITE_ROW) {
        status = sqlite_failure(error, db->writer.handle, code, "checking the database");
    } else {
        const char *finding = (const char *)sqlite3_column_text(check, 0);
        if (finding == NULL || strcmp(finding, "ok") != 0) {
            status = set_error(error, STORE_IO, NULL, "the database %s is corrupt: %s", db->path,
                               finding ? finding : "(no finding)");
            for (char *c = error ? error->message : NULL; c != NULL && *c != '\0'; c++)
                if (*c == '\n') /* SQLite's finding spans lines; a log record is one */
                    *c = ' ';
        }
    }
    sqlite3_finalize(check);
    return status;
}

store_status store_open(const store_options *options, store **out, store_error *error)
{
    *out = NULL;
    int target =
        options->target_schema_version ? options->target_schema_version : STORE_SCHEMA_VERSION;
    if (options->path == NULL || target < 1 || target > STORE_SCHEMA_VERSION)
        return set_error(error, STORE_INVALID, NULL,
                         "store_open needs a path and a schema "
                         "version within 1-%d",
                         STORE_SCHEMA_VERSION);
    store *db = calloc(1, sizeof(*db));
    if (db == NULL || (db->path = strdup(options->path)) == NULL) {
        free(db);
        return set_error(error, STORE_IO, NULL, "out of memory");
    }
    db->busy_timeout_ms = options->busy_timeout_ms > 0 ? options->busy_timeout_ms : 5000;
    db->synchronous_full = options->synchronous_full;
    db->max_database_bytes = options->max_database_bytes;
    pthread_mutex_init(&db->write_lock, NULL);
    pthread_mutex_init(&db->pool_lock, NULL);
    pthread_mutex_init(&db->group_lock, NULL);
    pthread_cond_init(&db->group_finished, NULL);
    pthread_mutex_init(&db->checkpoint_lock, NULL);
    pthread_mutex_init(&db->checkpoint_run_lock, NULL);
    pthread_cond_init(&db->checkpoint_signal, NULL);

    store_status status = refuse_empty_file(db->path, error);
    if (status == STORE_OK)
        status = connection_open(db, &db->writer, ROLE_WRITER, error);
    if (status == STORE_OK)
        status = quick_check(db, error);
    if (status == STORE_OK)
        status = migrate(db, target, error);
    int64_t revision = 0;
    if (status == STORE_OK)
        status = read_last_revision(db, &revision, error);
    /* Without the checkpointer (it could not start), the writer checkpoints
     * itself (wal_committed). */
    if (status == STORE_OK &&
        connection_open(db, &db->checkpointer, ROLE_CHECKPOINTER, NULL) == STORE_OK) {
        db->checkpoint_running =
            pthread_create(&db->checkpoint_thread, NULL, run_checkpoints, db) == 0;
    }
    if (status != STORE_OK) {
        store_close(db);
        return status;
    }
    atomic_store(&db->revision, revision);
    *out = db;
    return STORE_OK;
}

void store_close(store *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->idle_reader_count; i++) {
        connection_close(db->idle_readers[i]);
        free(db->idle_readers[i]);
    }
    if (db->checkpoint_running) {
        pthread_mutex_lock(&db->checkpoint_lock);
        db->checkpoint_stopping = true;
        pthread_cond_signal(&db->checkpoint_signal);
        pthread_mutex_unlock(&db->checkpoint_lock);
        pthread_join(db->checkpoint_thread, NULL);
        db->checkpoint_running = false;
    }
    if (db->checkpointer.handle != NULL)
        connection_close(&db->checkpointer);
    if (db->writer.handle != NULL)
        connection_close(&db->writer);
    pthread_mutex_destroy(&db->write_lock);
    pthread_mutex_destroy(&db->pool_lock);
    pthread_mutex_destroy(&db->group_lock);
    pthread_cond_destroy(&db->group_finished);
    pthread_mutex_destroy(&db->checkpoint_lock);
    pthread_mutex_destroy(&db->checkpoint_run_lock);
    pthread_cond_destroy(&db->checkpoint_signal);
    free(db->path);
    free(db);
}

int store_schema_version(store *db)
{
    return db->schema_version;
}

store_status store_revision(store *db, int64_t *revision, store_error *error)
{
    (void)error;
    *revision = atomic_load(&db->revision);
    return STORE_OK;
}

store_status store_check_integrity(store *db, bool *ok, store_error *error)
{
    connection *conn = reader_acquire(db, error);
    if (conn == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_stmt *stmt = NULL;
    int code = sqlite3_prepare_v2(conn->handle, "PRAGMA integrity_check", -1, &stmt, NULL);
    store_status status = STORE_OK;
    if (code == SQLITE_OK)
        code = sqlite3_step(stmt);
    if (code == SQLITE_ROW) {
        const char *verdict = (const char *)sqlite3_column_text(stmt, 0);
        *ok = verdict != NULL && strcmp(verdict, "ok") == 0;
        if (!*ok)
            set_error(error, STORE_OK, NULL, "%s", verdict ? verdict : "no verdict");
    } else {
        status = sqlite_failure(error, conn->handle, code, "checking integrity");
    }
    sqlite3_finalize(stmt);
    reader_release(db, conn);
    return status;
}

/* ---- column helpers ---- */

static char *column_string(sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);
    return text ? strdup((const char *)text) : NULL;
}

static void bind_optional_uint(sqlite3_stmt *stmt, int index, bool present, uint32_t value)
{
    if (present)
        sqlite3_bind_int64(stmt, index, value);
    else
        sqlite3_bind_null(stmt, index);
}

/* Serializes a JSON value compactly; the caller frees with free(). */
static char *json_text(json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(value);
    return text;
}

static json_t *json_column(sqlite3_stmt *stmt, int column)
{
    const char *text = (const char *)sqlite3_column_text(stmt, column);
    return text ? json_loads(text, 0, NULL) : NULL;
}

/* Runs a read query on a borrowed reader and calls read_row for each row.
 * bind fills parameters. Returns STORE_OK even for zero rows. */
typedef store_status (*row_reader)(sqlite3_stmt *stmt, void *context);

static store_status read_rows(store *db, statement_id id, const char *text_parameter,
                              int64_t number_parameter, row_reader read_row, void *context,
                              store_error *error)
{
    connection *conn = reader_acquire(db, error);
    if (conn == NULL)
        return error ? error->status : STORE_IO;
    store_status status = STORE_OK;
    sqlite3_stmt *stmt = statement(conn, id, error);
    if (stmt == NULL) {
        status = error ? error->status : STORE_IO;
    } else {
        if (text_parameter != NULL)
            sqlite3_bind_text(stmt, 1, text_parameter, -1, SQLITE_STATIC);
        else if (sqlite3_bind_parameter_count(stmt) >= 1)
            sqlite3_bind_int64(stmt, 1, number_parameter);
        int code;
        while ((code = sqlite3_step(stmt)) == SQLITE_ROW) {
            status = read_row(stmt, context);
            if (status != STORE_OK) {
                set_error(error, status, NULL, "reading a row: out of memory or corrupt data");
                break;
            }
        }
        if (status == STORE_OK && code != SQLITE_DONE)
            status = sqlite_failure(error, conn->handle, code, "reading");
        finish(stmt);
    }
    reader_release(db, conn);
    return status;
}

/* Grows a list by one zeroed element; returns it or NULL. */
static void *list_append(void **items, size_t *count, size_t size)
{
    void *grown = realloc(*items, (*count + 1) * size);
    if (grown == NULL)
        return NULL;
    *items = grown;
    void *item = (char *)grown + *count * size;
    memset(item, 0, size);
    (*count)++;
    return item;
}

/* ---- services ---- */

static store_status service_from_row(sqlite3_stmt *stmt, model_service *out)
{
    model_service_init(out);
    out->name = column_string(stmt, 0);
    out->namespace_name = column_string(stmt, 1);
    model_protocol_parse((const char *)sqlite3_column_text(stmt, 2), &out->protocol);
    model_lb_policy_parse((const char *)sqlite3_column_text(stmt, 3), &out->lb_policy);
    out->connect_timeout_ms = (uint32_t)sqlite3_column_int64(stmt, 4);
    out->has_outlier_detection = sqlite3_column_type(stmt, 5) != SQLITE_NULL;
    out->outlier_detection.consecutive_5xx = (uint32_t)sqlite3_column_int64(stmt, 5);
    out->outlier_detection.interval_ms = (uint32_t)sqlite3_column_int64(stmt, 6);
    out->outlier_detection.base_ejection_time_ms = (uint32_t)sqlite3_column_int64(stmt, 7);
    out->outlier_detection.max_ejection_percent = (uint32_t)sqlite3_column_int64(stmt, 8);
    out->has_circuit_breaker = sqlite3_column_type(stmt, 9) != SQLITE_NULL;
    out->circuit_breaker.max_connections = (uint32_t)sqlite3_column_int64(stmt, 9);
    out->circuit_breaker.max_pending_requests = (uint32_t)sqlite3_column_int64(stmt, 10);
    out->circuit_breaker.max_requests = (uint32_t)sqlite3_column_int64(stmt, 11);
    out->circuit_breaker.max_retries = (uint32_t)sqlite3_column_int64(stmt, 12);
    out->revision = sqlite3_column_int64(stmt, 14);
    if (out->name == NULL || out->namespace_name == NULL)
        return STORE_IO;
    if (sqlite3_column_type(stmt, 13) != SQLITE_NULL) {
        json_t *dependencies = json_column(stmt, 13);
        out->has_dependencies = true;
        size_t count = json_array_size(dependencies);
        out->dependencies = count ? calloc(count, sizeof(char *)) : NULL;
        for (size_t i = 0; i < count && out->dependencies != NULL; i++) {
            out->dependencies[i] = strdup(json_string_value(json_array_get(dependencies, i)));
            out->dependency_count += out->dependencies[i] != NULL;
        }
        json_decref(dependencies);
        if (out->dependency_count != count)
            return STORE_IO;
    }
    return STORE_OK;
}

static store_status service_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_service_list *list = context;
    model_service *service = list_append((void **)&list->items, &list->count, sizeof(*service));
    return service ? service_from_row(stmt, service) : STORE_IO;
}

store_status store_put_service(store *db, model_service *service, int64_t if_revision,
                               bool *created, int64_t *revision, store_error *error)
{
    model_error invalid;
    if (!model_service_validate(service, &invalid))
        return invalid_from_model(error, &invalid);
    char *dependencies = NULL;
    if (service->has_dependencies) {
        json_t *array = json_array();
        for (size_t i = 0; array && i < service->dependency_count; i++)
            json_array_append_new(array, json_string(service->dependencies[i]));
        if ((dependencies = json_text(array)) == NULL)
            return set_error(error, STORE_IO, NULL, "out of memory");
    }
    store_status status = write_begin(db, error);
    if (status != STORE_OK) {
        free(dependencies);
        return status;
    }
    bool existed = false;
    status = check_condition(db, SQL_SERVICE_REVISION, service->name, NULL, if_revision, &existed,
                             error);
    sqlite3_stmt *stmt =
        status == STORE_OK ? statement(&db->writer, SQL_SERVICE_UPSERT, error) : NULL;
    if (status == STORE_OK && stmt == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        const model_outlier_detection *outlier = &service->outlier_detection;
        const model_circuit_breaker *breaker = &service->circuit_breaker;
        bool has_outlier = service->has_outlier_detection;
        bool has_breaker = service->has_circuit_breaker;
        sqlite3_bind_text(stmt, 1, service->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, service->namespace_name ? service->namespace_name : "default",
                          -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, model_protocol_name(service->protocol), -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 4, model_lb_policy_name(service->lb_policy), -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 5, service->connect_timeout_ms);
        bind_optional_uint(stmt, 6, has_outlier, outlier->consecutive_5xx);
        bind_optional_uint(stmt, 7, has_outlier, outlier->interval_ms);
        bind_optional_uint(stmt, 8, has_outlier, outlier->base_ejection_time_ms);
        bind_optional_uint(stmt, 9, has_outlier, outlier->max_ejection_percent);
        bind_optional_uint(stmt, 10, has_breaker, breaker->max_connections);
        bind_optional_uint(stmt, 11, has_breaker, breaker->max_pending_requests);
        bind_optional_uint(stmt, 12, has_breaker, breaker->max_requests);
        bind_optional_uint(stmt, 13, has_breaker, breaker->max_retries);
        if (dependencies != NULL)
            sqlite3_bind_text(stmt, 14, dependencies, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 15, write_revision(db));
        status = step_write(db, stmt, NULL, "writing the service", error);
    }
    if (status == STORE_OK)
        status = log_change(db, MODEL_KIND_SERVICE, service->name, MODEL_CHANGE_PUT, error);
    int64_t written = 0;
    status = write_end(db, status, &written, error);
    free(dependencies);
    if (status == STORE_OK) {
        service->revision = written;
        if (revision != NULL)
            *revision = written;
        if (created != NULL)
            *created = !existed;
    }
    return status;
}

store_status store_get_service(store *db, const char *name, model_service *out, store_error *error)
{
    model_service_list list = {0};
    store_status status = read_rows(db, SQL_SERVICE_GET, name, 0, service_row_reader, &list, error);
    if (status == STORE_OK && list.count == 0)
        status = set_error(error, STORE_NOT_FOUND, "name", "service '%s' not found", name);
    if (status == STORE_OK) {
        *out = list.items[0];
        list.count = 0;
    }
    model_service_list_free(&list);
    return status;
}

store_status store_list_services(store *db, model_service_list *out, store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status = read_rows(db, SQL_SERVICE_LIST, NULL, 0, service_row_reader, out, error);
    if (status != STORE_OK)
        model_service_list_free(out);
    return status;
}

/* Collects the endpoint ids of a service, through the writer (inside a transaction). */
static store_status endpoint_ids(store *db, const char *service, char ***ids, size_t *count,
                                 store_error *error)
{
    *ids = NULL;
    *count = 0;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_ENDPOINT_IDS, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
    int code;
    store_status status = STORE_OK;
    while ((code = sqlite3_step(stmt)) == SQLITE_ROW) {
        char **slot = list_append((void **)ids, count, sizeof(char *));
        if (slot == NULL || (*slot = column_string(stmt, 0)) == NULL) {
            status = set_error(error, STORE_IO, NULL, "out of memory");
            break;
        }
    }
    if (status == STORE_OK && code != SQLITE_DONE)
        status = sqlite_failure(error, db->writer.handle, code, "listing endpoint ids");
    finish(stmt);
    return status;
}

static void free_strings(char **strings, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(strings[i]);
    free(strings);
}

/* Deletes the row of (first[, second]) with statement id; *changed gets the count. */
static store_status delete_row(store *db, statement_id id, const char *first, const char *second,
                               int *changed, store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, id, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, first, -1, SQLITE_STATIC);
    if (second != NULL)
        sqlite3_bind_text(stmt, 2, second, -1, SQLITE_STATIC);
    return step_write(db, stmt, changed, "deleting", error);
}

store_status store_delete_service(store *db, const char *name, int64_t if_revision,
                                  int64_t *revision, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    char **ids = NULL;
    size_t id_count = 0;
    int routes_deleted = 0, policies_deleted = 0, services_deleted = 0;
    bool found = false;
    status = check_condition(db, SQL_SERVICE_REVISION, name, NULL, if_revision, &found, error);
    if (status == STORE_OK)
        status = endpoint_ids(db, name, &ids, &id_count, error);
    if (status == STORE_OK)
        status = delete_row(db, SQL_ROUTES_DELETE, name, NULL, &routes_deleted, error);
    if (status == STORE_OK)
        status = delete_row(db, SQL_POLICY_DELETE, name, NULL, &policies_deleted, error);
    if (status == STORE_OK)
        status = delete_row(db, SQL_SERVICE_DELETE, name, NULL, &services_deleted, error);
    if (status == STORE_OK && services_deleted == 0)
        status = set_error(error, STORE_NOT_FOUND, "name", "service '%s' not found", name);
    for (size_t i = 0; status == STORE_OK && i < id_count; i++)
        status = log_endpoint_change(db, name, ids[i], MODEL_CHANGE_DELETE, error);
    if (status == STORE_OK && routes_deleted)
        status = log_change(db, MODEL_KIND_ROUTES, name, MODEL_CHANGE_DELETE, error);
    if (status == STORE_OK && policies_deleted)
        status = log_change(db, MODEL_KIND_POLICY, name, MODEL_CHANGE_DELETE, error);
    if (status == STORE_OK)
        status = log_change(db, MODEL_KIND_SERVICE, name, MODEL_CHANGE_DELETE, error);
    free_strings(ids, id_count);
    return write_end(db, status, revision, error);
}

/* ---- endpoints ---- */

static store_status endpoint_from_row(sqlite3_stmt *stmt, model_endpoint *out)
{
    model_endpoint_init(out);
    out->service = column_string(stmt, 0);
    out->id = column_string(stmt, 1);
    out->address = column_string(stmt, 2);
    out->port = (uint16_t)sqlite3_column_int(stmt, 3);
    out->weight = (uint32_t)sqlite3_column_int(stmt, 4);
    out->zone = column_string(stmt, 6);
    model_health_parse((const char *)sqlite3_column_text(stmt, 7), &out->health);
    out->ttl_s = (uint32_t)sqlite3_column_int64(stmt, 8);
    out->expires_at_ms = sqlite3_column_int64(stmt, 9);
    out->proxy_port = (uint16_t)sqlite3_column_int(stmt, 10);
    out->revision = sqlite3_column_int64(stmt, 11);
    if (out->service == NULL || out->id == NULL || out->address == NULL || out->zone == NULL)
        return STORE_IO;
    json_t *labels = json_column(stmt, 5);
    bool ok = model_labels_from_json(labels, &out->labels, "labels", NULL);
    json_decref(labels);
    return ok ? STORE_OK : STORE_IO;
}

static store_status endpoint_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_endpoint_list *list = context;
    model_endpoint *endpoint = list_append((void **)&list->items, &list->count, sizeof(*endpoint));
    return endpoint ? endpoint_from_row(stmt, endpoint) : STORE_IO;
}

/* Upserts one endpoint inside an open transaction and logs it. */
/* When an endpoint written at now_ms expires: never (0) without a TTL. */
static int64_t endpoint_expiry(const model_endpoint *endpoint, int64_t now_ms)
{
    return endpoint->ttl_s ? now_ms + endpoint->ttl_s * 1000LL : 0;
}

static store_status endpoint_write(store *db, const model_endpoint *endpoint, const char *service,
                                   int64_t now_ms, store_error *error)
{
    /* Most endpoints carry no labels: skip jansson for those. */
    char *labels =
        endpoint->labels.count ? json_text(model_labels_to_json(&endpoint->labels)) : strdup("{}");
    if (labels == NULL)
        return set_error(error, STORE_IO, NULL, "out of memory");
    sqlite3_stmt *stmt = statement(&db->writer, SQL_ENDPOINT_UPSERT, error);
    store_status status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, endpoint->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, endpoint->address, -1, SQLITE_STATIC);
        sqlite3_bind_int(stmt, 4, endpoint->port);
        sqlite3_bind_int64(stmt, 5, endpoint->weight);
        sqlite3_bind_text(stmt, 6, labels, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 7, endpoint->zone ? endpoint->zone : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 8, model_health_name(endpoint->health), -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 9, endpoint->ttl_s);
        sqlite3_bind_int64(stmt, 10, endpoint_expiry(endpoint, now_ms));
        sqlite3_bind_int(stmt, 11, endpoint->proxy_port);
        sqlite3_bind_int64(stmt, 12, write_revision(db));
        status = step_write(db, stmt, NULL, "writing the endpoint", error);
        if (status == STORE_NOT_FOUND)
            set_error(error, STORE_NOT_FOUND, "service", "service '%s' not found", service);
    }
    free(labels);
    if (status == STORE_OK)
        status = log_endpoint_change(db, service, endpoint->id, MODEL_CHANGE_PUT, error);
    return status;
}

store_status store_put_endpoint(store *db, model_endpoint *endpoint, int64_t if_revision,
                                int64_t now_ms, bool *created, int64_t *revision,
                                store_error *error)
{
    model_error invalid;
    if (!model_endpoint_validate(endpoint, &invalid))
        return invalid_from_model(error, &invalid);
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    bool existed = false;
    status = check_condition(db, SQL_ENDPOINT_REVISION, endpoint->service, endpoint->id,
                             if_revision, &existed, error);
    if (status == STORE_OK)
        status = endpoint_write(db, endpoint, endpoint->service, now_ms, error);
    int64_t written = 0;
    status = write_end(db, status, &written, error);
    if (status == STORE_OK) {
        endpoint->revision = written;
        endpoint->expires_at_ms = endpoint_expiry(endpoint, now_ms);
        if (revision != NULL)
            *revision = written;
        if (created != NULL)
            *created = !existed;
    }
    return status;
}

store_status store_get_endpoint(store *db, const char *service, const char *id, model_endpoint *out,
                                store_error *error)
{
    model_endpoint_list list = {0};
    connection *conn = reader_acquire(db, error);
    if (conn == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_stmt *stmt = statement(conn, SQL_ENDPOINT_GET, error);
    store_status status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC);
        bool found = false;
        status = step_row(conn->handle, stmt, &found, "reading the endpoint", error);
        if (status == STORE_OK) {
            if (found)
                status = endpoint_row_reader(stmt, &list);
            else
                status = set_error(error, STORE_NOT_FOUND, "id",
                                   "endpoint '%s' of service '%s' not found", id, service);
            finish(stmt);
        }
    }
    reader_release(db, conn);
    if (status == STORE_OK && list.count == 1) {
        *out = list.items[0];
        list.count = 0;
    }
    model_endpoint_list_free(&list);
    return status;
}

store_status store_list_endpoints(store *db, const char *service, model_endpoint_list *out,
                                  store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status = read_rows(db, service ? SQL_ENDPOINT_LIST : SQL_ENDPOINT_LIST_ALL,
                                    service, 0, endpoint_row_reader, out, error);
    if (status != STORE_OK)
        model_endpoint_list_free(out);
    return status;
}

store_status store_delete_endpoint(store *db, const char *service, const char *id,
                                   int64_t if_revision, int64_t *revision, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    int deleted = 0;
    bool found = false;
    status = check_condition(db, SQL_ENDPOINT_REVISION, service, id, if_revision, &found, error);
    if (status == STORE_OK)
        status = delete_row(db, SQL_ENDPOINT_DELETE, service, id, &deleted, error);
    if (status == STORE_OK && deleted == 0)
        status = set_error(error, STORE_NOT_FOUND, "id", "endpoint '%s' of service '%s' not found",
                           id, service);
    if (status == STORE_OK)
        status = log_endpoint_change(db, service, id, MODEL_CHANGE_DELETE, error);
    return write_end(db, status, revision, error);
}

store_status store_replace_endpoints(store *db, const char *service,
                                     const model_endpoint *endpoints, size_t count, int64_t now_ms,
                                     int64_t *revision, store_error *error)
{
    if (!model_name_is_valid(service))
        return set_error(error, STORE_INVALID, "service", "invalid service name");
    for (size_t i = 0; i < count; i++) {
        model_endpoint endpoint = endpoints[i];
        model_error invalid;
        if (endpoint.service != NULL && strcmp(endpoint.service, service) != 0)
            return set_error(error, STORE_INVALID, "service",
                             "endpoint %zu belongs to service '%s', not '%s'", i, endpoint.service,
                             service);
        endpoint.service = (char *)service;
        if (!model_endpoint_validate(&endpoint, &invalid)) {
            store_status status = invalid_from_model(error, &invalid);
            if (error != NULL) {
                /* Name the field inside the list: "endpoints[2].weight". */
                char field[sizeof(error->field) + 32];
                int used = snprintf(field, sizeof(field), "endpoints[%zu].", i);
                memcpy(field + used, invalid.field, strlen(invalid.field) + 1);
                memcpy(error->field, field, sizeof(error->field) - 1);
                error->field[sizeof(error->field) - 1] = '\0';
            }
            return status;
        }
    }
    size_t first, second;
    if (model_endpoints_find_duplicate(endpoints, count, &first, &second))
        return set_error(error, STORE_INVALID, "id", "duplicate endpoint id '%s' (%zu and %zu)",
                         endpoints[second].id, first, second);
    /* The new ids, sorted, to tell which old endpoints are gone. */
    const char **new_ids = count ? malloc(count * sizeof(*new_ids)) : NULL;
    if (count && new_ids == NULL)
        return set_error(error, STORE_IO, NULL, "out of memory");
    for (size_t i = 0; i < count; i++)
        new_ids[i] = endpoints[i].id;
    model_ids_sort(new_ids, count);
    store_status status = write_begin(db, error);
    if (status != STORE_OK) {
        free(new_ids);
        return status;
    }
    bool service_exists = false;
    char **old_ids = NULL;
    size_t old_count = 0;
    status = row_revision(db, SQL_SERVICE_REVISION, service, NULL, &service_exists, NULL, error);
    if (status == STORE_OK && !service_exists)
        status = set_error(error, STORE_NOT_FOUND, "service", "service '%s' not found", service);
    if (status == STORE_OK)
        status = endpoint_ids(db, service, &old_ids, &old_count, error);
    if (status == STORE_OK)
        status = delete_row(db, SQL_ENDPOINT_DELETE_ALL, service, NULL, NULL, error);
    for (size_t i = 0; status == STORE_OK && i < old_count; i++) {
        if (count == 0 ||
            bsearch(&old_ids[i], new_ids, count, sizeof(*new_ids), model_id_compare) == NULL)
            status = log_endpoint_change(db, service, old_ids[i], MODEL_CHANGE_DELETE, error);
    }
    for (size_t i = 0; status == STORE_OK && i < count; i++)
        status = endpoint_write(db, &endpoints[i], service, now_ms, error);
    free_strings(old_ids, old_count);
    free(new_ids);
    return write_end(db, status, revision, error);
}

store_status store_heartbeat_endpoint(store *db, const char *service, const char *id,
                                      int64_t now_ms, int64_t *revision, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_ENDPOINT_TTL_GET, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    bool found = false, expired = false;
    int64_t ttl_s = 0;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC);
        status = step_row(db->writer.handle, stmt, &found, "reading the endpoint", error);
        if (status == STORE_OK) {
            ttl_s = found ? sqlite3_column_int64(stmt, 0) : 0;
            expired = found && sqlite3_column_int(stmt, 1) != 0;
            finish(stmt);
        }
    }
    if (status == STORE_OK && !found)
        status = set_error(error, STORE_NOT_FOUND, "id", "endpoint '%s' of service '%s' not found",
                           id, service);
    if (status == STORE_OK && ttl_s == 0)
        status = set_error(error, STORE_CONFLICT, "ttl_s",
                           "endpoint '%s' has no TTL; heartbeats apply to endpoints registered "
                           "with ttl_s",
                           id);
    if (status == STORE_OK &&
        (stmt = statement(&db->writer, SQL_ENDPOINT_HEARTBEAT, error)) == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 3, now_ms);
        sqlite3_bind_int64(stmt, 4, expired ? write_revision(db) : 0);
        status = step_write(db, stmt, NULL, "extending the TTL", error);
    }
    /* Only a change of health is configuration; extending the TTL is not. */
    if (status == STORE_OK && expired)
        status = log_endpoint_change(db, service, id, MODEL_CHANGE_PUT, error);
    return write_end(db, status, revision, error);
}

store_status store_set_endpoint_health(store *db, const char *service, const char *id,
                                       model_health health, int64_t if_revision, int64_t *revision,
                                       store_error *error)
{
    if ((unsigned)health > MODEL_HEALTH_DRAINING)
        return set_error(error, STORE_INVALID, "health",
                         "health must be one of healthy, unhealthy, draining");
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    bool found = false;
    status = check_condition(db, SQL_ENDPOINT_REVISION, service, id, if_revision, &found, error);
    sqlite3_stmt *stmt =
        status == STORE_OK ? statement(&db->writer, SQL_ENDPOINT_SET_HEALTH, error) : NULL;
    if (status == STORE_OK && stmt == NULL)
        status = error ? error->status : STORE_IO;
    int changed = 0;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, model_health_name(health), -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 4, write_revision(db));
        status = step_write(db, stmt, &changed, "setting health", error);
    }
    if (status == STORE_OK && changed == 0)
        status = set_error(error, STORE_NOT_FOUND, "id", "endpoint '%s' of service '%s' not found",
                           id, service);
    if (status == STORE_OK)
        status = log_endpoint_change(db, service, id, MODEL_CHANGE_PUT, error);
    return write_end(db, status, revision, error);
}

store_status store_reap_expired_endpoints(store *db, int64_t now_ms, size_t *reaped,
                                          int64_t *revision, store_error *error)
{
    *reaped = 0;
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_ENDPOINT_REAP, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    char **keys = NULL; /* "service\0id" pairs, two strings per reaped endpoint */
    size_t key_count = 0;
    if (status == STORE_OK) {
        /* The revision is bound before we know whether a row matches; it is
         * only committed if a change gets logged below. */
        int64_t candidate = atomic_load(&db->revision) + 1;
        sqlite3_bind_int64(stmt, 1, now_ms);
        sqlite3_bind_int64(stmt, 2, candidate);
        int code;
        while ((code = sqlite3_step(stmt)) == SQLITE_ROW) {
            char **service = list_append((void **)&keys, &key_count, sizeof(char *));
            if (service != NULL)
                *service = column_string(stmt, 0);
            char **id = list_append((void **)&keys, &key_count, sizeof(char *));
            if (id != NULL)
                *id = column_string(stmt, 1);
            if (service == NULL || id == NULL || keys[key_count - 2] == NULL ||
                keys[key_count - 1] == NULL) {
                status = set_error(error, STORE_IO, NULL, "out of memory");
                break;
            }
        }
        if (status == STORE_OK && code != SQLITE_DONE)
            status = sqlite_failure(error, db->writer.handle, code, "reaping endpoints");
        finish(stmt);
    }
    for (size_t i = 0; status == STORE_OK && i + 1 < key_count; i += 2)
        status = log_endpoint_change(db, keys[i], keys[i + 1], MODEL_CHANGE_PUT, error);
    free_strings(keys, key_count);
    status = write_end(db, status, revision, error);
    if (status == STORE_OK)
        *reaped = key_count / 2;
    return status;
}

/* ---- routes and policies ---- */

/* Upserts a JSON document row (routes or policy) for service and logs it. */
static store_status document_put(store *db, statement_id id, statement_id revision_id,
                                 model_entity_kind kind, const char *service, json_t *document,
                                 int64_t if_revision, bool *created, int64_t *revision,
                                 store_error *error)
{
    if (created != NULL)
        *created = false;
    if (!model_name_is_valid(service)) {
        json_decref(document);
        return set_error(error, STORE_INVALID, "service", "invalid service name");
    }
    char *text = json_text(document);
    if (text == NULL)
        return set_error(error, STORE_IO, NULL, "out of memory");
    store_status status = write_begin(db, error);
    if (status != STORE_OK) {
        free(text);
        return status;
    }
    bool found = false;
    status = check_condition(db, revision_id, service, NULL, if_revision, &found, error);
    sqlite3_stmt *stmt = status == STORE_OK ? statement(&db->writer, id, error) : NULL;
    if (status == STORE_OK && stmt == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 3, write_revision(db));
        status = step_write(db, stmt, NULL, "writing", error);
        if (status == STORE_NOT_FOUND)
            set_error(error, STORE_NOT_FOUND, "service", "service '%s' not found", service);
    }
    if (status == STORE_OK)
        status = log_change(db, kind, service, MODEL_CHANGE_PUT, error);
    free(text);
    status = write_end(db, status, revision, error);
    if (status == STORE_OK && created != NULL)
        *created = !found;
    return status;
}

/* Reads a document row; *document is a new reference. */
static store_status document_get(store *db, statement_id id, const char *what, const char *service,
                                 json_t **document, int64_t *revision, store_error *error)
{
    *document = NULL;
    connection *conn = reader_acquire(db, error);
    if (conn == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_stmt *stmt = statement(conn, id, error);
    store_status status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, service, -1, SQLITE_STATIC);
        bool found = false;
        status = step_row(conn->handle, stmt, &found, "reading", error);
        if (status == STORE_OK) {
            if (!found) {
                status = set_error(error, STORE_NOT_FOUND, "service", "service '%s' has no %s",
                                   service, what);
            } else {
                *document = json_column(stmt, 0);
                *revision = sqlite3_column_int64(stmt, 1);
                if (*document == NULL)
                    status = set_error(error, STORE_IO, NULL, "stored %s of '%s' is unreadable",
                                       what, service);
            }
            finish(stmt);
        }
    }
    reader_release(db, conn);
    return status;
}

static store_status document_delete(store *db, statement_id id, statement_id revision_id,
                                    model_entity_kind kind, const char *what, const char *service,
                                    int64_t if_revision, int64_t *revision, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    int deleted = 0;
    bool found = false;
    status = check_condition(db, revision_id, service, NULL, if_revision, &found, error);
    if (status == STORE_OK)
        status = delete_row(db, id, service, NULL, &deleted, error);
    if (status == STORE_OK && deleted == 0)
        status =
            set_error(error, STORE_NOT_FOUND, "service", "service '%s' has no %s", service, what);
    if (status == STORE_OK)
        status = log_change(db, kind, service, MODEL_CHANGE_DELETE, error);
    return write_end(db, status, revision, error);
}

store_status store_put_routes(store *db, const model_routes *routes, int64_t if_revision,
                              bool *created, int64_t *revision, store_error *error)
{
    model_error invalid;
    if (!model_routes_validate(routes, &invalid))
        return invalid_from_model(error, &invalid);
    return document_put(db, SQL_ROUTES_UPSERT, SQL_ROUTES_REVISION, MODEL_KIND_ROUTES,
                        routes->service, model_routes_to_json(routes), if_revision, created,
                        revision, error);
}

/* Route documents an older atriumd stored, before its API refused two forms:
 * an empty "split" (absent means the whole service) and a header match with
 * "prefix": "" (any value of a present header, which "present": true says).
 * The parsed copy is rewritten to the form the API takes now, so a database
 * written by an older version still opens; the row itself changes at its next
 * write. */
static void upgrade_stored_routes(json_t *document)
{
    json_t *rules = json_object_get(document, "rules");
    for (size_t r = 0; r < json_array_size(rules); r++) {
        json_t *rule = json_array_get(rules, r);
        json_t *split = json_object_get(rule, "split");
        if (json_is_array(split) && json_array_size(split) == 0)
            json_object_del(rule, "split");
        json_t *headers = json_object_get(json_object_get(rule, "match"), "headers");
        for (size_t h = 0; h < json_array_size(headers); h++) {
            json_t *header = json_array_get(headers, h);
            const char *prefix = json_string_value(json_object_get(header, "prefix"));
            if (prefix != NULL && prefix[0] == '\0') {
                json_object_del(header, "prefix");
                json_object_set_new(header, "present", json_true());
            }
        }
    }
}

store_status store_get_routes(store *db, const char *service, model_routes *out, store_error *error)
{
    json_t *document = NULL;
    int64_t revision = 0;
    store_status status =
        document_get(db, SQL_ROUTES_GET, "routes", service, &document, &revision, error);
    if (status != STORE_OK)
        return status;
    model_error invalid;
    upgrade_stored_routes(document);
    if (!model_routes_from_json(document, out, &invalid))
        status = set_error(error, STORE_IO, invalid.field, "stored routes are invalid: %s",
                           invalid.message);
    json_decref(document);
    if (status == STORE_OK) {
        out->revision = revision;
        if ((out->service = strdup(service)) == NULL) {
            model_routes_clear(out);
            status = set_error(error, STORE_IO, NULL, "out of memory");
        }
    }
    return status;
}

store_status store_delete_routes(store *db, const char *service, int64_t if_revision,
                                 int64_t *revision, store_error *error)
{
    return document_delete(db, SQL_ROUTES_DELETE, SQL_ROUTES_REVISION, MODEL_KIND_ROUTES, "routes",
                           service, if_revision, revision, error);
}

store_status store_put_policy(store *db, const model_policy *policy, int64_t if_revision,
                              bool *created, int64_t *revision, store_error *error)
{
    model_error invalid;
    if (!model_policy_validate(policy, &invalid))
        return invalid_from_model(error, &invalid);
    return document_put(db, SQL_POLICY_UPSERT, SQL_POLICY_REVISION, MODEL_KIND_POLICY,
                        policy->service, model_policy_to_json(policy), if_revision, created,
                        revision, error);
}

store_status store_get_policy(store *db, const char *service, model_policy *out, store_error *error)
{
    json_t *document = NULL;
    int64_t revision = 0;
    store_status status =
        document_get(db, SQL_POLICY_GET, "policy", service, &document, &revision, error);
    if (status != STORE_OK)
        return status;
    model_error invalid;
    if (!model_policy_from_json(document, out, &invalid))
        status = set_error(error, STORE_IO, invalid.field, "stored policy is invalid: %s",
                           invalid.message);
    json_decref(document);
    if (status == STORE_OK) {
        out->revision = revision;
        if ((out->service = strdup(service)) == NULL) {
            model_policy_clear(out);
            status = set_error(error, STORE_IO, NULL, "out of memory");
        }
    }
    return status;
}

store_status store_delete_policy(store *db, const char *service, int64_t if_revision,
                                 int64_t *revision, store_error *error)
{
    return document_delete(db, SQL_POLICY_DELETE, SQL_POLICY_REVISION, MODEL_KIND_POLICY, "policy",
                           service, if_revision, revision, error);
}

/* ---- join tokens ---- */

static store_status token_from_row(sqlite3_stmt *stmt, model_join_token *out)
{
    memset(out, 0, sizeof(*out));
    out->id = column_string(stmt, 0);
    out->service = column_string(stmt, 1);
    out->namespace_name = column_string(stmt, 2);
    if (sqlite3_column_bytes(stmt, 3) == MODEL_TOKEN_HASH_SIZE)
        memcpy(out->hash, sqlite3_column_blob(stmt, 3), MODEL_TOKEN_HASH_SIZE);
    out->created_at_ms = sqlite3_column_int64(stmt, 4);
    out->expires_at_ms = sqlite3_column_int64(stmt, 5);
    out->uses_allowed = (uint32_t)sqlite3_column_int64(stmt, 6);
    out->uses = (uint32_t)sqlite3_column_int64(stmt, 7);
    return out->id && out->service && out->namespace_name ? STORE_OK : STORE_IO;
}

static store_status token_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_join_token_list *list = context;
    model_join_token *token = list_append((void **)&list->items, &list->count, sizeof(*token));
    return token ? token_from_row(stmt, token) : STORE_IO;
}

store_status store_create_join_token(store *db, const model_join_token *token, int64_t *revision,
                                     store_error *error)
{
    if (token->id == NULL || token->id[0] == '\0')
        return set_error(error, STORE_INVALID, "id", "a join token needs an id");
    if (!model_name_is_valid(token->service))
        return set_error(error, STORE_INVALID, "service", "invalid service name");
    if (token->namespace_name != NULL && !model_name_is_valid(token->namespace_name))
        return set_error(error, STORE_INVALID, "namespace", "invalid namespace");
    if (token->uses_allowed < 1)
        return set_error(error, STORE_INVALID, "uses", "uses must be at least 1");
    if (token->expires_at_ms <= token->created_at_ms)
        return set_error(error, STORE_INVALID, "ttl_s",
                         "a join token must expire after it is "
                         "created");
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_TOKEN_INSERT, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, token->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, token->service, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, token->namespace_name ? token->namespace_name : "default", -1,
                          SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 4, token->hash, MODEL_TOKEN_HASH_SIZE, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 5, token->created_at_ms);
        sqlite3_bind_int64(stmt, 6, token->expires_at_ms);
        sqlite3_bind_int64(stmt, 7, token->uses_allowed);
        sqlite3_bind_int64(stmt, 8, token->uses);
        status = step_write(db, stmt, NULL, "recording the join token", error);
        if (status == STORE_CONFLICT)
            set_error(error, STORE_CONFLICT, "id", "a join token with this id or secret exists");
    }
    if (status == STORE_OK)
        status = log_change(db, MODEL_KIND_JOIN_TOKEN, token->id, MODEL_CHANGE_PUT, error);
    return write_end(db, status, revision, error);
}

store_status store_list_join_tokens(store *db, model_join_token_list *out, store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status = read_rows(db, SQL_TOKEN_LIST, NULL, 0, token_row_reader, out, error);
    if (status != STORE_OK)
        model_join_token_list_free(out);
    return status;
}

store_status store_delete_join_token(store *db, const char *id, int64_t *revision,
                                     store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    int deleted = 0;
    status = delete_row(db, SQL_TOKEN_DELETE, id, NULL, &deleted, error);
    if (status == STORE_OK && deleted == 0)
        status = set_error(error, STORE_NOT_FOUND, "id", "join token '%s' not found", id);
    if (status == STORE_OK)
        status = log_change(db, MODEL_KIND_JOIN_TOKEN, id, MODEL_CHANGE_DELETE, error);
    return write_end(db, status, revision, error);
}

/* Inside a write transaction: finds the token with this hash, checks that it
 * admits namespace_name/service (when not NULL), has not expired and has uses
 * left, and counts one use. *token gets the token as it was before the use;
 * the caller clears it. */
static store_status use_join_token(store *db, const uint8_t hash[MODEL_TOKEN_HASH_SIZE],
                                   const char *namespace_name, const char *service, int64_t now_ms,
                                   model_join_token *token, store_error *error)
{
    memset(token, 0, sizeof(*token));
    bool found = false;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_TOKEN_BY_HASH, error);
    store_status status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_blob(stmt, 1, hash, MODEL_TOKEN_HASH_SIZE, SQLITE_STATIC);
        status = step_row(db->writer.handle, stmt, &found, "looking up the join token", error);
        if (status == STORE_OK) {
            if (found && token_from_row(stmt, token) != STORE_OK)
                status = set_error(error, STORE_IO, NULL, "out of memory");
            finish(stmt);
        }
    }
    if (status != STORE_OK)
        return status;
    if (!found)
        return set_error(error, STORE_NOT_FOUND, "token", "unknown join token");
    if (status == STORE_OK && namespace_name != NULL && service != NULL &&
        (strcmp(token->namespace_name, namespace_name) != 0 ||
         strcmp(token->service, service) != 0))
        status =
            set_error(error, STORE_CONFLICT, "token", "join token '%s' admits %s/%s, not %s/%s",
                      token->id, token->namespace_name, token->service, namespace_name, service);
    if (status == STORE_OK && now_ms >= token->expires_at_ms)
        status =
            set_error(error, STORE_CONFLICT, "token", "join token '%s' has expired", token->id);
    if (status == STORE_OK && token->uses >= token->uses_allowed)
        status = set_error(error, STORE_CONFLICT, "token", "join token '%s' is used up (%u of %u)",
                           token->id, token->uses, token->uses_allowed);
    if (status == STORE_OK && (stmt = statement(&db->writer, SQL_TOKEN_USE, error)) == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, token->id, -1, SQLITE_STATIC);
        status = step_write(db, stmt, NULL, "counting the token use", error);
    }
    /* A use is state, not configuration: no change-log row (see store.h). */
    return status;
}

store_status store_consume_join_token(store *db, const uint8_t hash[MODEL_TOKEN_HASH_SIZE],
                                      int64_t now_ms, model_join_token *out, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    model_join_token token;
    status = use_join_token(db, hash, NULL, NULL, now_ms, &token, error);
    status = write_end(db, status, NULL, error);
    if (status == STORE_OK && out != NULL) {
        token.uses++;
        *out = token;
    } else {
        model_join_token_clear(&token);
    }
    return status;
}

/* ---- certificates ---- */

static store_status certificate_from_row(sqlite3_stmt *stmt, model_certificate *out)
{
    memset(out, 0, sizeof(*out));
    out->serial = column_string(stmt, 0);
    out->identity = column_string(stmt, 1);
    out->not_before_ms = sqlite3_column_int64(stmt, 2);
    out->not_after_ms = sqlite3_column_int64(stmt, 3);
    out->revoked = sqlite3_column_type(stmt, 4) != SQLITE_NULL;
    out->revoked_at_ms = sqlite3_column_int64(stmt, 4);
    return out->serial && out->identity ? STORE_OK : STORE_IO;
}

static store_status certificate_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_certificate_list *list = context;
    model_certificate *item = list_append((void **)&list->items, &list->count, sizeof(*item));
    return item ? certificate_from_row(stmt, item) : STORE_IO;
}

static store_status check_certificate(const model_certificate *certificate, store_error *error)
{
    if (certificate->serial == NULL || certificate->serial[0] == '\0')
        return set_error(error, STORE_INVALID, "serial", "a certificate needs a serial");
    if (certificate->identity == NULL || certificate->identity[0] == '\0')
        return set_error(error, STORE_INVALID, "identity", "a certificate needs an identity");
    if (certificate->not_after_ms <= certificate->not_before_ms)
        return set_error(error, STORE_INVALID, "not_after",
                         "not_after must be later than not_before");
    return STORE_OK;
}

/* Inside a write transaction: inserts the certificate's record. */
static store_status insert_certificate(store *db, const model_certificate *certificate,
                                       store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, SQL_CERT_INSERT, error);
    store_status status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, certificate->serial, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, certificate->identity, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 3, certificate->not_before_ms);
        sqlite3_bind_int64(stmt, 4, certificate->not_after_ms);
        if (certificate->revoked)
            sqlite3_bind_int64(stmt, 5, certificate->revoked_at_ms);
        status = step_write(db, stmt, NULL, "recording the certificate", error);
        if (status == STORE_CONFLICT)
            set_error(error, STORE_CONFLICT, "serial", "serial %s is already recorded",
                      certificate->serial);
    }
    /* Issuing changes no xDS resource (a revocation does: the CRL), so the
     * record is written without a change-log row (see store.h). */
    return status;
}

/* Issued certificates arrive from the CA's threads thousands of times a
 * second, and a transaction of their own each would spend most of its time
 * committing (WAL frames for the same few pages, file locks, and a checkpoint
 * every thousand pages). So they are committed in groups: a caller that finds
 * no group being committed becomes its leader, takes every record queued so
 * far and writes them in one transaction, each inside its own savepoint, so a
 * refused record (token used up, duplicate serial) undoes only itself. Callers
 * arriving meanwhile queue up and wait; one of them leads the next group.
 * Every caller returns once its own record is committed or refused, as with a
 * transaction of its own. */
typedef struct certificate_request {
    const uint8_t *token_hash; /* NULL: no join token to use */
    const char *namespace_name, *service;
    int64_t now_ms;
    const model_certificate *certificate;
    store_status status;
    store_error error;
    bool done;
    struct certificate_request *next;
} certificate_request;

/* Inside the group's transaction: one record, in a savepoint when it shares
 * the transaction with others (alone, a refusal rolls back the transaction). */
static store_status write_one_certificate(store *db, certificate_request *request, bool alone)
{
    store_status status =
        alone ? STORE_OK : run_simple(&db->writer, SQL_SAVEPOINT, &request->error);
    if (status != STORE_OK)
        return status;
    if (request->token_hash != NULL) {
        model_join_token token;
        status = use_join_token(db, request->token_hash, request->namespace_name, request->service,
                                request->now_ms, &token, &request->error);
        model_join_token_clear(&token);
    }
    if (status == STORE_OK)
        status = insert_certificate(db, request->certificate, &request->error);
    if (alone)
        return status;
    if (status != STORE_OK)
        run_simple(&db->writer, SQL_ROLLBACK_TO_SAVEPOINT, NULL);
    run_simple(&db->writer, SQL_RELEASE_SAVEPOINT, NULL);
    return status;
}

/* The leader's work: one transaction for the whole group. */
static void commit_certificate_group(store *db, certificate_request *group)
{
    store_error failure;
    store_status status = write_begin(db, &failure);
    bool any_written = false;
    for (certificate_request *request = group; request != NULL; request = request->next) {
        if (status != STORE_OK) { /* the transaction could not start */
            request->status = status;
            request->error = failure;
        } else if (sqlite3_get_autocommit(db->writer.handle)) {
            /* SQLite ended the transaction (an I/O error rolls back all of
             * it): the rest fail, and the commit below fails the others. */
            request->status = set_error(&request->error, STORE_IO, NULL,
                                        "the group's transaction was rolled back");
        } else {
            request->status = write_one_certificate(db, request, group->next == NULL);
            any_written = any_written || request->status == STORE_OK;
        }
    }
    if (status != STORE_OK)
        return; /* write_begin released the writer */
    if (!any_written) {
        write_end(db, STORE_CONFLICT, NULL, NULL); /* rolls back an empty transaction */
        return;
    }
    status = write_end(db, STORE_OK, NULL, &failure);
    for (certificate_request *request = group; request != NULL; request = request->next) {
        if (request->status == STORE_OK && status != STORE_OK) {
            request->status = status;
            request->error = failure;
        }
    }
}

static store_status record_certificate(store *db, certificate_request *request, int64_t *revision,
                                       store_error *error)
{
    request->status = check_certificate(request->certificate, &request->error);
    if (request->status == STORE_OK) {
        pthread_mutex_lock(&db->group_lock);
        if (db->group_tail != NULL)
            db->group_tail->next = request;
        else
            db->group_head = request;
        db->group_tail = request;
        while (!request->done && db->group_committing)
            pthread_cond_wait(&db->group_finished, &db->group_lock);
        if (!request->done) {
            certificate_request *group = db->group_head;
            db->group_head = db->group_tail = NULL;
            db->group_committing = true;
            pthread_mutex_unlock(&db->group_lock);
            commit_certificate_group(db, group);
            pthread_mutex_lock(&db->group_lock);
            for (certificate_request *member = group; member != NULL;) {
                certificate_request *next = member->next;
                member->done = true; /* a waiter may return (and free it) from here on */
                member = next;
            }
            db->group_committing = false;
            pthread_cond_broadcast(&db->group_finished);
        }
        pthread_mutex_unlock(&db->group_lock);
    }
    if (request->status != STORE_OK && error != NULL)
        *error = request->error;
    if (request->status == STORE_OK && revision != NULL)
        *revision = atomic_load(&db->revision);
    return request->status;
}

store_status store_record_certificate(store *db, const model_certificate *certificate,
                                      int64_t *revision, store_error *error)
{
    certificate_request request = {.certificate = certificate};
    return record_certificate(db, &request, revision, error);
}

store_status store_record_certificate_with_join_token(store *db,
                                                      const uint8_t hash[MODEL_TOKEN_HASH_SIZE],
                                                      const char *namespace_name,
                                                      const char *service, int64_t now_ms,
                                                      const model_certificate *certificate,
                                                      int64_t *revision, store_error *error)
{
    certificate_request request = {.token_hash = hash,
                                   .namespace_name = namespace_name,
                                   .service = service,
                                   .now_ms = now_ms,
                                   .certificate = certificate};
    return record_certificate(db, &request, revision, error);
}

store_status store_list_certificates(store *db, const char *identity, model_certificate_list *out,
                                     store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status = read_rows(db, identity ? SQL_CERT_LIST_IDENTITY : SQL_CERT_LIST, identity,
                                    0, certificate_row_reader, out, error);
    if (status != STORE_OK)
        model_certificate_list_free(out);
    return status;
}

store_status store_revoke_certificate(store *db, const char *serial, int64_t now_ms,
                                      int64_t *revision, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_CERT_REVOKED_AT, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    bool found = false, revoked = false;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, serial, -1, SQLITE_STATIC);
        status = step_row(db->writer.handle, stmt, &found, "reading the certificate", error);
        if (status == STORE_OK) {
            revoked = found && sqlite3_column_type(stmt, 0) != SQLITE_NULL;
            finish(stmt);
        }
    }
    if (status == STORE_OK && !found)
        status =
            set_error(error, STORE_NOT_FOUND, "serial", "no certificate with serial %s", serial);
    if (status == STORE_OK && revoked)
        status =
            set_error(error, STORE_CONFLICT, "serial", "certificate %s is already revoked", serial);
    if (status == STORE_OK && (stmt = statement(&db->writer, SQL_CERT_REVOKE, error)) == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, serial, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 2, now_ms);
        status = step_write(db, stmt, NULL, "revoking the certificate", error);
    }
    if (status == STORE_OK)
        status = log_change(db, MODEL_KIND_CERTIFICATE, serial, MODEL_CHANGE_PUT, error);
    return write_end(db, status, revision, error);
}

store_status store_list_revoked_certificates(store *db, int64_t now_ms, model_certificate_list *out,
                                             store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status =
        read_rows(db, SQL_CERT_LIST_REVOKED, NULL, now_ms, certificate_row_reader, out, error);
    if (status != STORE_OK)
        model_certificate_list_free(out);
    return status;
}

/* ---- proxies ---- */

store_status store_proxy_connected(store *db, const char *node_id, const char *identity,
                                   const char *service, const char *namespace_name, int64_t now_ms,
                                   store_error *error)
{
    if (node_id == NULL || node_id[0] == '\0')
        return set_error(error, STORE_INVALID, "node_id", "a proxy needs a node id");
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_PROXY_CONNECTED, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, node_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, identity ? identity : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, service ? service : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 4, namespace_name ? namespace_name : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 5, now_ms);
        status = step_write(db, stmt, NULL, "recording the proxy", error);
    }
    return write_end(db, status, NULL, error);
}

/* Runs a proxy status update (statement id with node_id as ?1, now as ?2 for
 * SQL_PROXY_SEEN and SQL_PROXY_DISCONNECTED); STORE_NOT_FOUND for an unknown node. */
static store_status proxy_touch(store *db, statement_id id, const char *node_id, int64_t now_ms,
                                store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, id, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, node_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, now_ms);
    int changed = 0;
    store_status status = step_write(db, stmt, &changed, "updating the proxy", error);
    if (status == STORE_OK && changed == 0)
        status = set_error(error, STORE_NOT_FOUND, "node_id", "unknown proxy '%s'", node_id);
    return status;
}

store_status store_proxy_disconnected(store *db, const char *node_id, int64_t now_ms,
                                      store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    status = proxy_touch(db, SQL_PROXY_DISCONNECTED, node_id, now_ms, error);
    return write_end(db, status, NULL, error);
}

static store_status proxy_type_update(store *db, bool ack, const char *node_id,
                                      const char *type_url, const char *version,
                                      const char *message, int64_t now_ms, store_error *error)
{
    if (type_url == NULL || type_url[0] == '\0')
        return set_error(error, STORE_INVALID, "type_url", "a type URL is required");
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    status = proxy_touch(db, SQL_PROXY_SEEN, node_id, now_ms, error);
    sqlite3_stmt *stmt = NULL;
    if (status == STORE_OK &&
        (stmt = statement(&db->writer, ack ? SQL_PROXY_ACKED : SQL_PROXY_NACKED, error)) == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        sqlite3_bind_text(stmt, 1, node_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, type_url, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, version ? version : "", -1, SQLITE_STATIC);
        if (ack) {
            sqlite3_bind_int64(stmt, 4, now_ms);
        } else {
            sqlite3_bind_text(stmt, 4, message ? message : "", -1, SQLITE_STATIC);
            sqlite3_bind_int64(stmt, 5, now_ms);
        }
        status = step_write(db, stmt, NULL, "recording the proxy's answer", error);
    }
    return write_end(db, status, NULL, error);
}

store_status store_proxy_acked(store *db, const char *node_id, const char *type_url,
                               const char *version, int64_t now_ms, store_error *error)
{
    return proxy_type_update(db, true, node_id, type_url, version, NULL, now_ms, error);
}

store_status store_proxy_nacked(store *db, const char *node_id, const char *type_url,
                                const char *version, const char *message, int64_t now_ms,
                                store_error *error)
{
    return proxy_type_update(db, false, node_id, type_url, version, message, now_ms, error);
}

/* Binds text, or NULL when text is NULL. */
static void bind_optional_text(sqlite3_stmt *stmt, int index, const char *text)
{
    if (text != NULL)
        sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, index);
}

/* Checks what store_save_proxies needs before it opens a transaction. */
static store_status check_proxies(const model_proxy *proxies, size_t count, store_error *error)
{
    if (count > 0 && proxies == NULL)
        return set_error(error, STORE_INVALID, "proxies", "%zu proxies given but no array", count);
    for (size_t i = 0; i < count; i++) {
        const model_proxy *proxy = &proxies[i];
        char field[sizeof(error->field)];
        if (proxy->node_id == NULL || proxy->node_id[0] == '\0') {
            snprintf(field, sizeof(field), "proxies[%zu].node_id", i);
            return set_error(error, STORE_INVALID, field, "a proxy needs a node id");
        }
        if (proxy->type_count > 0 && proxy->types == NULL) {
            snprintf(field, sizeof(field), "proxies[%zu].types", i);
            return set_error(error, STORE_INVALID, field, "%zu types given but no array",
                             proxy->type_count);
        }
        for (size_t t = 0; t < proxy->type_count; t++) {
            const char *type_url = proxy->types[t].type_url;
            if (type_url == NULL || type_url[0] == '\0') {
                snprintf(field, sizeof(field), "proxies[%zu].types[%zu].type_url", i, t);
                return set_error(error, STORE_INVALID, field, "a type URL is required (proxy '%s')",
                                 proxy->node_id);
            }
        }
    }
    return STORE_OK;
}

/* Upserts one proxy and its types inside the open transaction. */
static store_status proxy_save(store *db, const model_proxy *proxy, store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, SQL_PROXY_SAVE, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_text(stmt, 1, proxy->node_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, proxy->identity ? proxy->identity : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, proxy->service ? proxy->service : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, proxy->namespace_name ? proxy->namespace_name : "", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(stmt, 5, proxy->protocol ? proxy->protocol : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 6, proxy->connected ? 1 : 0);
    sqlite3_bind_int64(stmt, 7, proxy->connected_since_ms);
    sqlite3_bind_int64(stmt, 8, proxy->last_seen_ms);
    store_status status = step_write(db, stmt, NULL, "saving the proxy", error);
    for (size_t t = 0; status == STORE_OK && t < proxy->type_count; t++) {
        const model_proxy_type_status *type = &proxy->types[t];
        if ((stmt = statement(&db->writer, SQL_PROXY_TYPE_SAVE, error)) == NULL)
            return error ? error->status : STORE_IO;
        sqlite3_bind_text(stmt, 1, proxy->node_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, type->type_url, -1, SQLITE_STATIC);
        bind_optional_text(stmt, 3, type->sent_version);
        sqlite3_bind_int64(stmt, 4, type->sent_at_ms);
        bind_optional_text(stmt, 5, type->acked_version);
        sqlite3_bind_int64(stmt, 6, type->acked_at_ms);
        bind_optional_text(stmt, 7, type->nacked_version);
        bind_optional_text(stmt, 8, type->nack_message);
        sqlite3_bind_int64(stmt, 9, type->nacked_at_ms);
        status = step_write(db, stmt, NULL, "saving the proxy's type status", error);
    }
    return status;
}

store_status store_save_proxies(store *db, const model_proxy *proxies, size_t count,
                                store_error *error)
{
    store_status status = check_proxies(proxies, count, error);
    if (status != STORE_OK || count == 0)
        return status;
    status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    /* No log_change: the transaction allocates no revision. */
    for (size_t i = 0; status == STORE_OK && i < count; i++)
        status = proxy_save(db, &proxies[i], error);
    return write_end(db, status, NULL, error);
}

store_status store_mark_all_proxies_disconnected(store *db, int64_t now_ms, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    sqlite3_stmt *stmt = statement(&db->writer, SQL_PROXY_DISCONNECT_ALL, error);
    status = stmt ? STORE_OK : (error ? error->status : STORE_IO);
    if (status == STORE_OK) {
        sqlite3_bind_int64(stmt, 1, now_ms);
        status = step_write(db, stmt, NULL, "marking proxies disconnected", error);
    }
    return write_end(db, status, NULL, error);
}

/* Runs one prune statement with value as ?1 inside the open transaction,
 * adding the rows it deleted to *removed. */
static store_status proxy_prune_step(store *db, statement_id id, int64_t value, size_t *removed,
                                     store_error *error)
{
    sqlite3_stmt *stmt = statement(&db->writer, id, error);
    if (stmt == NULL)
        return error ? error->status : STORE_IO;
    sqlite3_bind_int64(stmt, 1, value);
    int changed = 0;
    store_status status = step_write(db, stmt, &changed, "pruning proxies", error);
    if (status == STORE_OK && changed > 0)
        *removed += (size_t)changed;
    return status;
}

store_status store_prune_proxies(store *db, int64_t disconnected_before_ms, size_t keep_at_most,
                                 size_t *removed, store_error *error)
{
    size_t count = 0;
    if (removed != NULL)
        *removed = 0;
    if (keep_at_most > (size_t)INT64_MAX)
        keep_at_most = (size_t)INT64_MAX;
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    /* No log_change: proxy status allocates no revision. Type rows go with
     * their proxy (ON DELETE CASCADE). */
    status = proxy_prune_step(db, SQL_PROXY_PRUNE_AGE, disconnected_before_ms, &count, error);
    if (status == STORE_OK)
        status = proxy_prune_step(db, SQL_PROXY_PRUNE_COUNT, (int64_t)keep_at_most, &count, error);
    status = write_end(db, status, NULL, error);
    if (status == STORE_OK && removed != NULL)
        *removed = count;
    return status;
}

static store_status proxy_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_proxy_list *list = context;
    const char *node_id = (const char *)sqlite3_column_text(stmt, 0);
    model_proxy *proxy = list->count ? &list->items[list->count - 1] : NULL;
    if (proxy == NULL || node_id == NULL || strcmp(proxy->node_id, node_id) != 0) {
        proxy = list_append((void **)&list->items, &list->count, sizeof(*proxy));
        if (proxy == NULL)
            return STORE_IO;
        proxy->node_id = column_string(stmt, 0);
        proxy->identity = column_string(stmt, 1);
        proxy->service = column_string(stmt, 2);
        proxy->namespace_name = column_string(stmt, 3);
        proxy->protocol = column_string(stmt, 4);
        proxy->connected = sqlite3_column_int(stmt, 5) != 0;
        proxy->connected_since_ms = sqlite3_column_int64(stmt, 6);
        proxy->last_seen_ms = sqlite3_column_int64(stmt, 7);
        if (!proxy->node_id || !proxy->identity || !proxy->service || !proxy->namespace_name ||
            !proxy->protocol)
            return STORE_IO;
    }
    if (sqlite3_column_type(stmt, 8) == SQLITE_NULL)
        return STORE_OK; /* a proxy with no type status yet */
    model_proxy_type_status *type =
        list_append((void **)&proxy->types, &proxy->type_count, sizeof(*type));
    if (type == NULL)
        return STORE_IO;
    type->type_url = column_string(stmt, 8);
    type->sent_version = column_string(stmt, 9);
    type->sent_at_ms = sqlite3_column_int64(stmt, 10);
    type->acked_version = column_string(stmt, 11);
    type->acked_at_ms = sqlite3_column_int64(stmt, 12);
    type->nacked_version = column_string(stmt, 13);
    type->nack_message = column_string(stmt, 14);
    type->nacked_at_ms = sqlite3_column_int64(stmt, 15);
    return type->type_url ? STORE_OK : STORE_IO;
}

store_status store_list_proxies(store *db, int64_t seen_since_ms, model_proxy_list *out,
                                store_error *error)
{
    memset(out, 0, sizeof(*out));
    store_status status =
        read_rows(db, SQL_PROXY_LIST, NULL, seen_since_ms, proxy_row_reader, out, error);
    if (status != STORE_OK)
        model_proxy_list_free(out);
    return status;
}

/* ---- change log ---- */

static store_status change_row_reader(sqlite3_stmt *stmt, void *context)
{
    model_change_list *list = context;
    model_change *change = list_append((void **)&list->items, &list->count, sizeof(*change));
    if (change == NULL)
        return STORE_IO;
    change->revision = sqlite3_column_int64(stmt, 0);
    const char *kind = (const char *)sqlite3_column_text(stmt, 1);
    for (int k = MODEL_KIND_SERVICE; k <= MODEL_KIND_CERTIFICATE; k++) {
        if (kind != NULL && strcmp(kind, model_entity_kind_name((model_entity_kind)k)) == 0)
            change->kind = (model_entity_kind)k;
    }
    change->key = column_string(stmt, 2);
    const char *op = (const char *)sqlite3_column_text(stmt, 3);
    change->op = op && strcmp(op, "delete") == 0 ? MODEL_CHANGE_DELETE : MODEL_CHANGE_PUT;
    return change->key ? STORE_OK : STORE_IO;
}

store_status store_changes_since(store *db, int64_t since, size_t limit, model_change_list *out,
                                 store_error *error)
{
    memset(out, 0, sizeof(*out));
    connection *conn = reader_acquire(db, error);
    if (conn == NULL)
        return error ? error->status : STORE_IO;
    int64_t compacted = 0;
    store_status status = read_meta(conn, "compacted_through", &compacted, error);
    if (status == STORE_OK && since < compacted)
        status = set_error(error, STORE_NOT_FOUND, "since",
                           "changes through revision %lld were compacted; read the full state",
                           (long long)compacted);
    sqlite3_stmt *stmt = status == STORE_OK ? statement(conn, SQL_CHANGES_SINCE, error) : NULL;
    if (status == STORE_OK && stmt == NULL)
        status = error ? error->status : STORE_IO;
    if (status == STORE_OK) {
        /* Revisions are contiguous (each is allocated by a logging commit), so a
         * limit in revisions is a range. */
        sqlite3_bind_int64(stmt, 1, since);
        sqlite3_bind_int64(stmt, 2, limit ? since + (int64_t)limit : INT64_MAX);
        int code;
        while ((code = sqlite3_step(stmt)) == SQLITE_ROW) {
            if (change_row_reader(stmt, out) != STORE_OK) {
                status = set_error(error, STORE_IO, NULL, "out of memory");
                break;
            }
        }
        if (status == STORE_OK && code != SQLITE_DONE)
            status = sqlite_failure(error, conn->handle, code, "reading the change log");
        finish(stmt);
    }
    reader_release(db, conn);
    if (status != STORE_OK)
        model_change_list_free(out);
    return status;
}

store_status store_compact_changes(store *db, int64_t up_to, store_error *error)
{
    store_status status = write_begin(db, error);
    if (status != STORE_OK)
        return status;
    if (up_to > atomic_load(&db->revision))
        up_to = atomic_load(&db->revision);
    statement_id ids[] = {SQL_CHANGES_COMPACT, SQL_SET_COMPACTED};
    for (size_t i = 0; status == STORE_OK && i < 2; i++) {
        sqlite3_stmt *stmt = statement(&db->writer, ids[i], error);
        if (stmt == NULL) {
            status = error ? error->status : STORE_IO;
            break;
        }
        sqlite3_bind_int64(stmt, 1, up_to);
        status = step_write(db, stmt, NULL, "compacting the change log", error);
    }
    return write_end(db, status, NULL, error);
}
